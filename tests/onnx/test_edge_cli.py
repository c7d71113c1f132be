"""OnnxEdge's refusals, and the two commands: ``export-onnx`` and ``bench onnx``."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from splitasr.cli import main
from splitasr.onnx.edge import OnnxEdge, OnnxEdgeError, shipped_dir


def test_refusals(tmp_path):
    edge = OnnxEdge("ds2")
    wave = np.zeros(16000, np.float32)
    with pytest.raises(OnnxEdgeError, match="unknown split point"):
        edge.encode(wave, "nowhere", "q8+ans")
    with pytest.raises(OnnxEdgeError, match="no ONNX head for ds2 at 'gru1'"):
        edge.encode(wave, "gru1", "q8+ans")
    with pytest.raises(OnnxEdgeError, match="NaN"):
        edge.encode(np.full(1600, np.nan, np.float32), "proj", "q8+ans")
    with pytest.raises(OnnxEdgeError, match="precision"):
        OnnxEdge("ds2", precision="int4")
    with pytest.raises(OnnxEdgeError, match="holds files for 'ds2'"):
        OnnxEdge("whisper-tiny.en", shipped_dir("ds2"))
    with pytest.raises(OnnxEdgeError, match="no manifest.json"):
        OnnxEdge("ds2", tmp_path)
    copy = tmp_path / "ds2"
    shutil.copytree(shipped_dir("ds2"), copy)
    graph = copy / "ds2.proj.int8.onnx"
    graph.write_bytes(graph.read_bytes()[:-1] + b"\0")
    with pytest.raises(OnnxEdgeError, match="SHA-256 does not match"):
        OnnxEdge("ds2", copy).encode(wave, "proj", "q8+ans")
    assert edge.available_points == ["audio", "features", "proj"]
    assert len(edge.encode(wave, "features", "f16+zstd").payload) > 16


def test_export_cli_refuses_an_unknown_point(tmp_path, capsys):
    assert main(["export-onnx", "--model", "ds2", "--points", "nowhere", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "unknown split point 'nowhere'" in err[0]


def test_bench_onnx_smoke(tmp_path):
    """One point, one utterance: a row per runtime with a size and a time."""
    from tests.onnx.conftest import SAMPLES

    out = tmp_path / "bench"
    argv = ["bench", "onnx", "--models", "ds2", "--points", "conv", "--limit", "1", "--out", str(out)]
    assert main([*argv, "--manifest", str(SAMPLES / "samples.jsonl")]) == 0
    rows = json.loads((out / "results.json").read_text())["rows"]
    assert [r["runtime"] for r in rows] == ["torch-float", "ort-float", "ort-int8"]
    assert all(r["ms"] > 0 and r["size_mb"] > 0 for r in rows)
    assert (out / "onnx.png").stat().st_size > 0 and (out / "onnx" / "ds2" / "ds2.conv.onnx").is_file()
