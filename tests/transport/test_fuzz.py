"""A property test of the server's request handling (hypothesis): random ``TranscribeRequest``
fields -- model, point and codec from the valid names and from random strings; payloads
from random bytes and from valid DS2 payloads with bits flipped, cut, spliced, or header
fields rewritten under a valid CRC; beams in and out of range; right, wrong and missing
tokens -- against one server with batching on. Every reply must be a transcript (with its
own request id) or a clean status in an allowed set, never ``INTERNAL``/``UNKNOWN``, never
a hang (each call has a deadline), and the server answers a good request afterwards.
"""

from __future__ import annotations

import grpc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from splitasr.codecs import CodecError, available_codecs
from splitasr.codecs.base import Header, pack_payload, unpack_payload
from splitasr.pipeline import Edge
from splitasr.transport import splitasr_pb2 as pb
from splitasr.transport import splitasr_pb2_grpc as pb_grpc
from splitasr.transport.server import ServerThread

TOKEN = "fuzz-token"
ALLOWED = {
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
    grpc.StatusCode.UNAUTHENTICATED,
}
CALL_DEADLINE_S = 30.0
EXAMPLES = 400
# (point, codec) of the valid payloads the mutations start from: a calibrated, a learned,
# a zstd-coded, a float and an audio codec, at four points
BASES = (
    ("proj", "q8+ans"),
    ("proj", "deepcod+ans"),
    ("gru1", "q8+zstd"),
    ("conv", "f32+pack"),
    ("audio", "pcm16+pack"),
)
U32 = 2**32 - 1


@pytest.fixture(scope="module")
def fuzz_server(clouds):
    with ServerThread(clouds, token=TOKEN, max_batch=4, max_wait_ms=1) as s:
        yield s


@pytest.fixture(scope="module")
def bases(model, waves) -> list[tuple[str, str, bytes, object, bytes, bytes]]:
    """``(point, codec, payload, header, body, state hash)`` of each valid base payload."""
    edge, out = Edge(model), []
    for point, name in BASES:
        codec = edge.codecs.get(name, point)
        payload = edge.encode(waves[0][:16000], point, codec).payload
        header, body = unpack_payload(payload, codec.state_hash, None, codec.name)
        out.append((point, name, payload, header, body, codec.state_hash))
    return out


def _mostly(value, other: st.SearchStrategy) -> st.SearchStrategy:
    """``value`` about 3 times in 4, else ``other``: most requests get past the first check."""
    return st.integers(0, 3).flatmap(lambda k: st.just(value) if k else other)


def _names(valid: list[str]) -> st.SearchStrategy[str]:
    text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=24)
    return st.one_of(st.sampled_from(valid), text)


@st.composite
def _payload(draw, bases, codecs: list[str]) -> tuple[bytes, int]:
    """``(payload, index of its base)``."""
    i = draw(st.integers(0, len(bases) - 1))
    point, name, good, h, body, state = bases[i]
    how = draw(st.sampled_from(["good", "random", "flip", "cut", "splice", "header", "header"]))
    if how == "good":
        return good, i
    if how == "random":
        return draw(st.binary(max_size=3000)), i
    if how == "flip":
        at = draw(st.integers(0, len(good) * 8 - 1))
        b = bytearray(good)
        b[at // 8] ^= 1 << (at % 8)
        return bytes(b), i
    if how == "cut":
        return good[: draw(st.integers(0, len(good) - 1))], i
    if how == "splice":
        other = bases[draw(st.integers(0, len(bases) - 1))][2]
        a, b = draw(st.integers(0, len(good))), draw(st.integers(0, len(other)))
        return good[:a] + other[b:], i
    # header fields rewritten, the CRC recomputed: the checks behind the CRC must hold
    n, t, c = h.shape
    small = st.integers(0, 3 * max(n, t, c))
    n = draw(st.one_of(st.just(n), st.integers(0, 70)))  # one length per item is packed
    t = draw(st.one_of(st.just(t), small, st.integers(0, U32)))
    c = draw(st.one_of(st.just(c), small, st.integers(0, U32)))
    length = st.one_of(st.integers(0, t + 2), st.integers(0, U32))
    lens = draw(st.one_of(st.just((t,) * n), st.lists(length, min_size=n, max_size=n).map(tuple)))
    params = draw(st.one_of(st.just(h.params), st.binary(max_size=64)))
    point_id = draw(st.one_of(st.just(h.point), st.integers(0, 12), st.integers(0, U32)))
    codec = draw(st.one_of(st.just(h.codec), st.sampled_from(codecs)))
    body = draw(st.one_of(st.just(body), st.just(body[: len(body) // 2]), st.binary(max_size=512)))
    state = draw(st.one_of(st.just(state), st.just(b""), st.binary(min_size=8, max_size=8)))
    try:
        return pack_payload(Header(codec, (n, t, c), lens, params, point_id), body, state), i
    except CodecError:  # a value over 32 bits: the format cannot hold it
        return good, i


def test_every_reply_is_a_transcript_or_a_clean_status(fuzz_server, clouds, model, bases):
    codecs = sorted(available_codecs())
    models = sorted(clouds)
    points = list(model.split_points)
    seen: dict[str, int] = {}

    with grpc.insecure_channel(f"127.0.0.1:{fuzz_server.port}") as channel:
        call = pb_grpc.CloudStub(channel).Transcribe

        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            database=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
        )
        @given(data=st.data())
        def one(data) -> None:
            payload, i = data.draw(_payload(bases, codecs))
            base_point, base_codec = bases[i][:2]
            req = pb.TranscribeRequest(
                model=data.draw(_mostly("ds2", _names(models))),
                point=data.draw(_mostly(base_point, _names(points))),
                codec=data.draw(_mostly(base_codec, _names(codecs))),
                payload=payload,
                request_id=data.draw(st.integers(0, 2**64 - 1)),
                sent_unix_ns=data.draw(st.integers(0, 2**64 - 1)),
            )
            beam = data.draw(st.one_of(st.none(), st.sampled_from([0, 1, 2, 4, 129, U32])))
            if beam is not None:
                req.beam = beam
            # header values are visible ASCII (the client itself refuses others, before sending)
            printable = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=16)
            token = data.draw(_mostly(TOKEN, st.one_of(st.none(), printable)))
            metadata = () if token is None else (("authorization", f"Bearer {token}"),)
            try:
                reply = call(req, timeout=CALL_DEADLINE_S, metadata=metadata)
            except grpc.RpcError as exc:
                assert exc.code() in ALLOWED, (exc.code(), exc.details())
                assert exc.details() and "\n" not in exc.details()
                seen[exc.code().name] = seen.get(exc.code().name, 0) + 1
                return
            assert reply.request_id == req.request_id and isinstance(reply.text, str)
            seen["OK"] = seen.get("OK", 0) + 1

        one()

        good_point, good_codec, good = bases[0][:3]
        want = clouds["ds2"].transcribe(good, good_point, good_codec, model.make_decoder(beam=1)).text
        req = pb.TranscribeRequest(model="ds2", point=good_point, codec=good_codec, payload=good, beam=1)
        reply = call(req, timeout=CALL_DEADLINE_S, metadata=(("authorization", f"Bearer {TOKEN}"),))
        assert reply.text == want
    assert seen.get("OK", 0) > 0 and seen.get("INVALID_ARGUMENT", 0) > 0, seen  # both sides reached
