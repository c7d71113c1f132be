"""The ONNX edge runs without torch: a child process that blocks ``import torch`` imports
the edge, the codecs and the audio loader, and encodes the shipped samples with the shipped
files; the payloads decode on the torch Cloud to the torch edge's texts."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import torch

from splitasr.pipeline import Cloud, Edge

ROOT = Path(__file__).resolve().parents[2]
CHILD = r"""
import json, sys
sys.modules["torch"] = None  # any import of torch now raises ImportError
import splitasr.audio, splitasr.codecs
from splitasr.onnx.edge import OnnxEdge
from splitasr.codecs import available_codecs
assert "deepcod+ans" in available_codecs() and "lrd+ans" in available_codecs()
edge = OnnxEdge("ds2", None, "float", 1)
out = []
for path in sys.argv[1:]:
    wave = splitasr.audio.load_audio(path)
    for point, codec in (("proj", "deepcod+ans"), ("proj", "q8+ans"), ("features", "f16+zstd")):
        enc = edge.encode(wave, point, codec)
        out.append([path, point, enc.codec, enc.samples, enc.payload.hex()])
assert "torch" not in [m.split(".")[0] for m in sys.modules if sys.modules[m] is not None]
print(json.dumps(out))
"""


def test_edge_encodes_without_torch(model):
    samples = sorted(str(p) for p in (ROOT / "splitasr" / "assets" / "samples").glob("*.flac"))[:2]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, *samples], capture_output=True, text=True, env=env, timeout=120
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    cloud, edge = Cloud(model), Edge(model)
    from splitasr.audio import load_audio

    rows = json.loads(proc.stdout)
    assert len(rows) == 6
    for path, point, codec, samples_n, payload in rows:
        wave = torch.from_numpy(load_audio(path))
        assert samples_n == wave.shape[0]
        want = cloud.transcribe(edge.encode(wave, point, codec).payload, point, codec).text
        assert cloud.transcribe(bytes.fromhex(payload), point, codec).text == want
