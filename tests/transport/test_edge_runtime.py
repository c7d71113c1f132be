"""The edge client with a head-only runtime (what ``--runtime onnx`` gives it): split and
cloud modes work, and everything that needs the whole model here is refused in one line
(the local fallback included: a cloud failure is raised with the cloud's reason). And the
CLI's client path imports without torch (the edge install has none)."""

from __future__ import annotations

import socket
import subprocess
import sys
import textwrap

import pytest

from splitasr.cli import main
from splitasr.errors import SplitASRError
from splitasr.pipeline import Edge
from splitasr.transport.client import CloudClient, CloudError, EdgeClient


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def head_only(model) -> Edge:
    """A head-only runtime as EdgeClient sees one: no whole model is handed to the client."""
    return Edge(model)


def test_a_head_only_edge_gives_the_torch_clients_transcripts(model, head_only, client, waves):
    alone = EdgeClient(None, client, model_name="ds2", edge=head_only)
    full = EdgeClient(model, client, model_name="ds2")
    split = alone.transcribe(waves[0], "proj", "q8+ans")
    assert split.text and split.text == full.transcribe(waves[0], "proj", "q8+ans").text
    assert split.bytes_up > 0 and split.fallback is None and split.model == "ds2"
    cloud = alone.transcribe(waves[0], mode="cloud", codec="flac+pack")
    assert (cloud.point, cloud.codec) == ("audio", "flac+pack")
    assert cloud.text == full.transcribe(waves[0], mode="cloud", codec="flac+pack").text


def test_a_head_only_edge_refuses_what_needs_the_whole_model(head_only, client, waves):
    alone = EdgeClient(None, client, model_name="ds2", edge=head_only)
    with pytest.raises(SplitASRError, match="mode edge needs the whole model"):
        alone.transcribe(waves[0], mode="edge")
    with pytest.raises(SplitASRError, match="streaming needs the whole model"):
        alone.transcribe_stream(waves[0], "proj", "q8+ans")
    with pytest.raises(SplitASRError, match="running without a cloud needs the whole model"):
        EdgeClient(None, None, model_name="ds2", edge=head_only).transcribe(waves[0], "proj", "q8+ans")
    with pytest.raises(SplitASRError, match="needs a model"):
        EdgeClient(None, client)


def test_a_cloud_failure_is_raised_with_its_reason_when_nothing_here_can_finish(head_only, waves):
    with CloudClient(f"127.0.0.1:{_free_port()}", timeout_s=2) as dead:
        alone = EdgeClient(None, dead, model_name="ds2", edge=head_only)
        with pytest.raises(CloudError, match="no local fallback") as got:
            alone.transcribe(waves[0], "proj", "q8+ans")
    assert got.value.code.name == "UNAVAILABLE"


EDGE = ["edge", "transcribe", "x.wav", "--cloud", "127.0.0.1:1", "--runtime", "onnx"]
REFUSED = [
    (["--mode", "edge"], "--mode edge with --runtime onnx"),
    (["--policy", "auto"], "--policy auto with --runtime onnx"),
    (["--stream", "--split", "proj", "--codec", "q8+ans"], "--stream with --runtime onnx"),
]


@pytest.mark.parametrize("extra,message", REFUSED)
def test_the_cli_refuses_what_the_onnx_runtime_cannot_do_in_one_line(extra, message, capsys):
    assert main([*EDGE, *extra]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err and "--runtime torch" in err


def test_onnx_flags_need_the_onnx_runtime(capsys):
    assert main(["edge", "transcribe", "x.wav", "--cloud", "127.0.0.1:1", "--precision", "float"]) == 2
    assert "go with --runtime onnx" in capsys.readouterr().err


BLOCKED = textwrap.dedent(
    """
    import sys
    sys.modules["torch"] = None  # any import of torch now raises ImportError
    from splitasr.cli import _edge_client, _edge_runtime, build_parser
    args = build_parser().parse_args(
        ["edge", "transcribe", "x.wav", "--cloud", "127.0.0.1:1", "--runtime", "onnx",
         "--model", "ds2", "--split", "proj", "--codec", "deepcod+ans", "--onnx-dir", sys.argv[1]]
    )
    model, edge = _edge_runtime(args)
    cloud, client = _edge_client(args, model, edge)
    cloud.close()
    print(client.model_name, model, type(edge).__name__, "torch" in sys.modules and sys.modules["torch"])
    """
)


def test_the_cli_and_the_onnx_client_import_without_torch(tmp_path):
    """``import splitasr.cli``, the parser and the ``--runtime onnx`` client with torch
    unimportable: the edge install's path never reaches torch, the model or the pipeline
    (the ONNX files exported here first, with torch)."""
    from splitasr.onnx.export import export_onnx

    export_onnx("ds2", tmp_path, points=["proj"], codecs=["deepcod"], int8=False)
    cmd = [sys.executable, "-c", BLOCKED, str(tmp_path)]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.split() == ["ds2", "None", "OnnxEdge", "None"]
