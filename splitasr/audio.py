"""Audio front end: read, resample, and turn waveforms into features.

Everything a model sees starts here, so everything here is deterministic: the same file
gives the same features bit for bit on every run.

Three feature types are offered, sharing one STFT and one mel filter bank:

* log-mel features (80 bins, 25 ms window, 10 ms hop) for the DS2 recogniser;
* Whisper's own log-mel (same STFT and filters, reflect padding, log10, clamp, scaling);
* QM-features (paper 003): 32-bin log-mel quantised to unsigned 8-bit fixed point, a cheap
  and compact representation for the device to send.

Loading and resampling (:func:`load_audio`, :func:`resample`) need numpy, soundfile and
soxr only; the feature functions take and return torch tensors and import torch when
called, so an edge without torch (:mod:`splitasr.onnx.edge`) can import this module.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from splitasr.errors import AudioError

if TYPE_CHECKING:
    import torch

SAMPLE_RATE = 16000
N_FFT = 400  # 25 ms window at 16 kHz
HOP_LENGTH = 160  # 10 ms hop at 16 kHz
N_MELS = 80
FRAMES_PER_SECOND = SAMPLE_RATE // HOP_LENGTH  # 100
LOG_FLOOR = 1e-6  # added before log so silence gives a finite value

QM_N_MELS = 32
QM_MIN_LOG = math.log(LOG_FLOOR)  # log-mel value mapped to code 0: digital silence
QM_MAX_LOG = 6.0  # log-mel value mapped to code 255
QM_LEVELS = 256  # 8-bit fixed point

DEFAULT_MAX_SECONDS = 120.0
# Float files (WAV/AIFF FLOAT or DOUBLE) store samples unclipped. Full scale is [-1, 1];
# a peak somewhat above 1 is ordinary overshoot (a mix or resampler ringing), but one past
# this is not audio scaled as full scale = 1 (e.g. int16 values written as floats) and
# would reach the models far outside anything they were trained on, so it is refused.
# Integer PCM decodes to [-1, 1) and can never exceed it.
MAX_ABS_SAMPLE = 2.0
SUPPORTED_RATES = (8000, 11025, 16000, 22050, 24000, 32000, 44100, 48000)


@dataclass(frozen=True)
class FrontEndConfig:
    """How waveforms become features; saved with every model checkpoint."""

    sample_rate: int = SAMPLE_RATE
    n_fft: int = N_FFT
    hop_length: int = HOP_LENGTH
    n_mels: int = N_MELS


def load_audio(path: str | Path, max_seconds: float = DEFAULT_MAX_SECONDS) -> np.ndarray:
    """Read an audio file as mono float32 at 16 kHz.

    Stereo or multi-channel input is down-mixed by averaging channels. Any rate in
    ``SUPPORTED_RATES`` is resampled with soxr.

    Returns:
        waveform of shape ``(S,)``, float32: in [-1, 1] for integer PCM, within
        ``MAX_ABS_SAMPLE`` for float files (kept as they are, not clipped).

    Raises:
        AudioError: with a one-line message naming the file and the problem, including a
            float file with NaN or infinite samples or a peak above ``MAX_ABS_SAMPLE``.
    """
    import soundfile as sf

    path = Path(path)
    if not path.exists():
        raise AudioError(f"{path}: no such file")
    if path.is_dir():
        raise AudioError(f"{path}: is a directory, not an audio file")
    if path.stat().st_size == 0:
        raise AudioError(f"{path}: file is empty")
    try:
        info = sf.info(str(path))
    except Exception as exc:  # soundfile raises its own LibsndfileError and RuntimeError
        raise AudioError(f"{path}: not a readable audio file ({_first_line(exc)})") from None
    if info.frames == 0:
        raise AudioError(f"{path}: audio has zero length")
    if info.samplerate not in SUPPORTED_RATES:
        raise AudioError(
            f"{path}: unsupported sample rate {info.samplerate} Hz "
            f"(supported: {', '.join(str(r) for r in SUPPORTED_RATES)})"
        )
    if info.channels > 8:
        raise AudioError(f"{path}: unsupported channel count {info.channels} (at most 8)")
    seconds = info.frames / info.samplerate
    if seconds > max_seconds:
        raise AudioError(f"{path}: {seconds:.1f} s is longer than the limit of {max_seconds:g} s")
    try:
        data, rate = sf.read(str(path), dtype="float32", always_2d=True)
    except Exception as exc:
        raise AudioError(f"{path}: could not decode audio ({_first_line(exc)})") from None
    if data.shape[0] == 0:
        raise AudioError(f"{path}: audio has zero length")
    finite = np.isfinite(data)
    if not finite.all():
        bad = int(data.size - np.count_nonzero(finite))
        raise AudioError(f"{path}: {bad} of {data.size} samples are NaN or infinite")
    peak = float(np.abs(data).max())
    if peak > MAX_ABS_SAMPLE:
        raise AudioError(
            f"{path}: float samples reach {peak:.6g}, far outside [-1, 1] "
            f"(at most {MAX_ABS_SAMPLE:g} is accepted; is it scaled as full scale = 1?)"
        )
    mono = data.mean(axis=1, dtype=np.float32)
    return resample(mono, rate, SAMPLE_RATE)


def resample(wave: np.ndarray, rate: int, target_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Resample a mono waveform ``(S,)`` to ``target_rate`` with soxr (high quality)."""
    if rate == target_rate:
        return np.ascontiguousarray(wave, dtype=np.float32)
    import soxr

    return soxr.resample(wave.astype(np.float32), rate, target_rate, quality="HQ").astype(np.float32)


@functools.lru_cache(maxsize=8)
def mel_filters(n_mels: int = N_MELS, n_fft: int = N_FFT, sample_rate: int = SAMPLE_RATE) -> torch.Tensor:
    """Slaney-style mel filter bank from librosa, shape ``(n_mels, n_fft // 2 + 1)``."""
    import torch
    from librosa.filters import mel

    return torch.from_numpy(mel(sr=sample_rate, n_fft=n_fft, n_mels=n_mels)).float()


@functools.lru_cache(maxsize=2)
def _window(n_fft: int) -> torch.Tensor:
    import torch

    return torch.hann_window(n_fft)


def num_frames(num_samples: int | torch.Tensor, hop_length: int = HOP_LENGTH):
    """Number of feature frames a waveform of ``num_samples`` samples gives (centred STFT)."""
    return num_samples // hop_length + 1


def power_spectrum(
    wave: torch.Tensor, n_fft: int = N_FFT, hop_length: int = HOP_LENGTH, pad_mode: str = "constant"
) -> torch.Tensor:
    """Power spectrogram of a centred STFT with a periodic Hann window.

    Args:
        wave: ``(N, S)`` float waveform.
        pad_mode: how the ``n_fft // 2`` samples at each end are filled: ``"constant"``
            (zeros, so a padded batch item gives the same frames as alone) or
            ``"reflect"`` (what Whisper was trained with).

    Returns:
        ``(N, n_fft // 2 + 1, T)`` with ``T = S // hop_length + 1``.
    """
    import torch

    spec = torch.stft(
        wave.float(),
        n_fft=n_fft,
        hop_length=hop_length,
        window=_window(n_fft),
        center=True,
        pad_mode=pad_mode,
        return_complex=True,
    )
    return spec.real.square() + spec.imag.square()


def power_mel(
    wave: torch.Tensor, n_mels: int = N_MELS, n_fft: int = N_FFT, hop_length: int = HOP_LENGTH
) -> torch.Tensor:
    """Mel power spectrogram.

    Args:
        wave: ``(N, S)`` or ``(S,)`` float waveform at 16 kHz.

    Returns:
        ``(N, T, n_mels)`` (or ``(T, n_mels)``) with ``T = S // hop_length + 1``.
    """
    import torch

    squeeze = wave.dim() == 1
    if squeeze:
        wave = wave.unsqueeze(0)
    power = power_spectrum(wave, n_fft, hop_length)  # (N, F, T)
    mel = torch.matmul(mel_filters(n_mels, n_fft), power).transpose(1, 2)  # (N, T, M)
    return mel.squeeze(0) if squeeze else mel


def log_mel(wave: torch.Tensor, n_mels: int = N_MELS) -> torch.Tensor:
    """Natural-log mel features ``(N, T, n_mels)`` from a waveform ``(N, S)``."""
    import torch

    return torch.log(power_mel(wave, n_mels=n_mels) + LOG_FLOOR)


WHISPER_N_MELS = 80
WHISPER_LOG_FLOOR = 1e-10  # Whisper clamps mel power here before log10
WHISPER_DYNAMIC_RANGE = 8.0  # log10 units kept below the utterance's loudest bin


def whisper_log_mel(wave: torch.Tensor, n_mels: int = WHISPER_N_MELS) -> torch.Tensor:
    """Whisper's log-mel front end for one waveform.

    As Whisper (and faster-whisper, which this matches frame for frame) computes it: 160
    zeros appended, a reflect-padded centred STFT (25 ms Hann window, 10 ms hop), the last
    frame dropped, Slaney mel filters, ``log10`` of the power clamped at 1e-10, then every
    value raised to at least ``max - 8`` (the max over the whole input, so one scalar ties
    all frames of an utterance together) and scaled as ``(x + 4) / 4``.

    Only the ``S // 160`` frames that hold audio are returned; Whisper pads them with
    zeros (in this normalised domain) up to 3000 frames per 30-s window, which the caller
    does, so the padding is the same for every input.

    Args:
        wave: ``(S,)`` float waveform at 16 kHz.

    Returns:
        ``(S // 160, n_mels)`` float32.
    """
    import torch

    logs = whisper_log10_mel(wave, n_mels)
    logs = torch.maximum(logs, logs.max() - WHISPER_DYNAMIC_RANGE)
    feats = (logs + 4.0) / 4.0
    return feats[:, : wave.shape[-1] // HOP_LENGTH].T.contiguous()


def whisper_log10_mel(wave: torch.Tensor, n_mels: int = WHISPER_N_MELS) -> torch.Tensor:
    """The per-frame part of :func:`whisper_log_mel`: ``log10`` of the mel power (clamped
    at 1e-10), before the utterance-wide ``max - 8`` floor and the scaling.

    Frame ``t`` depends only on samples ``160 t - 200 .. 160 t + 199`` (reflected at the
    start; at the end, of the signal with 160 zeros appended), which is what lets the
    streaming head compute it chunk by chunk.

    Args:
        wave: ``(S,)`` float waveform at 16 kHz.

    Returns:
        ``(n_mels, S // 160 + 1)`` float32: one frame more than :func:`whisper_log_mel`
        returns (Whisper takes the utterance's maximum over it too).
    """
    import torch

    # 160 zeros as Whisper appends; more for a tiny input so the reflect pad has room.
    extra = max(HOP_LENGTH, N_FFT // 2 + 1 - wave.shape[-1])
    padded = torch.nn.functional.pad(wave.float().reshape(1, -1), (0, extra))
    power = power_spectrum(padded, N_FFT, HOP_LENGTH, pad_mode="reflect")[..., :-1]  # (1, F, S//160 + 1)
    mel = torch.matmul(mel_filters(n_mels, N_FFT), power)[0]  # (M, T)
    return torch.clamp(mel, min=WHISPER_LOG_FLOOR).log10()


def whisper_floor(peak: torch.Tensor) -> torch.Tensor:
    """The value :func:`whisper_log_mel` raises every feature to, from the utterance's
    largest ``log10`` mel power ``peak`` (a 0-d float32 tensor).

    ``(max(x, peak - 8) + 4) / 4 == max((x + 4) / 4, whisper_floor(peak))`` bit for bit:
    ``(x + 4) / 4`` is monotonic in float arithmetic too, so the floor can be applied after
    the scaling, by whoever holds the whole utterance (the cloud, when streaming).
    """

    return ((peak - WHISPER_DYNAMIC_RANGE) + 4.0) / 4.0


def qm_features(wave: torch.Tensor) -> torch.Tensor:
    """QM-features of paper 003: 32-bin log-mel in unsigned 8-bit fixed point.

    The log-mel range ``[QM_MIN_LOG, QM_MAX_LOG]`` is mapped linearly onto codes
    0..255 and clipped, so each frame costs 32 bytes (25.6 kbit/s at 100 frames/s).

    Args:
        wave: ``(N, S)`` or ``(S,)`` waveform at 16 kHz.

    Returns:
        uint8 tensor ``(N, T, 32)`` (or ``(T, 32)``).
    """
    import torch

    logs = log_mel(wave, n_mels=QM_N_MELS)
    scale = (QM_LEVELS - 1) / (QM_MAX_LOG - QM_MIN_LOG)
    codes = torch.round((logs - QM_MIN_LOG) * scale).clamp_(0, QM_LEVELS - 1)
    return codes.to(torch.uint8)


def qm_dequantize(codes: torch.Tensor) -> torch.Tensor:
    """Map QM codes ``(..., 32)`` uint8 back to approximate log-mel values (float32)."""

    step = (QM_MAX_LOG - QM_MIN_LOG) / (QM_LEVELS - 1)
    return codes.float() * step + QM_MIN_LOG


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
