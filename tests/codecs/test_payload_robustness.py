"""Bad payloads and bad names: every failure is a CodecError, found before it costs memory."""

from __future__ import annotations

import tracemalloc
import zlib

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from splitasr.codecs import CodecError, get_codec
from splitasr.codecs.base import _FIXED, FORMAT_VERSION, Header, pack_payload
from splitasr.training.calibrate import calibrate
from tests.codecs.synthetic import laplacian_activations, same_bits

CODECS = ["raw", "f32+zstd", "f32+huffman", "f32+ans", "f16+huffman", "q8+ans", "q4+huffman", "q2+pack"]
CHANNELS = 10


@pytest.fixture(scope="module")
def state_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("robust-state")
    for name in CODECS:
        calibrate(name, laplacian_activations(3, 60, CHANNELS, seed=8), d)
    return d


def _payload(name: str, state_dir) -> bytes:
    x = torch.from_numpy(laplacian_activations(1, 40, CHANNELS, seed=2)[0][None])
    return get_codec(name, state_dir).compress(x)


def _flip(payload: bytes, bit: int) -> bytes:
    flipped = bytearray(payload)
    flipped[bit // 8] ^= 1 << (bit % 8)
    return bytes(flipped)


def _meta_region(payload: bytes) -> range:
    """Byte range of the header's JSON metadata (not covered by the payload CRC)."""
    _, _, meta_len, _, ndim = _FIXED.unpack_from(payload)
    start = _FIXED.size + 4 * ndim
    return range(start, start + meta_len)


@pytest.mark.parametrize("learned", [False, True], ids=["own-table", "learned-table"])
@pytest.mark.parametrize("name", CODECS)
@settings(max_examples=15, deadline=None)
@given(data=st.data())
def test_random_truncated_and_bit_flipped_payloads_raise_codec_error(name, learned, state_dir, data):
    state = state_dir if learned else None
    payload = _payload(name, state)
    meta = _meta_region(payload)
    kind = data.draw(st.sampled_from(["random", "truncated", "flipped", "appended"]))
    if kind == "random":
        bad = data.draw(st.binary(max_size=200))
    elif kind == "truncated":
        bad = payload[: data.draw(st.integers(0, len(payload) - 1))]
    elif kind == "appended":
        bad = payload + data.draw(st.binary(min_size=1, max_size=8))
    else:  # anywhere but the JSON metadata, which base.py's CRC does not cover
        bit = data.draw(st.integers(0, (len(payload) - len(meta)) * 8 - 1))
        bad = _flip(payload, bit if bit < meta.start * 8 else bit + len(meta) * 8)
    with pytest.raises(CodecError):
        get_codec(name, state).decompress(bad)


@pytest.mark.parametrize("learned", [False, True], ids=["own-table", "learned-table"])
@pytest.mark.parametrize("name", CODECS)
@settings(max_examples=15, deadline=None)
@given(data=st.data())
def test_bit_flips_in_the_header_metadata_never_crash(name, learned, state_dir, data):
    """The metadata has no CRC in this payload format: a flip there must raise CodecError
    or decode to the declared shape (for example when it changes a valid length)."""
    state = state_dir if learned else None
    payload = _payload(name, state)
    meta = _meta_region(payload)
    bad = _flip(payload, data.draw(st.integers(meta.start * 8, meta.stop * 8 - 1)))
    try:
        x, _ = get_codec(name, state).decompress(bad)
    except CodecError:
        return
    assert x.shape == (1, 40, CHANNELS)


@pytest.mark.parametrize("q", ["q8+ans", "q2+pack"])
@settings(max_examples=30, deadline=None)
@given(data=st.data())
def test_corrupted_clip_bounds_in_the_header_are_caught(q, data):
    """A flip in the bounds raises, unless the new digits read back to the same float32."""
    payload = _payload(q, None)
    meta = _meta_region(payload)
    start = meta.start + payload[meta.start : meta.stop].index(b'"lo":')
    end = meta.start + payload[meta.start : meta.stop].index(b',"crc"')
    bad = _flip(payload, data.draw(st.integers(start * 8, end * 8 - 1)))
    codec = get_codec(q)
    try:
        y, _ = codec.decompress(bad)
    except CodecError:
        return
    assert same_bits(y, codec.decompress(payload)[0])


@pytest.mark.parametrize("name", CODECS)
@settings(max_examples=15, deadline=None)
@given(body=st.binary(max_size=400), t=st.integers(0, 60))
def test_garbage_bodies_behind_a_valid_header_and_crc_raise_codec_error(name, body, t):
    """What a CRC collision would deliver: the decoder itself must refuse or stay in bounds."""
    codec = get_codec(name)
    params = {"lo": [0.0] * CHANNELS, "hi": [1.0] * CHANNELS} if name.startswith("q") else {}
    payload = pack_payload(Header(codec.name, (1, t, CHANNELS), (t,), params), body)
    try:
        x, _ = codec.decompress(payload)
    except CodecError:
        return
    assert x.shape == (1, t, CHANNELS)


@pytest.mark.parametrize("name", CODECS)
def test_a_declared_shape_over_the_limit_is_refused_before_allocating(name):
    payload = pack_payload(Header(name, (1, 1_000_000, 4096), (1_000_000,)), b"\x00" * 16)
    tracemalloc.start()
    try:
        with pytest.raises(CodecError, match="exceeds the limit"):
            get_codec(name).decompress(payload)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 10_000_000


def test_a_huge_table_claim_inside_the_body_is_refused():
    """An own-table body claiming more symbols than the alphabet is refused, not allocated."""
    import zstandard

    from splitasr.codecs.entropy import encode_varints

    table = zstandard.ZstdCompressor().compress(encode_varints(np.array([10**9, 0, 1])))
    body = bytes([0]) + encode_varints(np.array([len(table)])) + table
    params = get_codec("q8").transform.forward(np.zeros((1, 1, 1), np.float32)).params
    for name in ("q8+huffman", "q8+ans"):
        payload = pack_payload(Header(name, (1, 2, 1), (2,), params), body)
        with pytest.raises(CodecError):
            get_codec(name).decompress(payload)


def test_a_payload_is_refused_by_a_different_codec(state_dir):
    payload = _payload("q8+ans", state_dir)
    with pytest.raises(CodecError, match="made by codec 'q8\\+ans'"):
        get_codec("q8+huffman", state_dir).decompress(payload)


@pytest.mark.parametrize("name", ["q9+ans", "f32+lzma", "q8+ans+zstd", "", "huffman+q8", "F32"])
def test_unknown_codec_names_are_refused_with_the_known_parts(name):
    with pytest.raises(CodecError, match="unknown codec .*transforms: .*q8"):
        get_codec(name)


def test_single_part_names_complete_with_the_default_other_part():
    assert get_codec("ans").name == "f32+ans"
    assert get_codec("q4").name == "q4+pack"


def test_bad_clip_bounds_in_a_header_are_refused():
    codec = get_codec("q8")
    for params in ({"lo": [0.0], "hi": [1.0]}, {"lo": "x", "hi": [1.0] * 3}, {"lo": [float("nan")] * 3}):
        payload = pack_payload(Header("q8+pack", (1, 2, 3), (2,), params), bytes(6))
        with pytest.raises(CodecError):
            codec.decompress(payload)


def test_payload_header_crc_is_what_protects_the_body():
    payload = _payload("f32+ans", None)
    assert payload[:4] == b"SPLC" and payload[4] == FORMAT_VERSION
    assert zlib.crc32(payload[-10:]) != 0  # sanity: the body is really at the end
