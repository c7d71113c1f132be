import torch

from splitasr.decoding import BeamSearchDecoder, GreedyDecoder
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
