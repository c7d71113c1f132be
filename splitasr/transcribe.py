"""Transcribe audio files with a whole model on this machine: the API under the CLI."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from splitasr.audio import DEFAULT_MAX_SECONDS, load_audio
from splitasr.decoding import Decoder
from splitasr.errors import SplitASRError
from splitasr.model.stages import SplitModel


@dataclass(frozen=True)
class Transcript:
    """Result for one file; ``error`` is set (and ``text`` empty) when the file failed."""

    file: str
    text: str
    audio_seconds: float
    compute_ms: float
    error: str | None = None

    def to_dict(self) -> dict:
        d = asdict(self)
        if d["error"] is None:
            del d["error"]
        return d


def transcribe_wave(model: SplitModel, wave: torch.Tensor, decoder: Decoder | None = None) -> str:
    """Text for one mono waveform ``(S,)`` at the model's sample rate."""
    decoder = decoder or model.make_decoder()
    with torch.inference_mode():
        logits, lens = model(wave.unsqueeze(0))
    return decoder.decode(logits[0], int(lens[0]))


def transcribe(
    model: SplitModel,
    files: list[str | Path],
    decoder: Decoder | None = None,
    max_seconds: float = DEFAULT_MAX_SECONDS,
) -> list[Transcript]:
    """Transcribe each file; a bad file gives a :class:`Transcript` with ``error`` set.

    ``compute_ms`` covers feature extraction, the network and decoding (not file I/O).
    """
    decoder = decoder or model.make_decoder()
    out = []
    for f in files:
        try:
            wave = torch.from_numpy(load_audio(f, max_seconds=max_seconds))
        except SplitASRError as exc:
            out.append(Transcript(str(f), "", 0.0, 0.0, error=str(exc)))
            continue
        t0 = time.perf_counter()
        text = transcribe_wave(model, wave, decoder)
        ms = (time.perf_counter() - t0) * 1000
        out.append(Transcript(str(f), text, round(len(wave) / model.sample_rate, 3), round(ms, 2)))
    return out
