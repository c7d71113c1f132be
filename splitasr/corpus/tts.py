"""Text-to-speech speakers from espeak-ng and flite, rendered to 16 kHz waveforms.

A *speaker* is a fixed combination of engine, voice, variant, rate and pitch; the
combination changes timbre and prosody enough that the recogniser has to generalise.
"""

from __future__ import annotations

import io
import os
import random
import shutil
import subprocess
import tempfile
from dataclasses import dataclass

import numpy as np

from splitasr.audio import resample
from splitasr.errors import MissingDependencyError

ESPEAK_VOICES = (
    "en-us",
    "en-gb",
    "en-gb-scotland",
    "en-gb-x-gbclan",
    "en-gb-x-rp",
    "en-gb-x-gbcwmd",
    "en-029",
    "en-us-nyc",
)
ESPEAK_TRAIN_VARIANTS = (
    "m1",
    "m2",
    "m3",
    "m4",
    "m5",
    "m7",
    "f1",
    "f2",
    "f3",
    "f5",
    "klatt",
    "klatt2",
    "klatt4",
    "adam",
    "linda",
    "john",
    "max",
    "paul",
    "anika",
    "steph",
)
# Variants never heard in training: the held-out synthetic speakers use only these.
ESPEAK_HELDOUT_VARIANTS = ("f4", "m6", "klatt3", "belinda")
FLITE_TRAIN_VOICES = ("kal16", "awb", "slt")
FLITE_HELDOUT_VOICES = ("rms",)


@dataclass(frozen=True)
class Speaker:
    """A synthetic speaker: engine plus voice parameters."""

    engine: str  # "espeak-ng" or "flite"
    voice: str
    variant: str = ""
    rate: int = 175  # espeak words per minute; flite: 100 * duration stretch
    pitch: int = 50  # espeak 0..99; flite: mean F0 in Hz (0 keeps the voice's own)

    @property
    def id(self) -> str:
        if self.engine == "flite":
            return f"flite-{self.voice}-d{self.rate}-f{self.pitch}"
        return f"espeak-{self.voice}+{self.variant}-s{self.rate}-p{self.pitch}"


def make_speakers(seed: int, n_espeak_train: int = 40) -> tuple[list[Speaker], list[Speaker]]:
    """Deterministic (training, held-out) speaker lists.

    Training: ``n_espeak_train`` espeak-ng voice x variant x rate x pitch combinations and
    the flite voices, each at two speeds. Held-out: espeak-ng speakers built only from
    ``ESPEAK_HELDOUT_VARIANTS`` and the flite voice ``rms``.
    """
    rng = random.Random(seed)
    train: dict[str, Speaker] = {}
    while len(train) < n_espeak_train:
        s = Speaker(
            "espeak-ng",
            rng.choice(ESPEAK_VOICES),
            rng.choice(ESPEAK_TRAIN_VARIANTS),
            rate=rng.randrange(130, 206, 5),
            pitch=rng.randrange(25, 76, 5),
        )
        train[s.id] = s
    for voice in FLITE_TRAIN_VOICES:
        for stretch in (90, 110):
            s = Speaker("flite", voice, rate=stretch, pitch=0)
            train[s.id] = s
    heldout = [
        Speaker("espeak-ng", "en-us", "f4", rate=165, pitch=55),
        Speaker("espeak-ng", "en-gb", "m6", rate=180, pitch=40),
        Speaker("espeak-ng", "en-gb-x-rp", "klatt3", rate=155, pitch=50),
        Speaker("espeak-ng", "en-029", "belinda", rate=170, pitch=60),
        Speaker("flite", "rms", rate=100, pitch=0),
    ]
    return list(train.values()), heldout


def _need(program: str) -> str:
    path = shutil.which(program)
    if path is None:
        raise MissingDependencyError(f"{program} is not installed (Debian: apt-get install {program})")
    return path


def _read_wav_bytes(data: bytes) -> tuple[np.ndarray, int]:
    import soundfile as sf

    wave, rate = sf.read(io.BytesIO(data), dtype="float32", always_2d=True)
    return wave.mean(axis=1), rate


def render(text: str, speaker: Speaker) -> np.ndarray:
    """Speak ``text`` with ``speaker``; returns mono float32 ``(S,)`` at 16 kHz."""
    if speaker.engine == "espeak-ng":
        voice = f"{speaker.voice}+{speaker.variant}" if speaker.variant else speaker.voice
        cmd = [
            _need("espeak-ng"),
            "-v",
            voice,
            "-s",
            str(speaker.rate),
            "-p",
            str(speaker.pitch),
            "--stdout",
            text,
        ]
        out = subprocess.run(cmd, capture_output=True, check=True, timeout=60).stdout
        wave, rate = _read_wav_bytes(out)
    elif speaker.engine == "flite":
        fd, tmp = tempfile.mkstemp(suffix=".wav")
        os.close(fd)
        try:
            cmd = [
                _need("flite"),
                "-voice",
                speaker.voice,
                "--setf",
                f"duration_stretch={speaker.rate / 100:.2f}",
            ]
            if speaker.pitch:
                cmd += ["--setf", f"int_f0_target_mean={speaker.pitch}"]
            subprocess.run(cmd + ["-t", text, "-o", tmp], capture_output=True, check=True, timeout=60)
            with open(tmp, "rb") as f:
                wave, rate = _read_wav_bytes(f.read())
        finally:
            os.unlink(tmp)
    else:
        raise ValueError(f"unknown TTS engine {speaker.engine!r}")
    return resample(wave.astype(np.float32), rate)
