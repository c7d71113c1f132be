"""Bad payloads and bad names: every failure is a CodecError, found before it costs memory."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from splitasr.codecs import CodecError, get_codec
from splitasr.codecs.base import FORMAT_VERSION, MAGIC, Header, pack_payload, read_header, unpack_payload
from splitasr.training.calibrate import calibrate
from tests.codecs.synthetic import laplacian_activations

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


@pytest.mark.parametrize("learned", [False, True], ids=["own-table", "learned-table"])
@pytest.mark.parametrize("name", CODECS)
@settings(max_examples=15, deadline=None)
@given(data=st.data())
def test_random_truncated_and_bit_flipped_payloads_raise_codec_error(name, learned, state_dir, data):
    state = state_dir if learned else None
    payload = _payload(name, state)
    kind = data.draw(st.sampled_from(["random", "truncated", "flipped", "appended"]))
    if kind == "random":
        bad = data.draw(st.binary(max_size=200))
    elif kind == "truncated":
        bad = payload[: data.draw(st.integers(0, len(payload) - 1))]
    elif kind == "appended":
        bad = payload + data.draw(st.binary(min_size=1, max_size=8))
    else:  # anywhere: the CRC covers the whole header and the body
        bad = _flip(payload, data.draw(st.integers(0, len(payload) * 8 - 1)))
    with pytest.raises(CodecError):
        get_codec(name, state).decompress(bad)


@pytest.mark.parametrize("name", ["q8+ans", "q2+pack"])
@settings(max_examples=30, deadline=None)
@given(data=st.data())
def test_corrupted_clip_bounds_in_the_header_are_caught(name, data):
    """Uncalibrated quantisers carry their bounds in the params, which the CRC covers."""
    payload = _payload(name, None)
    header = read_header(payload)
    assert len(header.params) == 8 * CHANNELS
    start = header.size - 4 - len(header.params)
    bad = _flip(payload, data.draw(st.integers(start * 8, (header.size - 4) * 8 - 1)))
    with pytest.raises(CodecError, match="CRC32"):
        get_codec(name).decompress(bad)


@pytest.mark.parametrize("name", CODECS)
@settings(max_examples=15, deadline=None)
@given(body=st.binary(max_size=400), t=st.integers(0, 60))
def test_garbage_bodies_behind_a_valid_header_and_crc_raise_codec_error(name, body, t):
    """What a CRC collision would deliver: the decoder itself must refuse or stay in bounds."""
    codec = get_codec(name)
    params = np.zeros(2 * CHANNELS, "<f4").tobytes() if name.startswith("q") else b""
    payload = pack_payload(Header(codec.name, (1, t, CHANNELS), (t,), params), body)
    try:
        x, _ = codec.decompress(payload)
    except CodecError:
        return
    assert x.shape == (1, t, CHANNELS)


@pytest.mark.parametrize("name", CODECS)
def test_a_declared_shape_over_the_limit_is_refused_before_allocating(name):
    payload = pack_payload(Header(get_codec(name).name, (1, 1_000_000, 4096), (1_000_000,)), b"\x00" * 16)
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
    body = encode_varints(np.array([len(table)])) + table
    params = np.zeros(2, "<f4").tobytes()
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


@pytest.mark.parametrize(
    "params", [np.zeros(2, "<f4").tobytes(), b"x" * 23, np.full(6, np.nan, "<f4").tobytes()]
)
def test_bad_clip_bounds_in_a_header_are_refused(params):
    payload = pack_payload(Header("q8+pack", (1, 2, 3), (2,), params), bytes(6))
    with pytest.raises(CodecError):
        get_codec("q8").decompress(payload)


def test_the_payload_starts_with_magic_and_version_and_old_payloads_are_named():
    payload = _payload("f32+ans", None)
    assert payload[:2] == MAGIC and payload[2] >> 4 == FORMAT_VERSION
    with pytest.raises(CodecError, match="version 1"):
        get_codec("f32+ans").decompress(b"SPLC\x01" + bytes(40))


def test_read_header_routes_a_payload_without_its_codec(state_dir):
    x = torch.from_numpy(laplacian_activations(2, 30, CHANNELS, seed=5)[0][None]).repeat(2, 1, 1)
    stateless = get_codec("q8+ans").compress(x, torch.tensor([30, 17]), point=7)
    h = read_header(stateless)
    assert (h.codec, h.point, h.shape, h.lens, h.crc_checked) == (
        "q8+ans",
        7,
        (2, 30, CHANNELS),
        (30, 17),
        True,
    )
    calibrated = get_codec("q8+ans", state_dir).compress(x, point=2)
    h = read_header(calibrated)
    assert h.state_tag is not None and not h.crc_checked and h.params == b""
    assert get_codec("q8+ans", state_dir).read_header(calibrated).crc_checked
    assert h.size == len(calibrated) - len(
        unpack_payload(calibrated, get_codec("q8+ans", state_dir).state_hash)[1]
    )
