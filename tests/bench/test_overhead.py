"""``measure_overhead``: a real DS2 request through the emulator; the breakdown parsed from
the HTTP/2 frames adds up to the bytes the emulator counted, and its parts are what gRPC
sends (one HEADERS and one DATA frame, nine HPACK-indexed header fields, a 5-byte prefix)."""

from __future__ import annotations

import pytest
import torch

from splitasr.audio import load_audio
from splitasr.bench.overhead import measure_overhead, summary_row
from splitasr.cli import main
from splitasr.pipeline import Cloud, Edge
from splitasr.transport.client import CloudClient
from splitasr.transport.server import ServerThread

pytest.importorskip("hpack")


def test_the_breakdown_adds_up_to_the_bytes_on_the_wire(model, speech_dir):
    wave = torch.from_numpy(load_audio(speech_dir / "digits.wav"))
    payload = Edge(model).encode(wave, "proj", "q8+ans").payload
    with ServerThread({"ds2": Cloud(model)}) as server, CloudClient("127.0.0.1:1") as maker:
        request = maker.request(payload, "ds2", "proj", "q8+ans", beam=1)
        r = measure_overhead(f"127.0.0.1:{server.port}", request, requests=6, warmup=2)
    assert r.payload_bytes == len(payload) and r.message_bytes == len(request.SerializeToString())
    assert r.overhead == pytest.approx(r.up_per_request - len(payload), abs=0.01)
    assert sum(r.parts.values()) == pytest.approx(r.overhead, abs=0.1)
    assert r.parts["protobuf fields"] == r.message_bytes - r.payload_bytes  # 45 B here
    assert r.parts["gRPC message prefix"] == 5
    assert r.frames["HEADERS"] == r.frames["DATA"] == 1
    header_fields = {k for k in r.parts if k.startswith("header ")}
    assert {"header :path", "header grpc-timeout", "header user-agent"} <= header_fields
    assert r.headers[":path"] == "/splitasr.v1.Cloud/Transcribe"
    row = summary_row(r)
    assert row["hpack"] >= len(header_fields)  # at least one byte per field
    # gRPC unary's floor: two frame headers, the HPACK block, the prefix, the message fields
    assert r.overhead >= 18 + row["hpack"] + 5 + row["protobuf"]
    assert r.down_per_request > r.reply_message_bytes


def test_bench_overhead_refuses_a_bad_configuration(capsys):
    assert main(["bench", "overhead", "--configs", "ds2/proj", "--out", "/tmp/x"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "expected MODEL/POINT/CODEC" in err
