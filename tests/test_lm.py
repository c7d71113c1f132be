import json

from splitasr.lm import DEFAULT_LM, build_arpa


def test_built_lm_loads_in_kenlm_and_prefers_seen_word_order(tmp_path):
    import kenlm

    m = tmp_path / "m.jsonl"
    m.write_text(
        json.dumps(
            {"audio": "a.wav", "text": "the zebra danced", "duration": 1, "speaker": "s", "source": "t"}
        )
        + "\n"
    )
    n = build_arpa(tmp_path / "lm.arpa", [m], top_words=500)
    assert n == 497  # 494 distinct words of wordfreq's top 500 once normalised, zebra, danced, </s>
    lm = kenlm.Model(str(tmp_path / "lm.arpa"))
    assert lm.order == 2
    assert lm.score("the zebra danced") > lm.score("danced zebra the")


def test_shipped_lm_exists():
    assert DEFAULT_LM.is_file() and DEFAULT_LM.stat().st_size < 5 * 2**20
