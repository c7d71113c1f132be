"""``TranscribeStream`` on loopback: a streamed utterance gets the unary call's transcript;
bad streams (a gap in seq, a contradicting first-chunk field, no last chunk, too many
frames, a point that does not stream) get INVALID_ARGUMENT; over ``max_streams`` ->
RESOURCE_EXHAUSTED; a client that goes away mid-stream is logged as cancelled; after each,
the server keeps serving and its counters return to 0. The edge client's streaming call,
its after-speech latency and its fallback; the CLI's ``--stream``."""

from __future__ import annotations

import json
import logging
import queue
import socket
import time

import grpc
import pytest
import torch

from splitasr.cli import main
from splitasr.pipeline import Cloud, Edge, recognise
from splitasr.transport import splitasr_pb2 as pb
from splitasr.transport.client import CloudClient, CloudError, EdgeClient
from splitasr.transport.server import ServerThread


def _chunks(model, wave, point="proj", codec="q8+ans", name="ds2", size=3200) -> list[pb.AudioChunk]:
    """The chunks of one streamed utterance, made up front."""
    stream = Edge(model).stream(point, codec)
    payloads = [p for i in range(0, wave.shape[0], size) for p in stream.push(wave[i : i + size])]
    payloads += stream.finish()
    out = []
    for seq, payload in enumerate(payloads):
        chunk = pb.AudioChunk(seq=seq, payload=payload, last=seq == len(payloads) - 1)
        if seq == 0:
            chunk.model, chunk.point, chunk.codec, chunk.request_id = name, point, codec, 7
        out.append(chunk)
    if stream.floor is not None:
        out[-1].floor = stream.floor
    return out


def _unary(client, model, wave, point="proj", codec="q8+ans", name="ds2") -> str:
    return client.transcribe(Edge(model).encode(wave, point, codec).payload, name, point, codec).text


def _settled(service, timeout_s: float = 10.0) -> bool:
    """Wait until no stream is open and nothing is pending."""
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        if service._streams == 0 and service._pending == 0:
            return True
        time.sleep(0.02)
    return False


def test_a_stream_gets_the_unary_transcript(model, server, client, waves):
    for wave in waves:
        chunks = _chunks(model, wave)
        assert len(chunks) >= 2
        reply = client.transcribe_stream(chunks)
        assert reply.text == _unary(client, model, wave) and reply.text
        assert reply.request_id == 7 and reply.received_unix_ns > 0
        t = reply.timings
        assert t.total_ms >= t.tail_ms + t.text_ms > 0 and t.decode_ms > 0 and t.batch_size == 1
    assert _settled(server.service)


def test_a_whisper_features_stream_gets_the_unary_transcript(whisper, client, waves):
    chunks = _chunks(whisper, waves[0], "features", "f32+pack", "whisper-tiny.en", size=4000)
    assert chunks[-1].HasField("floor")
    got = client.transcribe_stream(chunks).text
    assert got == _unary(client, whisper, waves[0], "features", "f32+pack", "whisper-tiny.en") and got


def test_streams_batch_with_unary_requests(model, clouds, waves):
    with ServerThread(clouds, max_batch=4, max_wait_ms=2) as s, CloudClient(f"127.0.0.1:{s.port}") as c:
        reply = c.transcribe_stream(_chunks(model, waves[1]))
        assert reply.text == _unary(c, model, waves[1])
        assert reply.timings.batch_size >= 1 and reply.load.open_streams == 0


def _bad(chunks: list[pb.AudioChunk], case: str) -> list[pb.AudioChunk]:
    chunks = [pb.AudioChunk.FromString(c.SerializeToString()) for c in chunks]
    if case == "seq gap":
        chunks[1].seq = 2
    elif case == "seq from 1":
        chunks[0].seq = 1
    elif case == "other model":
        chunks[1].model = "whisper-tiny.en"
    elif case == "other codec":
        chunks[1].codec = "f32+pack"
    elif case == "other beam":
        chunks[1].beam = 3
    elif case == "no last":
        chunks[-1].last = False
    elif case == "not streamable":
        chunks[0].point = "gru1"
    elif case == "floor for ds2":
        chunks[-1].floor = -0.5
    elif case == "garbage payload":
        chunks[1].payload = b"\x00garbage" * 10
    return chunks


BAD = ["seq gap", "seq from 1", "other model", "other codec", "other beam", "no last", "not streamable"]
BAD += ["floor for ds2", "garbage payload"]


@pytest.mark.parametrize("case", BAD)
def test_a_bad_stream_is_invalid_and_the_server_keeps_serving(case, model, server, client, waves, caplog):
    chunks = _chunks(model, waves[0])
    with caplog.at_level(logging.INFO, "splitasr.server"), pytest.raises(CloudError) as err:
        client.transcribe_stream(_bad(chunks, case))
    assert err.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert err.value.details and "\n" not in err.value.details
    logged = [json.loads(r.getMessage()) for r in caplog.records if r.name == "splitasr.server"]
    assert [x["status"] for x in logged if x["event"] == "transcribe_stream"] == ["INVALID_ARGUMENT"]
    assert client.transcribe_stream(chunks).text == _unary(client, model, waves[0])
    assert _settled(server.service)


def test_an_unknown_model_is_not_found(model, client, waves):
    chunks = _chunks(model, waves[0])
    chunks[0].model = "ds3"
    with pytest.raises(CloudError) as err:
        client.transcribe_stream(chunks)
    assert err.value.code == grpc.StatusCode.NOT_FOUND


def test_a_stream_past_max_seconds_is_invalid(model):
    edge = Edge(model)
    forty = edge.compress(torch.zeros(1, 40, 256), torch.tensor([40]), "proj", "f32+pack")
    chunks = [pb.AudioChunk(model="ds2", point="proj", codec="f32+pack", seq=0, payload=forty)]
    chunks.append(pb.AudioChunk(seq=1, payload=forty, last=True))
    with ServerThread({"ds2": Cloud(model, max_seconds=1.0)}) as s, CloudClient(f"127.0.0.1:{s.port}") as c:
        with pytest.raises(CloudError) as err:
            c.transcribe_stream(chunks)
        assert err.value.code == grpc.StatusCode.INVALID_ARGUMENT and "frames" in err.value.details
        chunks[1].payload = edge.compress(torch.zeros(1, 5, 256), torch.tensor([5]), "proj", "f32+pack")
        assert c.transcribe_stream(chunks).text is not None  # 45 frames: within the limit
        assert _settled(s.service)


def test_a_stream_of_too_many_chunks_is_invalid(model, waves):
    good = _chunks(model, waves[0][:12000])  # 0.75 s
    empty = [pb.AudioChunk(seq=i) for i in range(1, 1001)]  # 1000 chunks per second of audio at most
    first = pb.AudioChunk(model="ds2", point="proj", codec="q8+ans", seq=0)
    with ServerThread({"ds2": Cloud(model, max_seconds=1.0)}) as s, CloudClient(f"127.0.0.1:{s.port}") as c:
        with pytest.raises(CloudError) as err:
            c.transcribe_stream([first, *empty, pb.AudioChunk(seq=1001, last=True)])
        assert err.value.code == grpc.StatusCode.INVALID_ARGUMENT and "1000 chunks" in err.value.details
        assert c.transcribe_stream(good).text
        assert _settled(s.service)


class _Held:
    """A request stream that sends ``chunks[:n]`` and then waits, as a speaker does."""

    def __init__(self, chunks, n):
        self.chunks, self.n, self.release = chunks, n, queue.SimpleQueue()

    def __iter__(self):
        yield from self.chunks[: self.n]
        if self.release.get(timeout=30):
            yield from self.chunks[self.n :]


def _wait_for(predicate, timeout_s: float = 10.0) -> bool:
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(0.02)
    return False


def test_over_max_streams_is_resource_exhausted_at_once(model, clouds, waves):
    chunks = _chunks(model, waves[0])
    with ServerThread(clouds, max_streams=1) as s, CloudClient(f"127.0.0.1:{s.port}", timeout_s=30) as c:
        held = _Held(chunks, 1)
        first = c.stream_future(held)
        assert _wait_for(lambda: s.service._streams == 1)
        t0 = time.perf_counter()
        with pytest.raises(CloudError) as err:
            c.transcribe_stream(chunks)
        assert err.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert time.perf_counter() - t0 < 5
        held.release.put(True)
        assert first.result(timeout=30).text == _unary(c, model, waves[0])
        assert c.transcribe_stream(chunks).text  # the slot is free again
        assert _settled(s.service)


def test_a_client_that_disconnects_mid_stream_is_dropped_and_logged(model, server, client, waves, caplog):
    chunks = _chunks(model, waves[0], size=1600)
    assert len(chunks) >= 4
    held = _Held(chunks, 2)
    with caplog.at_level(logging.INFO, "splitasr.server"):
        call = client.stream_future(held)
        assert _wait_for(lambda: server.service._streams == 1)
        time.sleep(0.2)  # the two chunks are read and decoded
        call.cancel()
        held.release.put(False)
        assert _settled(server.service)
    logged = [json.loads(r.getMessage()) for r in caplog.records if r.name == "splitasr.server"]
    assert [(x["event"], x["status"]) for x in logged] == [("transcribe_stream", "CANCELLED")]
    assert server.service.load().queue_depth == 0 and server.service.load().open_streams == 0
    assert client.transcribe_stream(chunks).text == _unary(client, model, waves[0])


def test_the_edge_client_streams_and_reports_the_latency_after_speech(model, client, waves):
    edge = EdgeClient(model, client, model_name="ds2")
    r = edge.transcribe_stream(waves[1], "proj", "q8+ans", chunk_ms=100)
    assert r.fallback is None and r.mode == "stream" and r.text == _unary(client, model, waves[1])
    t = r.timings
    for key in (
        "head",
        "encode",
        "edge_finish",
        "after_speech",
        "network",
        "queue",
        "tail",
        "text",
        "server",
    ):
        assert t[key] >= 0, key
    assert t["after_speech"] >= t["server"] > 0
    assert t["network"] == pytest.approx(t["after_speech"] - t["edge_finish"] - t["server"], abs=0.01)
    assert t["chunks"] >= 3 and r.bytes_up > 0
    cloud = edge.transcribe_stream(waves[1], "audio", "pcm16+pack", chunk_ms=250)
    assert cloud.text == recognise(model, waves[1], model.make_decoder())


def test_realtime_paces_the_audio_at_1x(model, client, waves):
    wave = waves[1][:16000]  # 1 s
    t0 = time.perf_counter()
    r = EdgeClient(model, client, model_name="ds2").transcribe_stream(wave, "proj", "q8+ans", realtime=True)
    assert time.perf_counter() - t0 >= 1.0
    assert r.timings["total"] >= 1000 > r.timings["after_speech"]


def test_the_edge_client_finishes_alone_when_the_cloud_is_gone(model, waves):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    decoder = model.make_decoder()
    with CloudClient(f"127.0.0.1:{port}", timeout_s=2) as c:
        r = EdgeClient(model, c, decoder=decoder).transcribe_stream(waves[0], "proj", "q8+ans")
    assert r.fallback and "UNAVAILABLE" in r.fallback
    assert r.text == recognise(model, waves[0], decoder)


def test_the_edge_client_refuses_a_point_that_does_not_stream(model, client, waves):
    with pytest.raises(Exception, match="does not stream"):
        EdgeClient(model, client).transcribe_stream(waves[0], "gru1", "q8+ans")


def test_cli_stream_prints_the_transcript_and_the_latency_after_speech(
    model, server, client, speech_dir, capsys
):
    wav = speech_dir / "digits.wav"
    args = ["edge", "transcribe", str(wav), "--cloud", f"127.0.0.1:{server.port}", "--model", "ds2"]
    args += ["--split", "proj", "--codec", "q8+ans", "--stream", "--chunk-ms", "150"]
    assert main([*args, "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    from splitasr.audio import load_audio

    assert r["text"] == _unary(client, model, torch.from_numpy(load_audio(wav))) and r["mode"] == "stream"
    assert r["timings"]["after_speech"] > 0 and r["timings"]["server"] > 0
    assert main(args) == 0
    text, breakdown = capsys.readouterr().out.splitlines()
    assert text == r["text"] and "after_speech=" in breakdown


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--split", "gru1", "--codec", "q8+ans", "--stream"], "does not stream"),
        (["--split", "proj", "--codec", "q8+ans", "--realtime"], "go with --stream"),
        (["--split", "proj", "--codec", "q8+ans", "--stream", "--chunk-ms", "0"], "must be positive"),
        (["--mic"], "add --stream"),
    ],
)
def test_cli_stream_bad_input_is_one_line_and_exit_2(speech_dir, extra, message, capsys):
    args = ["edge", "transcribe", str(speech_dir / "digits.wav"), "--cloud", "127.0.0.1:1", "--model", "ds2"]
    assert main([*args, *extra]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1


def test_cli_mic_without_sounddevice_says_what_to_install(server, capsys):
    import importlib.util

    if importlib.util.find_spec("sounddevice") is not None:
        pytest.skip("sounddevice is installed: the microphone would be opened")
    args = [
        "edge",
        "transcribe",
        "--cloud",
        f"127.0.0.1:{server.port}",
        "--model",
        "ds2",
        "--stream",
        "--mic",
    ]
    assert main([*args, "--split", "proj", "--codec", "q8+ans", "--seconds", "1"]) == 2
    err = capsys.readouterr().err.strip()
    assert "pip install sounddevice" in err and len(err.splitlines()) == 1
