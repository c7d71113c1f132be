"""The gRPC server and clients on loopback: a split request gives exactly the in-process
transcript for both models; bad requests get a clean status and the server keeps serving;
tokens; concurrent clients; the edge finishes alone when the cloud is gone or late; the
protocol's own bytes."""

from __future__ import annotations

import json
import logging
import threading
import time

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from splitasr.errors import SplitASRError
from splitasr.pipeline import Cloud, Edge, recognise
from splitasr.transport import splitasr_pb2 as pb
from splitasr.transport import splitasr_pb2_grpc as pb_grpc
from splitasr.transport.client import CloudClient, CloudError, EdgeClient
from splitasr.transport.server import ServerThread


def _ok(client, payload, model="ds2", point="proj", codec="q8+ans"):
    return client.transcribe(payload, model, point, codec).text


def test_ds2_split_request_gives_the_in_process_transcript(model, clouds, client, waves):
    edge = Edge(model)
    for wave in waves:
        sent = edge.encode(wave, "proj", "q8+ans")
        want = clouds["ds2"].transcribe(sent.payload, "proj", "q8+ans").text
        reply = client.transcribe(sent.payload, "ds2", "proj", "q8+ans", request_id=1)
        assert reply.text == want and want
        assert reply.request_id == 1
        t = reply.timings
        assert t.total_ms >= t.decode_ms + t.tail_ms + t.text_ms > 0
        assert reply.received_unix_ns > 0


def test_whisper_stem_deepcod_request_gives_the_in_process_transcript(whisper, clouds, client, waves):
    sent = Edge(whisper).encode(waves[0], "stem", "deepcod+ans")
    want = clouds["whisper-tiny.en"].transcribe(sent.payload, "stem", "deepcod+ans").text
    got = client.transcribe(sent.payload, "whisper-tiny.en", "stem", "deepcod+ans").text
    assert got == want and want


def test_edge_client_split_and_cloud_modes_report_each_stage(model, client, waves):
    edge = EdgeClient(model, client, model_name="ds2")
    split = edge.transcribe(waves[0], "proj", "q8+ans")
    assert split.fallback is None and split.text and split.bytes_up > 0
    for stage in ("head", "encode", "round_trip", "network", "queue", "decode", "tail", "text", "total"):
        assert split.timings[stage] >= 0, stage
    assert split.timings["network"] == pytest.approx(split.timings["round_trip"] - split.timings["server"])
    cloud = edge.transcribe(waves[0], mode="cloud")
    assert (cloud.point, cloud.codec, cloud.fallback) == ("audio", "pcm16+pack", None)
    assert cloud.text == recognise(model, waves[0], model.make_decoder())  # lossless: the whole model
    local = edge.transcribe(waves[0], mode="edge")
    assert local.text == cloud.text and local.bytes_up == 0 and local.fallback is None
    # the messages: the payload plus the protocol's own bytes (docs/transport.md)
    assert 0 < split.request_bytes - split.bytes_up <= 64 and split.reply_bytes > len(split.text)


def test_an_emulated_slower_edge_stretches_device_time_and_wall_clock(model, client, waves):
    fast = EdgeClient(model, client, model_name="ds2").transcribe(waves[0], "proj", "q8+ans")
    slow = EdgeClient(model, client, model_name="ds2", slowdown=3).transcribe(waves[0], "proj", "q8+ans")
    assert slow.text == fast.text
    device = slow.timings["head"] + slow.timings["encode"]
    # the device's (stretched) time is spent before the request leaves, so it is in the total
    assert slow.timings["total"] >= device + slow.timings["round_trip"] - 1.0
    local = EdgeClient(model, None, slowdown=3).transcribe(waves[0], mode="edge")
    assert local.timings["total"] >= local.timings["edge"] - 1.0
    with pytest.raises(SplitASRError, match="slowdown"):
        EdgeClient(model, client, slowdown=0.5)


@pytest.fixture(scope="module")
def good(model):
    return Edge(model).encode(_first_wave(model), "proj", "q8+ans").payload


def _first_wave(model):
    import torch

    from splitasr.corpus.tts import Speaker, render

    return torch.from_numpy(render("four one one seven", Speaker("espeak-ng", "en-us", "m3", rate=160)))


BAD = {
    "unknown model": (dict(model="ds3"), grpc.StatusCode.NOT_FOUND),
    "unknown codec": (dict(codec="nope+ans"), grpc.StatusCode.INVALID_ARGUMENT),
    "unknown point": (dict(point="gru9"), grpc.StatusCode.INVALID_ARGUMENT),
    "other point": (dict(point="conv"), grpc.StatusCode.INVALID_ARGUMENT),
    "other codec": (dict(codec="q8+zstd"), grpc.StatusCode.INVALID_ARGUMENT),
    "empty payload": (dict(payload=b""), grpc.StatusCode.INVALID_ARGUMENT),
    "garbage payload": (dict(payload=b"\x00garbage" * 50), grpc.StatusCode.INVALID_ARGUMENT),
    "truncated payload": ("truncate", grpc.StatusCode.INVALID_ARGUMENT),
    "flipped byte": ("flip", grpc.StatusCode.INVALID_ARGUMENT),
    "beam 0": (dict(beam=0), grpc.StatusCode.INVALID_ARGUMENT),
}


@pytest.mark.parametrize("case", list(BAD))
def test_a_bad_request_gets_a_clean_status_and_the_server_keeps_serving(case, client, good):
    change, code = BAD[case]
    if change == "truncate":
        change = dict(payload=good[: len(good) // 2])
    elif change == "flip":
        change = dict(payload=good[:20] + bytes([good[20] ^ 0xFF]) + good[21:])
    args = dict(payload=good, model="ds2", point="proj", codec="q8+ans") | change
    with pytest.raises(CloudError) as err:
        client.transcribe(**args)
    assert err.value.code == code
    assert "\n" not in err.value.details and err.value.details
    assert _ok(client, good)


def test_oversized_messages_are_refused(clouds, good):
    with ServerThread(clouds, max_message_bytes=64 * 1024) as s, CloudClient(f"127.0.0.1:{s.port}") as c:
        with pytest.raises(CloudError) as err:
            c.transcribe(b"\x00" * (100 * 1024), "ds2", "proj", "q8+ans")
        assert err.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert _ok(c, good)


class _Broken(Cloud):
    def transcribe(self, payload, point, codec, decoder=None):
        if payload == b"boom":
            raise RuntimeError("a bug")
        return super().transcribe(payload, point, codec, decoder)


def test_an_unexpected_exception_is_internal_and_the_server_keeps_serving(model, good, caplog):
    with ServerThread({"ds2": _Broken(model)}) as s, CloudClient(f"127.0.0.1:{s.port}") as c:
        with caplog.at_level(logging.ERROR, "splitasr.server"), pytest.raises(CloudError) as err:
            c.transcribe(b"boom", "ds2", "proj", "q8+ans")
        assert err.value.code == grpc.StatusCode.INTERNAL
        assert "a bug" not in err.value.details  # no internals to the client
        assert _ok(c, good)


def test_a_token_is_required_when_set(clouds, good):
    with ServerThread(clouds, token="s3cret") as s:
        addr = f"127.0.0.1:{s.port}"
        for token in (None, "wrong", "s3cret0", ""):
            with CloudClient(addr, token=token) as c, pytest.raises(CloudError) as err:
                c.transcribe(good, "ds2", "proj", "q8+ans")
            assert err.value.code == grpc.StatusCode.UNAUTHENTICATED
        with CloudClient(addr, token="s3cret") as c:
            assert _ok(c, good)


SPLITS = (("proj", "q8+ans"), ("conv", "q8+ans"), ("gru1", "q8+ans"), ("audio", "flac+pack"))


def test_eight_concurrent_clients_get_every_reply_and_only_their_own(model, whisper, clouds, server, waves):
    edge, jobs = Edge(model), []
    for wave in waves:
        for point, codec in SPLITS:
            sent = edge.encode(wave, point, codec)
            jobs.append(("ds2", point, codec, sent.payload))
    sent = Edge(whisper).encode(waves[1], "stem", "deepcod+ans")
    jobs.append(("whisper-tiny.en", "stem", "deepcod+ans", sent.payload))
    want = [clouds[m].transcribe(p, point, codec).text for m, point, codec, p in jobs]
    got, errors = {}, []

    def run(i):
        try:
            with CloudClient(f"127.0.0.1:{server.port}", timeout_s=60) as c:
                for k in range(5):
                    j = (i * 5 + k) % len(jobs)
                    m, point, codec, payload = jobs[j]
                    reply = c.transcribe(payload, m, point, codec, request_id=i * 5 + k)
                    got[reply.request_id] = (j, reply.text)
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors
    assert sorted(got) == list(range(40))
    assert all(text == want[j] for j, text in got.values())


def test_the_edge_finishes_alone_when_the_cloud_is_gone(model, clouds, waves):
    s = ServerThread(clouds).start()
    port = s.port
    s.stop()
    decoder = model.make_decoder()
    with CloudClient(f"127.0.0.1:{port}", timeout_s=2) as c:
        t0 = time.perf_counter()
        r = EdgeClient(model, c, decoder=decoder).transcribe(waves[0], "proj", "q8+ans")
        elapsed = time.perf_counter() - t0
    assert r.fallback and "UNAVAILABLE" in r.fallback
    assert r.text == recognise(model, waves[0], decoder)
    assert r.timings["round_trip"] < 2000 and elapsed < 2 + r.timings["edge"] / 1000 + 1


class _Slow(Cloud):
    def transcribe(self, *args, **kwargs):
        time.sleep(1.5)
        return super().transcribe(*args, **kwargs)


def test_the_edge_finishes_alone_when_the_cloud_misses_the_deadline(model, waves, caplog):
    with caplog.at_level(logging.INFO, "splitasr.server"):
        with ServerThread({"ds2": _Slow(model)}) as s, CloudClient(f"127.0.0.1:{s.port}", timeout_s=0.3) as c:
            r = EdgeClient(model, c).transcribe(waves[0], "proj", "q8+ans")
    logged = [json.loads(x.getMessage()) for x in caplog.records if x.name == "splitasr.server"]
    assert [x["status"] for x in logged] == ["CANCELLED"]  # the server saw the client give up
    assert r.fallback and "DEADLINE_EXCEEDED" in r.fallback
    assert r.timings["round_trip"] < 1000
    assert r.text == recognise(model, waves[0], model.make_decoder())


def test_a_refused_request_is_an_error_not_a_silent_fallback(model, client, waves):
    with pytest.raises(CloudError, match="NOT_FOUND"):
        EdgeClient(model, client, model_name="ds3").transcribe(waves[0], "proj", "q8+ans")


REQUESTS = [
    ("whisper-tiny.en", "stem", "deepcod+ans", 5),
    ("ds2", "proj", "q8+ans", 32),
    ("ds2", "audio", "flac+pack", None),
]


@pytest.mark.parametrize("model_name,point,codec,beam", REQUESTS)
def test_protocol_overhead_of_a_split_request_is_at_most_64_bytes(
    client, good, model_name, point, codec, beam
):
    """Tags, lengths, two fixed64 (id, clock), the names and the beam: 25 bytes + the
    payload length's varint + the names (+2 with a beam)."""
    for payload in (good, good * 20):  # 2- and 3-byte length varints
        req = client.request(payload, model_name, point, codec, beam=beam)
        overhead = len(req.SerializeToString()) - len(payload)
        assert overhead <= 64, overhead
        varint = (len(payload).bit_length() + 6) // 7
        assert overhead == 25 + varint + len(model_name) + len(point) + len(codec) + (2 if beam else 0)


def test_health_streaming_and_the_request_log(server, client, good, caplog):
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as ch:
        check = health_pb2_grpc.HealthStub(ch).Check
        for name in ("", "splitasr.v1.Cloud"):
            status = check(health_pb2.HealthCheckRequest(service=name), timeout=5).status
            assert status == health_pb2.HealthCheckResponse.SERVING
        with pytest.raises(grpc.RpcError) as err:
            pb_grpc.CloudStub(ch).TranscribeStream(iter([pb.AudioChunk(last=True)]), timeout=5)
        assert err.value.code() == grpc.StatusCode.NOT_FOUND  # served; a chunk naming no model
    with caplog.at_level(logging.INFO, "splitasr.server"):
        client.transcribe(good, "ds2", "proj", "q8+ans", request_id=0xABC)
    lines = [json.loads(r.getMessage()) for r in caplog.records if r.name == "splitasr.server"]
    line = next(x for x in lines if x["request_id"] == "0000000000000abc")
    assert line["status"] == "OK" and line["payload_bytes"] == len(good) and line["total_ms"] > 0
