"""Waveform augmentation: noise at a random SNR, gain, speed perturbation, reverberation.

All functions take a mono waveform ``(S,)`` at 16 kHz and a ``numpy.random.Generator`` so
a corpus is reproducible from its seed.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.signal import fftconvolve, lfilter, resample_poly

from splitasr.audio import SAMPLE_RATE


@dataclass(frozen=True)
class AugmentConfig:
    """Probabilities and ranges of each augmentation."""

    p_noise: float = 0.5
    snr_db: tuple[float, float] = (5.0, 30.0)
    p_gain: float = 0.8
    gain_db: tuple[float, float] = (-12.0, 6.0)
    p_speed: float = 0.3
    speeds: tuple[float, ...] = (0.9, 1.1)
    p_reverb: float = 0.3
    rt60_s: tuple[float, float] = (0.15, 0.6)


def coloured_noise(n: int, rng: np.random.Generator) -> np.ndarray:
    """White, pink-ish or brown-ish noise ``(n,)`` with unit RMS."""
    noise = rng.standard_normal(n).astype(np.float32)
    kind = rng.integers(3)
    if kind == 1:  # first-order low-pass: pink-ish
        noise = lfilter([1.0], [1.0, -0.9], noise).astype(np.float32)
    elif kind == 2:  # brown-ish
        noise = lfilter([1.0], [1.0, -0.99], noise).astype(np.float32)
    return noise / (np.sqrt(np.mean(noise**2)) + 1e-9)


def add_noise(wave: np.ndarray, snr_db: float, rng: np.random.Generator) -> np.ndarray:
    power = np.mean(wave**2) + 1e-10
    noise = coloured_noise(len(wave), rng) * np.sqrt(power / 10 ** (snr_db / 10))
    return wave + noise


def change_speed(wave: np.ndarray, speed: float) -> np.ndarray:
    """Play ``speed`` times faster (pitch moves with it, as in Kaldi's speed perturbation)."""
    up, down = 100, int(round(100 * speed))
    return resample_poly(wave, up, down).astype(np.float32)


def reverberate(wave: np.ndarray, rt60: float, rng: np.random.Generator) -> np.ndarray:
    """Convolve with a synthetic room response: exponentially decaying noise."""
    n = int(rt60 * SAMPLE_RATE)
    t = np.arange(n) / SAMPLE_RATE
    ir = rng.standard_normal(n) * np.exp(-6.9 * t / rt60)
    ir[0] = 1.0
    ir /= np.sqrt(np.sum(ir**2))
    out = fftconvolve(wave, ir)[: len(wave)]
    return (out * (np.max(np.abs(wave)) / (np.max(np.abs(out)) + 1e-9))).astype(np.float32)


def augment(wave: np.ndarray, rng: np.random.Generator, cfg: AugmentConfig = AugmentConfig()) -> np.ndarray:
    """Apply a random subset of augmentations; output is clipped to [-1, 1]."""
    if rng.random() < cfg.p_speed:
        wave = change_speed(wave, float(rng.choice(cfg.speeds)))
    if rng.random() < cfg.p_reverb:
        wave = reverberate(wave, float(rng.uniform(*cfg.rt60_s)), rng)
    if rng.random() < cfg.p_noise:
        wave = add_noise(wave, float(rng.uniform(*cfg.snr_db)), rng)
    if rng.random() < cfg.p_gain:
        wave = wave * 10 ** (rng.uniform(*cfg.gain_db) / 20)
    return np.clip(wave, -1.0, 1.0).astype(np.float32)


def perturb_manifest(
    manifest: str | Path,
    out: str | Path,
    copies: int = 2,
    speed: tuple[float, float] = (0.85, 1.2),
    seed: int = 0,
    limit: int = 0,
    cfg: AugmentConfig = AugmentConfig(p_speed=0.0),
) -> Path:
    """Write ``copies`` perturbed copies of each utterance of ``manifest`` under ``out``
    and return their manifest, ``out/<stem>_perturbed.jsonl``; the WAVs go to
    ``out/wav/<stem>/<index>-<audio stem>-p<copy>.wav`` (the manifest's stem and the
    utterance's index keep two files of one name, in two folders or two manifests, apart).

    Why: a codec trained without labels can use any audio, and what it lacks is voices
    (FSDD has three training speakers). Each copy is played at a speed drawn uniformly from
    ``speed`` (pitch and formants move with it, as a shorter or longer vocal tract would:
    Kaldi's speed perturbation, here continuous) and then gets :func:`augment`'s noise,
    reverberation and gain (``cfg``; no second speed change). The transcript is unchanged;
    the speaker becomes ``<speaker>-sp<factor>``. Reproducible from ``seed``.
    """
    import soundfile as sf

    from splitasr.audio import load_audio
    from splitasr.manifest import Utterance, read_manifest, write_manifest

    lo, hi = speed
    if not 0.5 <= lo <= hi <= 2.0:
        raise ValueError(f"speed range must lie within [0.5, 2.0], got {speed}")
    if copies < 1:
        raise ValueError(f"copies must be >= 1, got {copies}")
    if limit < 0:
        raise ValueError(f"limit must be >= 0 (0: all), got {limit}")
    manifest, out = Path(manifest), Path(out)
    utts = read_manifest(manifest, limit)
    if not utts:
        raise ValueError(f"{manifest}: no utterances to perturb")
    rng = np.random.default_rng(seed)
    lines = []
    for i, utt in enumerate(utts):
        wave = load_audio(utt.resolve(manifest.parent))
        for c in range(copies):
            factor = round(float(rng.uniform(lo, hi)), 2)  # change_speed's step is 0.01
            moved = augment(change_speed(wave, factor), rng, cfg)
            rel = Path("wav") / manifest.stem / f"{i:05d}-{Path(utt.audio).stem}-p{c}.wav"
            (out / rel).parent.mkdir(parents=True, exist_ok=True)
            sf.write(out / rel, moved, SAMPLE_RATE, subtype="PCM_16")
            speaker = f"{utt.speaker or 'unknown'}-sp{factor:.2f}"
            seconds = round(len(moved) / SAMPLE_RATE, 3)
            lines.append(Utterance(str(rel), utt.text, seconds, speaker, utt.source))
        if i and i % 500 == 0:
            print(f"perturbed {i}/{len(utts)}", file=sys.stderr, flush=True)
    path = out / f"{manifest.stem}_perturbed.jsonl"
    write_manifest(path, lines)
    return path
