"""The models' front ends in numpy, for the edge without torch (:mod:`splitasr.onnx.edge`).

The ONNX exporter cannot export ``torch.stft`` with complex output, and a DFT written as a
matrix product costs 400 x 402 multiply-adds per frame (about ten times an FFT), so the
front end runs here, on ``scipy.fft`` where scipy is installed (the full install), else on
``numpy.fft`` (the edge install leaves scipy's 143 MB out: numpy computes in float64, ~1 ms
for 3 s of audio against 0.15 ms, and rounds differently within the same bound), and the
exported graphs start at the features. Same steps as :mod:`splitasr.audio` (centred STFT, periodic
Hann window, Slaney mel filters saved by the export next to the graphs), in float32 as
torch computes them: the two differ by FFT rounding only (bound in tests/onnx). float32
also makes the FFT ~6x faster than float64 here (0.2 ms against 1.4 ms for 4 s of audio).
"""

from __future__ import annotations

import numpy as np

try:
    from scipy.fft import rfft as _scipy_rfft
except ImportError:  # the edge install: numpy's FFT
    _scipy_rfft = None

from splitasr.audio import (
    HOP_LENGTH,
    LOG_FLOOR,
    N_FFT,
    QM_LEVELS,
    QM_MAX_LOG,
    QM_MIN_LOG,
    WHISPER_DYNAMIC_RANGE,
    WHISPER_LOG_FLOOR,
)

# periodic Hann, as torch.hann_window
_WINDOW = (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(N_FFT) / N_FFT)).astype(np.float32)


def power_spectrum(wave: np.ndarray, pad_mode: str = "constant") -> np.ndarray:
    """Power spectrogram of a centred STFT (400-sample window, 160 hop): ``(S,)`` ->
    ``(S // 160 + 1, 201)`` float32. ``pad_mode``: ``constant`` (DS2) or ``reflect`` (Whisper)."""
    padded = np.pad(wave.astype(np.float32), N_FFT // 2, mode=pad_mode)
    frames = np.lib.stride_tricks.sliding_window_view(padded, N_FFT)[::HOP_LENGTH]
    windowed = frames * _WINDOW
    if _scipy_rfft is not None:
        spec = _scipy_rfft(windowed, axis=-1, workers=1)
    else:
        spec = np.fft.rfft(windowed, axis=-1).astype(np.complex64)
    return spec.real**2 + spec.imag**2


def log_mel(wave: np.ndarray, mel: np.ndarray) -> np.ndarray:
    """DS2's natural-log mel features: ``(S,)`` -> ``(S // 160 + 1, M)`` float32, for a
    mel filter bank ``mel (M, 201)``."""
    return np.log(power_spectrum(wave) @ mel.T + np.float32(LOG_FLOOR)).astype(np.float32)


def qm_codes(wave: np.ndarray, mel: np.ndarray) -> np.ndarray:
    """QM-features (paper 003) as the bnf encoder reads them: codes 0..255 over 255,
    ``(S // 160 + 1, 32)`` float32 (``mel (32, 201)``)."""
    scale = (QM_LEVELS - 1) / (QM_MAX_LOG - QM_MIN_LOG)
    codes = np.clip(np.round((log_mel(wave, mel) - np.float32(QM_MIN_LOG)) * np.float32(scale)), 0, 255)
    return (codes / np.float32(255.0)).astype(np.float32)


def whisper_log_mel(wave: np.ndarray, mel: np.ndarray) -> np.ndarray:
    """Whisper's log-mel (as :func:`splitasr.audio.whisper_log_mel`): ``(S,)`` ->
    ``(S // 160, M)`` float32, floored at the utterance's ``max - 8`` and scaled."""
    extra = max(HOP_LENGTH, N_FFT // 2 + 1 - wave.shape[0])
    power = power_spectrum(np.pad(wave, (0, extra)), pad_mode="reflect")[:-1]  # (S // 160 + 1, F)
    logs = np.log10(np.maximum(power @ mel.T, np.float32(WHISPER_LOG_FLOOR)))
    logs = np.maximum(logs, logs.max() - np.float32(WHISPER_DYNAMIC_RANGE))
    return ((logs + np.float32(4.0)) / np.float32(4.0))[: wave.shape[0] // HOP_LENGTH].astype(np.float32)
