"""The shipped DS2 model on a sentence it should know: fails if the weights, the front end,
the decoders or the LM stop working together, not only if something crashes."""

from __future__ import annotations

import pytest
import torch

from splitasr.corpus.tts import Speaker, make_speakers, render
from splitasr.wer import error_rates

# CMU ARCTIC a0003, a training prompt of the shipped model's corpus (rendered there by 8
# other training speakers), said by a training speaker of the corpus (seed 0).
SENTENCE = "for the twentieth time that evening the two men shook hands"
VOICE = Speaker("espeak-ng", "en-us-nyc", "klatt4", rate=175, pitch=60)
# Measured with espeak-ng 1.51 and torch 2.13 on the CPU, the same with 1 and 2 threads:
# greedy 4 of 11 words wrong (WER 0.364), beam 32 + the shipped LM 0 of 11.
GREEDY_TEXT = "for the twentioth time that eeveing the two menshok hands"
GREEDY_MAX_WER = 0.55  # 6 of 11 words; an untrained or broken model gets ~1.0
BEAM_MAX_WER = 0.2  # 2 of 11 words


def test_the_voice_is_a_training_speaker():
    assert VOICE in make_speakers(0)[0]


@pytest.fixture(scope="module")
def logits(model):
    wave = torch.from_numpy(render(SENTENCE, VOICE))[None]
    with torch.inference_mode():
        out, lens = model(wave)
    return out[0], int(lens[0])


def test_greedy_transcript_is_close_and_exact(model, logits):
    text = model.make_decoder(beam=0).decode(*logits)
    assert error_rates([SENTENCE], [text])["wer"] <= GREEDY_MAX_WER, text
    assert text == GREEDY_TEXT  # deterministic on the CPU


def test_beam_search_with_the_lm_gets_the_sentence(model, logits):
    text = model.make_decoder(beam=32).decode(*logits)
    assert error_rates([SENTENCE], [text])["wer"] <= BEAM_MAX_WER, text
    assert text == SENTENCE
