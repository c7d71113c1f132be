import pytest
import torch

from splitasr.decoding import BeamSearchDecoder, GreedyDecoder
from splitasr.errors import ConfigError
from splitasr.text import CharTokenizer


def peaked(text_ids: list[int], vocab: int = 29) -> torch.Tensor:
    logits = torch.full((len(text_ids), vocab), -10.0)
    logits[torch.arange(len(text_ids)), torch.tensor(text_ids)] = 10.0
    return logits


def frames_for(text: str) -> list[int]:
    """One frame per character with a blank between repeats, as CTC needs."""
    tok = CharTokenizer()
    ids, prev = [], None
    for i in tok.encode(text):
        if i == prev:
            ids.append(tok.blank)
        ids += [i, i]
        prev = i
    return [0] + ids + [0]


def test_greedy_collapses_repeats_and_drops_blanks():
    assert GreedyDecoder().decode(peaked(frames_for("hello world"))) == "hello world"


def test_greedy_respects_length():
    logits = peaked(frames_for("ab cd"))
    assert GreedyDecoder().decode(logits, 5) == "ab"


def test_beam_search_matches_greedy_on_confident_scores():
    logits = peaked(frames_for("the cat"))
    assert BeamSearchDecoder(beam_width=8).decode(logits) == "the cat"


def test_beam_search_with_lm_prefers_real_words(tmp_path):
    from splitasr.lm import DEFAULT_LM

    tok = CharTokenizer()
    ids = frames_for("the cat")
    logits = peaked(ids)
    # make "c" almost a tie with "k": the LM should pick the real word "cat"
    c_frames = [i for i, t in enumerate(ids) if t == tok.vocab.index("c")]
    for f in c_frames:
        logits[f, tok.vocab.index("k")] = 10.2
    assert GreedyDecoder().decode(logits) == "the kat"
    assert BeamSearchDecoder(beam_width=16, arpa=DEFAULT_LM, alpha=0.8).decode(logits) == "the cat"


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (None, "no such language model file"),
        (b"", "not a readable ARPA or kenlm binary language model (End of file Byte: 0)"),
        (
            b"this is not a language model\n",
            "not a readable ARPA or kenlm binary language model (FormatLoadException. first non-empty "
            'line was "this is not a language model" not \\data\\. Byte: 29)',
        ),
        (bytes(range(128, 256)) * 40, "not a readable ARPA or kenlm binary language model (binary data"),
    ],
)
def test_a_missing_or_unreadable_lm_is_a_one_line_config_error(tmp_path, content, problem):
    path = tmp_path / "lm.arpa"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(ConfigError) as err:
        BeamSearchDecoder(beam_width=4, arpa=path)
    assert str(err.value).startswith(f"{path}: {problem}") and "\n" not in str(err.value)


def test_beam_widths_share_one_language_model(model):
    """Regression: each beam width loaded the word LM again (~1 s, ~16 MB): a server asked
    for beams 2..128 held 127 copies and stalled on each. The width is a decode argument."""
    import time

    first = model.make_decoder(beam=3)
    t0 = time.perf_counter()
    others = [model.make_decoder(beam=b) for b in (4, 5, 6, 7, 8, 9, 10, 11)]
    assert time.perf_counter() - t0 < 0.5  # no LM load among them
    assert all(d._decoder is first._decoder for d in others)
    assert [d.beam_width for d in others] == [4, 5, 6, 7, 8, 9, 10, 11]
