"""Connected-digit utterances from the Free Spoken Digit Dataset (FSDD, CC BY-SA 4.0).

FSDD holds single digits ``{digit}_{speaker}_{take}.wav`` at 8 kHz by four real speakers.
Concatenating 2-7 of them with short random pauses gives utterances such as
"four one one seven" at 16 kHz.
"""

from __future__ import annotations

import re
from collections import defaultdict
from pathlib import Path

import numpy as np

from splitasr.audio import SAMPLE_RATE, load_audio
from splitasr.text import number_to_words

_NAME = re.compile(r"^(\d)_([a-z]+)_(\d+)\.wav$")


def index_fsdd(root: str | Path) -> dict[str, dict[int, list[Path]]]:
    """``{speaker: {digit: [paths sorted by take]}}`` for an FSDD ``recordings`` folder."""
    table: dict[str, dict[int, list[tuple[int, Path]]]] = defaultdict(lambda: defaultdict(list))
    for path in Path(root).glob("*.wav"):
        m = _NAME.match(path.name)
        if m:
            table[m.group(2)][int(m.group(1))].append((int(m.group(3)), path))
    return {spk: {d: [p for _, p in sorted(v)] for d, v in digits.items()} for spk, digits in table.items()}


def trim_silence(wave: np.ndarray, threshold_db: float = -35.0) -> np.ndarray:
    """Drop leading and trailing samples quieter than ``threshold_db`` below the peak."""
    peak = np.max(np.abs(wave)) + 1e-9
    loud = np.nonzero(np.abs(wave) > peak * 10 ** (threshold_db / 20))[0]
    if len(loud) == 0:
        return wave
    start, stop = max(loud[0] - 400, 0), min(loud[-1] + 400, len(wave))
    return wave[start:stop]


def connected_digits(
    takes: dict[int, list[Path]], rng: np.random.Generator, n_digits: int
) -> tuple[np.ndarray, str]:
    """Concatenate ``n_digits`` random takes with 50-300 ms pauses.

    Returns:
        waveform ``(S,)`` at 16 kHz, and its transcript in words.
    """
    digits = [int(rng.integers(10)) for _ in range(n_digits)]
    pieces = [np.zeros(int(rng.uniform(0.1, 0.3) * SAMPLE_RATE), np.float32)]
    for d in digits:
        path = takes[d][int(rng.integers(len(takes[d])))]
        wave = trim_silence(load_audio(path))
        wave = wave / (np.max(np.abs(wave)) + 1e-9) * 0.5
        pieces += [wave, np.zeros(int(rng.uniform(0.05, 0.3) * SAMPLE_RATE), np.float32)]
    return np.concatenate(pieces), " ".join(number_to_words(d) for d in digits)
