"""Transcribe audio files with the whole model on this machine (edge-only): the API under
``splitasr transcribe``."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from splitasr.audio import DEFAULT_MAX_SECONDS, load_audio
from splitasr.decoding import Decoder
from splitasr.errors import SplitASRError
from splitasr.model.stages import SplitModel
from splitasr.pipeline import recognise


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
        text = recognise(model, wave, decoder)
        ms = (time.perf_counter() - t0) * 1000
        out.append(Transcript(str(f), text, round(len(wave) / model.sample_rate, 3), round(ms, 2)))
    return out
