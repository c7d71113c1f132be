"""The ``huffman`` and ``ans`` coders on their own: symbol arrays in, bytes out, and back."""

from __future__ import annotations

import heapq

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from splitasr.codecs import CodecError
from splitasr.codecs.entropy import (
    CHUNK,
    MAX_CODE_BITS,
    Ans,
    Huffman,
    HuffmanCode,
    decode_varints,
    encode_varints,
    fit_counts,
    huffman_lengths,
)

CODERS = [Huffman, Ans]


def _heap_huffman_cost(counts: list[int]) -> int:
    """Total bits of an optimal (unlimited) Huffman code: the sum of all merge weights."""
    if len(counts) == 1:
        return 0
    heap = list(counts)
    heapq.heapify(heap)
    cost = 0
    while len(heap) > 1:
        merged = heapq.heappop(heap) + heapq.heappop(heap)
        cost += merged
        heapq.heappush(heap, merged)
    return cost


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(1, 10**6), min_size=1, max_size=300))
def test_huffman_lengths_are_optimal_and_form_a_prefix_code(counts):
    lengths = huffman_lengths(np.array(counts))
    assert int((lengths * np.array(counts)).sum()) == _heap_huffman_cost(counts)
    if len(counts) > 1:
        assert np.sum(np.ldexp(1.0, -lengths)) == pytest.approx(1.0)


def test_huffman_lengths_are_limited_for_skewed_counts():
    fibonacci = [1, 1]
    while len(fibonacci) < 40:
        fibonacci.append(fibonacci[-1] + fibonacci[-2])
    lengths = huffman_lengths(np.array(fibonacci))
    assert lengths.max() <= MAX_CODE_BITS
    assert np.sum(np.ldexp(1.0, -lengths)) <= 1.0


def test_canonical_codes_are_prefix_free():
    code = HuffmanCode.from_lengths(np.arange(6), np.array([2, 2, 3, 3, 3, 3]))
    words = [format(int(c), f"0{int(n)}b") for c, n in zip(code.codes, code.lengths, strict=True)]
    assert all(not b.startswith(a) for a in words for b in words if a != b)


@settings(max_examples=50, deadline=None)
@given(st.lists(st.integers(0, 2**63 - 1), max_size=50))
def test_varints_round_trip(values):
    raw = encode_varints(np.array(values, dtype=np.uint64))
    out, pos = decode_varints(raw + b"\x05", 0, len(values))
    assert out.tolist() == values and pos == len(raw)


@st.composite
def symbol_arrays(draw):
    """``(symbols, alphabet)``: byte planes ``(4, n)``, ``(N, T, C)`` codes, or a flat array."""
    alphabet = draw(st.sampled_from([2, 4, 16, 256, 65536]))
    layout = draw(st.sampled_from(["planes", "ntc", "flat"]))
    if layout == "planes":
        shape = (4, draw(st.integers(0, 3 * CHUNK)))
    elif layout == "ntc":
        shape = (draw(st.integers(1, 2)), draw(st.integers(0, 50)), draw(st.integers(1, 40)))
    else:
        shape = (draw(st.integers(0, 2000)),)
    distinct = draw(st.integers(1, 40))
    pool = draw(hnp.arrays(np.int64, distinct, elements=st.integers(0, alphabet - 1)))
    idx = draw(hnp.arrays(np.int64, shape, elements=st.integers(0, distinct - 1)))
    return pool[idx], alphabet


@pytest.mark.parametrize("coder_cls", CODERS)
@settings(max_examples=40, deadline=None)
@given(case=symbol_arrays())
def test_coders_round_trip_any_symbol_array(coder_cls, case):
    symbols, alphabet = case
    coder = coder_cls()
    out = coder.decode(coder.encode(symbols, alphabet), symbols.shape, alphabet)
    assert out.shape == symbols.shape and np.array_equal(out, symbols)


@pytest.mark.parametrize("coder_cls", CODERS)
def test_coders_round_trip_with_a_learned_table_per_plane(coder_cls):
    rng = np.random.default_rng(1)
    train = [rng.integers(0, 256, (4, 500)) for _ in range(3)]
    coder = coder_cls(fit_counts(train, 256))
    symbols = rng.integers(0, 256, (4, 3000))
    assert np.array_equal(coder.decode(coder.encode(symbols, 256), symbols.shape, 256), symbols)


@pytest.mark.parametrize("coder_cls", CODERS)
def test_a_single_distinct_symbol_costs_no_bits(coder_cls):
    symbols = np.full((1, 100, 40), 7)
    body = coder_cls().encode(symbols, 256)
    assert len(body) < 40
    assert np.array_equal(coder_cls().decode(body, symbols.shape, 256), symbols)


@pytest.mark.parametrize("coder_cls", CODERS)
def test_symbols_outside_the_alphabet_are_refused(coder_cls):
    with pytest.raises(CodecError, match="alphabet"):
        coder_cls().encode(np.array([[0, 1, 16]]), 16)


@pytest.mark.parametrize("coder_cls", CODERS)
def test_a_learned_table_for_another_alphabet_or_layout_is_refused(coder_cls):
    coder = coder_cls(fit_counts([np.zeros((4, 10), np.int64)], 256))
    with pytest.raises(CodecError, match="alphabet"):
        coder.encode(np.zeros((4, 10), np.int64), 16)
    with pytest.raises(CodecError, match="planes"):
        coder.encode(np.zeros((3, 10), np.int64), 256)


@pytest.mark.parametrize("coder_cls", CODERS)
def test_a_body_coded_with_a_learned_table_needs_the_same_table(coder_cls):
    """The payload names the table by the codec's state hash: no table, or another, is refused."""
    from splitasr.codecs.base import Codec
    from splitasr.codecs.quantize import Q4

    x = torch.from_numpy(np.random.default_rng(2).normal(size=(1, 20, 8)).astype(np.float32))
    symbols = Q4().forward(x.numpy()).data
    payload = Codec(Q4(), coder_cls(fit_counts([symbols], 16))).compress(x)
    with pytest.raises(CodecError, match="has none"):
        Codec(Q4(), coder_cls()).decompress(payload)
    other = Codec(Q4(), coder_cls(fit_counts([symbols[:, :5]], 16)))
    with pytest.raises(CodecError, match="different codec state"):
        other.decompress(payload)


def _body(coder_cls, learned: bool) -> tuple[object, bytes, tuple[int, ...]]:
    rng = np.random.default_rng(3)
    symbols = np.clip(rng.laplace(128, 8, (4, 1500)).round(), 0, 255).astype(np.int64)
    coder = coder_cls(fit_counts([symbols], 256) if learned else None)
    return coder, coder.encode(symbols, 256), symbols.shape


@pytest.mark.parametrize("learned", [False, True])
@pytest.mark.parametrize("coder_cls", CODERS)
@settings(max_examples=40, deadline=None)
@given(data=st.data())
def test_corrupt_bodies_raise_codec_error(coder_cls, learned, data):
    coder, body, shape = _body(coder_cls, learned)
    kind = data.draw(st.sampled_from(["random", "truncated", "flipped"]))
    if kind == "random":
        bad = data.draw(st.binary(max_size=300))
    elif kind == "truncated":
        bad = body[: data.draw(st.integers(0, len(body) - 1))]
    else:
        pos = data.draw(st.integers(0, len(body) * 8 - 1))
        bad = bytearray(body)
        bad[pos // 8] ^= 1 << (pos % 8)
        bad = bytes(bad)
    try:
        out = coder.decode(bad, shape, 256)
    except CodecError:
        return
    # an entropy coder cannot notice every flipped bit (the payload's CRC32 does); what it
    # must never do is return something of the wrong shape or outside the alphabet
    assert out.shape == shape and out.min() >= 0 and out.max() < 256


@pytest.mark.parametrize("learned", [False, True])
@pytest.mark.parametrize("budget", [1, 5000, 40_000])
def test_huffman_decodes_in_bounded_batches_and_lookups(monkeypatch, budget, learned):
    """Streams cut into runs and batches of at most ``budget`` bits, symbols looked up 2048 at
    a time: the same symbols as one batch, for every stream and a short last chunk."""
    import splitasr.codecs.entropy as entropy

    rng = np.random.default_rng(budget)
    symbols = np.clip(rng.laplace(40, 6, (3, 5 * CHUNK + 77)).round(), 0, 255).astype(np.int64)
    symbols[1, :CHUNK] = 7  # a low-entropy run: chunks of about one bit per symbol
    coder = Huffman(fit_counts([symbols], 256) if learned else None)
    body = coder.encode(symbols, 256)
    monkeypatch.setattr(entropy, "BATCH_BITS", budget)
    monkeypatch.setattr(entropy, "LOOKUP", 2048)
    out = coder.decode(body, symbols.shape, 256)
    assert out.dtype == np.uint8 and np.array_equal(out, symbols)


@pytest.mark.parametrize("n", [0, 1, 5, 3000])
@pytest.mark.parametrize("p", [0.5, 0.99, 0.999999, 1.0])
def test_ans_bodies_of_skewed_streams_pass_the_body_length_bound(n, p):
    """Honest bodies are never refused by the minimum-length check, however skewed."""
    rng = np.random.default_rng(n)
    symbols = np.where(rng.random((2, n)) < p, 3, rng.integers(0, 16, (2, n))).astype(np.int64)
    for coder in (Ans(), Ans(fit_counts([symbols, rng.integers(0, 16, (2, 64))], 16))):
        assert np.array_equal(coder.decode(coder.encode(symbols, 16), symbols.shape, 16), symbols)


def test_an_ans_body_cannot_claim_free_symbols():
    """From an empty stack the first symbol of a model would cost nothing: the stack starts
    at ANS_START, so a body of a few words cannot stand for a million symbols."""
    coder = Ans(fit_counts([np.zeros((1, 100), np.int64)], 16))
    body = coder.encode(np.zeros((1, 4), np.int64), 16)
    with pytest.raises(CodecError, match="too short"):
        coder.decode(body, (1, 1_000_000), 16)
