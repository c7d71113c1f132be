"""Reliability on loopback, bounded in time, against a server with dynamic batching on:

* 32 concurrent clients x 50 requests: every reply arrives once, carries its own request id
  and the single-request transcript of its utterance (4 utterances with distinct texts, so a
  mix-up shows);
* crafted-shape, mutated and non-finite payloads, unknown codec or point, a bad beam: each a
  clean ``INVALID_ARGUMENT``, after which the server answers a good request correctly;
* a message over the default size limit: ``RESOURCE_EXHAUSTED``;
* ``splitasr serve`` (TLS and a token) SIGKILLed while edge clients are using it: every client
  finishes on the edge within its deadline, with the whole local model's transcript, and says
  why.

DS2 with greedy decoding (``beam=1``) throughout: the model does not matter here, and it is
the fastest. Whisper requests are covered by test_transport.py.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import grpc
import pytest
import torch

from splitasr.codecs.base import FORMAT_VERSION, MAGIC, Header, pack_payload, unpack_payload
from splitasr.corpus.tts import Speaker, render
from splitasr.pipeline import Edge, recognise
from splitasr.transport import splitasr_pb2 as pb
from splitasr.transport import splitasr_pb2_grpc as pb_grpc
from splitasr.transport.client import CloudClient, CloudError, EdgeClient
from splitasr.transport.server import DEFAULT_MAX_MESSAGE_BYTES, ServerThread

ROOT = Path(__file__).resolve().parents[2]
POINT, CODEC = "proj", "q8+ans"
TEXTS = ("four one one seven", "the sun is bright today", "open the door", "nine")
CLIENTS, REQUESTS = 32, 50


@pytest.fixture(scope="module")
def utterances(model) -> list[tuple[torch.Tensor, bytes, str]]:
    """``(wave, payload at proj with q8+ans, its single-request greedy text)`` per utterance."""
    from splitasr.pipeline import Cloud

    speaker = Speaker("espeak-ng", "en-us", "m3", rate=170, pitch=50)
    edge, cloud, greedy = Edge(model), Cloud(model), model.make_decoder(beam=1)
    out = []
    for text in TEXTS:
        wave = torch.from_numpy(render(text, speaker))
        payload = edge.encode(wave, POINT, CODEC).payload
        out.append((wave, payload, cloud.transcribe(payload, POINT, CODEC, greedy).text))
    assert len({t for _, _, t in out}) == len(TEXTS), [t for _, _, t in out]  # a mix-up would show
    return out


@pytest.fixture(scope="module")
def batching(clouds):
    """A server with dynamic batching on (max batch 8, 5 ms wait, 2 workers)."""
    with ServerThread(clouds, max_batch=8, max_wait_ms=5, workers=2) as s:
        yield s


def _good(client: CloudClient, utterances) -> None:
    _, payload, want = utterances[0]
    reply = client.transcribe(payload, "ds2", POINT, CODEC, beam=1, request_id=7)
    assert (reply.request_id, reply.text) == (7, want)


def test_32_clients_x_50_requests_each_get_their_own_reply_once(batching, utterances):
    """One grpc.aio channel per client, each sending its 50 requests one after another."""
    sent: dict[int, int] = {}  # request id -> utterance
    replies: list[tuple[int, int, str]] = []  # (id sent, id received, text)
    batches: list[int] = []

    async def one_client(i: int) -> None:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{batching.port}") as channel:
            stub = pb_grpc.CloudStub(channel)
            for k in range(REQUESTS):
                u = (i + k) % len(utterances)
                rid = secrets.randbits(64)
                sent[rid] = u
                req = pb.TranscribeRequest(
                    model="ds2", point=POINT, codec=CODEC, payload=utterances[u][1], request_id=rid, beam=1
                )
                reply = await stub.Transcribe(req, timeout=60)
                replies.append((rid, reply.request_id, reply.text))
                batches.append(reply.timings.batch_size)

    async def all_clients() -> None:
        await asyncio.wait_for(asyncio.gather(*(one_client(i) for i in range(CLIENTS))), 120)

    asyncio.run(all_clients())
    assert len(sent) == len(replies) == CLIENTS * REQUESTS  # none lost, ids unique
    assert all(rid == got for rid, got, _ in replies)  # each its own
    assert len({got for _, got, _ in replies}) == len(replies)  # none twice
    wrong = [(sent[rid], text) for rid, _, text in replies if text != utterances[sent[rid]][2]]
    assert not wrong, wrong[:5]
    assert max(batches) > 1  # the batcher did batch


def _crafted(model, utterances) -> dict[str, tuple[bytes, str, str, int | None]]:
    """Name -> ``(payload, point, codec, beam)``, every one to be refused as INVALID_ARGUMENT.
    Rewritten headers carry a valid CRC, so the refusal must come from the checks behind it."""
    edge = Edge(model)
    codec = edge.codecs.get(CODEC, POINT)
    good = utterances[1][1]
    h, body = unpack_payload(good, codec.state_hash, None, codec.name)
    n, t, c = h.shape

    def craft(shape=h.shape, lens=None, params=h.params, point=h.point, name=h.codec, body=body) -> bytes:
        lens = (shape[1],) * shape[0] if lens is None else lens
        return pack_payload(Header(name, shape, lens, params, point), body, codec.state_hash)

    def f32(fill: float) -> bytes:
        x = torch.full((1, 40, c), fill)
        return edge.compress(x, torch.tensor([40]), POINT, "f32+pack")

    out = {
        "10^6 frames declared": (craft((1, 10**6, c)), POINT, CODEC, 1),
        "twice the frames, same body": (craft((1, 2 * t, c)), POINT, CODEC, 1),
        "4 channels instead of 256": (craft((1, t, 4)), POINT, CODEC, 1),
        "2 items": (craft((2, t, c), lens=(t, t)), POINT, CODEC, 1),
        "65 items": (craft((65, t, c)), POINT, CODEC, 1),
        "a length past the frames": (craft(lens=(t + 5,)), POINT, CODEC, 1),
        "no frames": (craft((1, 0, c)), POINT, CODEC, 1),
        "another point's id": (craft(point=h.point + 1), POINT, CODEC, 1),
        "another codec's name": (craft(name="q8+zstd"), POINT, CODEC, 1),
        "64 kB of params": (craft(params=bytes(65536)), POINT, CODEC, 1),
        "body cut short": (craft(body=body[: len(body) // 2]), POINT, CODEC, 1),
        "overlong varints": (MAGIC + bytes([FORMAT_VERSION << 4]) + b"\xff" * 40, POINT, CODEC, 1),
        "random bytes after a valid magic": (
            MAGIC + bytes([FORMAT_VERSION << 4]) + torch.randint(0, 256, (300,)).byte().numpy().tobytes(),
            POINT,
            CODEC,
            1,
        ),
        # found by the fuzz test: NaN reached the decoders (DS2's beam search raised, INTERNAL)
        "NaN activations (f32)": (f32(float("nan")), POINT, "f32+pack", None),
        "infinite activations (f32)": (f32(float("inf")), POINT, "f32+pack", 1),
        "1e38 activations overflow in the tail": (f32(1e38), POINT, "f32+pack", None),
        "unknown codec": (good, POINT, "q9+ans", 1),
        "unknown point": (good, "gru7", CODEC, 1),
        "beam 129": (good, POINT, CODEC, 129),
    }
    return out


def test_crafted_payloads_are_invalid_argument_and_the_server_keeps_serving(model, batching, utterances):
    with CloudClient(f"127.0.0.1:{batching.port}", timeout_s=30) as c:
        for name, (payload, point, codec, beam) in _crafted(model, utterances).items():
            t0 = time.perf_counter()
            with pytest.raises(CloudError) as err:
                c.transcribe(payload, "ds2", point, codec, beam=beam)
            assert err.value.code == grpc.StatusCode.INVALID_ARGUMENT, (name, err.value)
            assert err.value.details and "\n" not in err.value.details, name
            assert time.perf_counter() - t0 < 5, name  # refused, not computed at length
            _good(c, utterances)


def test_a_message_over_the_default_limit_is_resource_exhausted(batching, utterances):
    with CloudClient(f"127.0.0.1:{batching.port}", timeout_s=30) as c:
        with pytest.raises(CloudError) as err:
            c.transcribe(bytes(DEFAULT_MAX_MESSAGE_BYTES), "ds2", POINT, CODEC)
        assert err.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED
        _good(c, utterances)
        with pytest.raises(CloudError) as err:  # just under: through gRPC, refused by the codec
            c.transcribe(bytes(DEFAULT_MAX_MESSAGE_BYTES - 1024), "ds2", POINT, CODEC)
        assert err.value.code == grpc.StatusCode.INVALID_ARGUMENT
        _good(c, utterances)


DEADLINE_S = 3.0
MARGIN_S = 1.0
EDGES = 4


def test_every_client_finishes_on_the_edge_when_the_server_is_killed(model, utterances, tls_files):
    """``splitasr serve`` with TLS and a token, SIGKILLed once every client has had a reply;
    each client then finishes its requests alone within its deadline, saying why."""
    cert, key = tls_files
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-c", "from splitasr.cli import main; main()", "serve", "--port", "0"]
    cmd += ["--models", "ds2", "--token", "t0k", "--tls-cert", str(cert), "--tls-key", str(key)]
    cmd += ["--max-batch", "8", "--threads", "1"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)
    greedy = model.make_decoder(beam=1)
    local = [recognise(model, wave, greedy) for wave, _, _ in utterances]
    results: list[list[tuple[float, object]]] = [[] for _ in range(EDGES)]
    errors: list[BaseException] = []
    killed = threading.Event()
    try:
        line = proc.stdout.readline()
        assert "listening (TLS) on" in line, line
        address = line.split()[-1]

        def run(i: int) -> None:
            try:
                with CloudClient(address, token="t0k", tls_ca=cert, timeout_s=DEADLINE_S) as c:
                    edge = EdgeClient(model, c, decoder=greedy, model_name="ds2")
                    k, after = i, 0
                    while after < 2 and time.monotonic() < stop_at:
                        r = edge.transcribe(utterances[k % len(utterances)][0], POINT, CODEC, beam=1)
                        results[i].append((k % len(utterances), r))
                        after += r.fallback is not None
                        k += 1
            except BaseException as exc:  # noqa: BLE001 - reported below
                errors.append(exc)

        stop_at = time.monotonic() + 60
        threads = [threading.Thread(target=run, args=(i,)) for i in range(EDGES)]
        for t in threads:
            t.start()
        while not all(results) and time.monotonic() < stop_at and not errors:
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
        killed.set()
        for t in threads:
            t.join(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
    assert not errors, errors
    for i, done in enumerate(results):
        cloud = [(u, r) for u, r in done if r.fallback is None]
        alone = [(u, r) for u, r in done if r.fallback is not None]
        assert cloud and len(alone) >= 2, (i, [r.fallback for _, r in done])
        assert all(r.text == utterances[u][2] for u, r in cloud)  # the split transcript
        assert all(r.timings["round_trip"] < 1000 * (DEADLINE_S + MARGIN_S) for _, r in alone)
        for u, r in alone:
            assert r.fallback.split(":")[0] in {"UNAVAILABLE", "DEADLINE_EXCEEDED"}, r.fallback
            assert r.text == local[u] and r.timings["edge"] > 0  # the whole local model's
            assert (
                r.timings["total"]
                < 1000 * (DEADLINE_S + MARGIN_S) + r.timings["edge"] + r.timings["head"] + r.timings["encode"]
            )


def test_new_beam_widths_are_served_without_stalling(model, batching, utterances):
    """Regression: every new beam width loaded DS2's word LM again on the event loop (~1 s
    each, ~16 MB each, the other calls stalled). Beams 2..9, each new to this server, give
    the in-process text of that beam, quickly."""
    from splitasr.pipeline import Cloud

    cloud = Cloud(model)
    _, payload, _ = utterances[1]
    with CloudClient(f"127.0.0.1:{batching.port}", timeout_s=30) as c:
        t0 = time.perf_counter()
        for beam in range(2, 10):
            want = cloud.transcribe(payload, POINT, CODEC, model.make_decoder(beam=beam)).text
            assert c.transcribe(payload, "ds2", POINT, CODEC, beam=beam).text == want
        assert time.perf_counter() - t0 < 8  # was > 8 s of LM loads alone
