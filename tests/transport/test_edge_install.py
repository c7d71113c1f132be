"""The torch-free edge install transcribes in split mode (issue 14): ``splitasr edge
transcribe --runtime onnx`` run by ``.venv-edge`` (``pip install '.[edge]'``, built by
``make edge-venv``, which ``make test`` runs first) against a loopback server of this
process, on the shipped samples; its transcripts equal the PyTorch edge's. The ONNX files
are the shipped ones (``splitasr/assets/onnx/<model>/``) where the package has them, else
exported here for the point and codec under test (``splitasr.onnx.export``, this venv).

Without ``.venv-edge`` these tests fail and say ``make edge-venv``; a local run may skip
them instead with ``SPLITASR_SKIP_EDGE_VENV=1`` (CI never sets it).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
from pathlib import Path

import pytest
import torch

from splitasr.audio import load_audio
from splitasr.transport.client import EdgeClient

from .conftest import HAS_WHISPER

ROOT = Path(__file__).resolve().parents[2]
EDGE_VENV = ROOT / ".venv-edge"
SAMPLES = ROOT / "splitasr" / "assets" / "samples"
SAMPLE = SAMPLES / "digits-lucas.flac"


@pytest.fixture(scope="module")
def edge_bin() -> Path:
    exe = EDGE_VENV / "bin" / "splitasr"
    if not exe.is_file():
        if os.environ.get("SPLITASR_SKIP_EDGE_VENV") == "1":
            pytest.skip("no .venv-edge (SPLITASR_SKIP_EDGE_VENV=1)")
        pytest.fail(f"{EDGE_VENV} is missing: run `make edge-venv` (the torch-free edge install)")
    return exe


@pytest.fixture(scope="module")
def onnx_args(tmp_path_factory):
    """``--onnx-dir`` arguments for a model and point: none when the package ships its
    files, else a folder exported once here."""
    from splitasr.onnx.edge import MANIFEST, shipped_dir
    from splitasr.onnx.export import export_onnx

    made: dict[tuple[str, str], list[str]] = {}

    def get(name: str, point: str) -> list[str]:
        shipped = shipped_dir(name) / MANIFEST
        if shipped.is_file() and point in json.loads(shipped.read_text())["heads"]:
            return []
        if (name, point) not in made:
            out = tmp_path_factory.mktemp(f"onnx-{name}-{point}")
            export_onnx(name, out, points=[point], codecs=["deepcod"])
            made[name, point] = ["--onnx-dir", str(out)]
        return made[name, point]

    return get


def _run(edge_bin: Path, *args: str) -> subprocess.CompletedProcess:
    """The edge venv's ``splitasr`` with its own environment (no PYTHONPATH into this one)."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    return subprocess.run([str(edge_bin), *args], capture_output=True, text=True, timeout=300, env=env)


def _edge(edge_bin: Path, port: int, *args: str) -> dict:
    r = _run(edge_bin, "edge", "transcribe", str(SAMPLE), "--cloud", f"127.0.0.1:{port}", "--json", *args)
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads(r.stdout)


def test_the_edge_venv_has_no_torch(edge_bin):
    r = subprocess.run(
        [str(edge_bin.parent / "python"), "-c", "import onnxruntime, numpy; import torch"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 1 and "No module named 'torch'" in r.stderr, r.stderr[-2000:]


CASES = [("ds2", "proj", "deepcod+ans", "float"), ("ds2", "proj", "deepcod+ans", "int8")]
if HAS_WHISPER:
    CASES += [("whisper-tiny.en", "stem", "deepcod+ans", "float")]


@pytest.mark.parametrize("name,point,codec,precision", CASES)
def test_the_onnx_edge_in_split_mode_gives_the_torch_edges_transcript(
    edge_bin, onnx_args, server, client, model, request, name, point, codec, precision
):
    local = model if name == "ds2" else request.getfixturevalue("whisper")
    wave = torch.from_numpy(load_audio(SAMPLE))
    want = EdgeClient(local, client, model_name=name).transcribe(wave, point, codec)
    got = _edge(
        edge_bin,
        server.port,
        *("--runtime", "onnx", "--precision", precision, "--model", name, "--split", point, "--codec", codec),
        *onnx_args(name, point),
    )
    assert (got["mode"], got["point"], got["codec"], got["fallback"]) == ("split", point, codec, None)
    assert got["text"] == want.text and want.text
    assert got["bytes_up"] > 0 and got["timings"]["head"] > 0


def test_the_edge_install_sends_audio_in_cloud_mode(edge_bin, onnx_args, server, client, model):
    wave = torch.from_numpy(load_audio(SAMPLE))
    want = EdgeClient(model, client, model_name="ds2").transcribe(wave, mode="cloud", codec="flac+pack")
    got = _edge(
        edge_bin,
        server.port,
        *("--runtime", "onnx", "--model", "ds2", "--mode", "cloud", "--codec", "flac+pack"),
        *onnx_args("ds2", "proj"),
    )
    assert (got["point"], got["codec"], got["text"]) == ("audio", "flac+pack", want.text)


def test_the_edge_install_says_what_it_cannot_do_in_one_line(edge_bin, onnx_args, server):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = s.getsockname()[1]
    base = [
        "edge",
        "transcribe",
        str(SAMPLE),
        "--runtime",
        "onnx",
        "--model",
        "ds2",
        *onnx_args("ds2", "proj"),
    ]
    for args, message in [
        (
            ["--cloud", f"127.0.0.1:{dead}", "--split", "proj", "--codec", "deepcod+ans", "--timeout", "2"],
            "no local fallback",
        ),
        (["--cloud", f"127.0.0.1:{server.port}", "--mode", "cloud", "--codec", "opus12+pack"], "PyAV"),
        (["--cloud", f"127.0.0.1:{server.port}", "--mode", "edge"], "--runtime torch"),
    ]:
        r = _run(edge_bin, *base, *args)
        err = r.stderr.strip().splitlines()
        assert r.returncode == 2 and len(err) == 1 and message in err[0], r.stderr[-2000:]


def test_a_full_install_command_on_the_edge_install_says_what_it_needs(edge_bin):
    r = _run(edge_bin, "info", "--model", "ds2")
    err = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(err) == 1 and "needs torch" in err[0] and "splitasr[cloud]" in err[0]
