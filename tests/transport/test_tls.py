"""TLS on loopback with a self-signed certificate made by the test: the transcript over TLS
(with a bearer token), and every mismatch fails fast with ``UNAVAILABLE``: plaintext client
and TLS server, TLS client and plaintext server, a certificate the client does not trust.
Bad certificate files are one line and exit 2 in the CLI."""

from __future__ import annotations

import time

import grpc
import pytest

from splitasr.cli import main
from splitasr.errors import ConfigError
from splitasr.pipeline import Edge
from splitasr.transport.client import CloudClient, CloudError, EdgeClient
from splitasr.transport.server import ServerThread
from splitasr.transport.tls import channel_credentials, server_credentials
from tests.transport.conftest import make_self_signed

DEADLINE_S = 10.0


@pytest.fixture(scope="module")
def tls_server(clouds, tls_files):
    cert, key = tls_files
    with ServerThread(clouds, token="s3cret", credentials=server_credentials(cert, key)) as s:
        yield s


@pytest.fixture(scope="module")
def payload(model, waves):
    return Edge(model).encode(waves[0], "proj", "q8+ans").payload


def test_a_tls_call_with_a_token_gives_the_in_process_transcript(clouds, tls_server, tls_files, payload):
    want = clouds["ds2"].transcribe(payload, "proj", "q8+ans").text
    for host in ("127.0.0.1", "localhost"):  # both names are in the certificate
        with CloudClient(f"{host}:{tls_server.port}", token="s3cret", tls_ca=tls_files[0]) as c:
            assert c.transcribe(payload, "ds2", "proj", "q8+ans").text == want and want
    with CloudClient(f"127.0.0.1:{tls_server.port}", token="wrong", tls_ca=tls_files[0]) as c:
        with pytest.raises(CloudError) as err:
            c.transcribe(payload, "ds2", "proj", "q8+ans")
    assert err.value.code == grpc.StatusCode.UNAUTHENTICATED


def _unavailable_fast(client: CloudClient, payload: bytes) -> str:
    t0 = time.perf_counter()
    with pytest.raises(CloudError) as err:
        client.transcribe(payload, "ds2", "proj", "q8+ans", timeout_s=DEADLINE_S)
    assert err.value.code == grpc.StatusCode.UNAVAILABLE, err.value
    assert time.perf_counter() - t0 < DEADLINE_S / 4  # refused, not left to hang to the deadline
    return err.value.details


def test_a_plaintext_client_against_a_tls_server_is_unavailable_not_a_hang(tls_server, tls_files, payload):
    with CloudClient(f"127.0.0.1:{tls_server.port}", token="s3cret") as c:
        _unavailable_fast(c, payload)
    with CloudClient(f"127.0.0.1:{tls_server.port}", token="s3cret", tls_ca=tls_files[0]) as c:
        assert c.transcribe(payload, "ds2", "proj", "q8+ans").text  # the server still serves


def test_a_tls_client_against_a_plaintext_server_is_unavailable_not_a_hang(server, tls_files, payload):
    with CloudClient(f"127.0.0.1:{server.port}", tls_ca=tls_files[0]) as c:
        _unavailable_fast(c, payload)


def test_a_certificate_the_client_does_not_trust_is_refused(tls_server, tmp_path, payload):
    other_ca, _ = make_self_signed(tmp_path, "other")
    with CloudClient(f"127.0.0.1:{tls_server.port}", token="s3cret", tls_ca=other_ca) as c:
        _unavailable_fast(c, payload)
    with CloudClient(f"127.0.0.1:{tls_server.port}", token="s3cret", tls=True) as c:  # system roots
        _unavailable_fast(c, payload)


def test_bad_credential_files_are_one_config_error_each(tls_files, tmp_path):
    cert, key = tls_files
    other_cert, _ = make_self_signed(tmp_path, "other")
    junk = tmp_path / "junk.pem"
    junk.write_bytes(b"-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n")
    cases = [
        ((cert, tmp_path / "missing.pem"), "cannot read"),
        ((tmp_path, key), "cannot read"),  # a folder
        ((cert, cert), "not a usable"),  # no key in it
        ((other_cert, key), "not a usable"),  # a key of another certificate
        ((junk, key), "not a usable"),
    ]
    for (c, k), words in cases:
        with pytest.raises(ConfigError, match=words) as err:
            server_credentials(c, k)
        assert "\n" not in str(err.value)
    for ca, words in ((key, "not a usable CA"), (junk, "not a usable CA"), (tmp_path / "x", "cannot read")):
        with pytest.raises(ConfigError, match=words):
            channel_credentials(ca)


def test_edge_client_over_tls_in_split_mode(model, tls_server, tls_files, waves):
    with CloudClient(f"127.0.0.1:{tls_server.port}", token="s3cret", tls_ca=tls_files[0]) as c:
        r = EdgeClient(model, c, model_name="ds2").transcribe(waves[1], "proj", "q8+ans")
    assert r.fallback is None and r.text and r.timings["round_trip"] > 0


def test_edge_transcribe_cli_over_tls(tls_server, tls_files, speech_dir, capsys):
    wav = str(speech_dir / "digits.wav")
    args = ["edge", "transcribe", wav, "--cloud", f"localhost:{tls_server.port}", "--model", "ds2"]
    args += ["--split", "proj", "--codec", "q8+ans", "--token", "s3cret", "--json"]
    assert main([*args, "--tls-ca", str(tls_files[0])]) == 0
    out = capsys.readouterr()
    assert '"fallback": null' in out.out and out.err == ""
    assert main([*args, "--tls-ca", str(tls_files[1])]) == 2  # a key is no CA
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "not a usable CA" in err


@pytest.mark.parametrize(
    "extra,words",
    [
        (["--tls-cert", "C"], "go together"),
        (["--tls-key", "K"], "go together"),
        (["--tls-cert", "C", "--tls-key", "/nonexistent/key.pem"], "cannot read"),
        (["--tls-cert", "K", "--tls-key", "K"], "not a usable certificate"),
    ],
)
def test_serve_with_bad_tls_options_is_one_line_and_exit_2(tls_files, capsys, extra, words):
    cert, key = tls_files
    extra = [str(cert) if x == "C" else str(key) if x == "K" else x for x in extra]
    assert main(["serve", "--models", "ds2", "--port", "0", *extra]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and words in err, err
