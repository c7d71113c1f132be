"""Whole codecs: lossless ones keep every bit, lossy ones stay within their error bound."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from splitasr.codecs import CodecError, get_codec
from splitasr.codecs.base import read_header
from splitasr.codecs.quantize import quantise
from splitasr.training.calibrate import calibrate
from tests.codecs.synthetic import activation_bits, activation_values, laplacian_activations, same_bits

LOSSLESS = ["raw", "f32+pack", "f32+zstd", "f32+huffman", "f32+ans"]
QUANTISERS = ["q8", "q6", "q4", "q2"]
LOSSY = ["f16+pack", "f16+huffman", "f16+ans"] + [
    f"{q}+{c}" for q in QUANTISERS for c in ("pack", "huffman", "ans")
]
CHANNELS = 12  # calibrated state is for this many channels


@pytest.fixture(scope="module")
def state_dir(tmp_path_factory):
    """Every codec above calibrated on the same synthetic activations."""
    d = tmp_path_factory.mktemp("codec-state")
    train = laplacian_activations(6, 120, CHANNELS, seed=5)
    for name in LOSSLESS[1:] + LOSSY:
        calibrate(name, train, d)
    return d


@pytest.mark.parametrize("learned", [False, True], ids=["own-table", "learned-table"])
@pytest.mark.parametrize("name", LOSSLESS)
@settings(max_examples=25, deadline=None)
@given(x=activation_bits())
def test_lossless_codecs_keep_every_bit(name, learned, state_dir, x):
    codec = get_codec(name, state_dir if learned else None)
    lens = torch.randint(0, x.shape[1] + 1, (x.shape[0],))
    y, y_lens = codec.decompress(codec.compress(x, lens))
    assert same_bits(x, y)
    assert torch.equal(lens, y_lens)


def _check_quantised(codec, x: torch.Tensor, payload: bytes, y: torch.Tensor) -> None:
    """Inside the clip range the error is at most half a step; codes are in range."""
    header = codec.read_header(payload)
    offset, step = codec.transform.step(
        codec.transform.unpack_params(header.params, header.shape), x.shape[-1]
    )
    levels = codec.transform.levels
    xs = x.double().numpy()
    top = offset + (levels - 1) * step
    inside = (xs >= offset) & (xs <= top)
    err = np.abs(xs - y.double().numpy())
    bound = step / 2 * (1 + 1e-6) + 1e-6 * np.abs(xs)
    assert np.all(err[inside] <= np.broadcast_to(bound, xs.shape)[inside])
    codes = quantise(xs, offset, step, levels)
    assert codes.max(initial=0) < levels
    assert np.all((y.numpy() >= offset - 1e-6 * np.abs(offset)) | (step == 0))


@pytest.mark.parametrize("learned", [False, True], ids=["minmax", "calibrated"])
@pytest.mark.parametrize("name", [n for n in LOSSY if n.startswith("q")])
@settings(max_examples=10, deadline=None)
@given(x=activation_values(channels=CHANNELS))
def test_quantisers_round_trip_shape_within_half_a_step(name, learned, state_dir, x):
    codec = get_codec(name, state_dir if learned else None)
    payload = codec.compress(x)
    y, _ = codec.decompress(payload)
    assert y.shape == x.shape and y.dtype == torch.float32
    _check_quantised(codec, x, payload, y)


@pytest.mark.parametrize("name", ["f16+pack", "f16+huffman", "f16+ans"])
@settings(max_examples=15, deadline=None)
@given(x=activation_bits())
def test_f16_codecs_equal_a_half_precision_cast(name, x):
    codec = get_codec(name)
    y, _ = codec.decompress(codec.compress(x))
    with np.errstate(over="ignore"):
        expected = torch.from_numpy(x.numpy().astype(np.float16).astype(np.float32))
    assert same_bits(torch.nan_to_num(expected, nan=7.0), torch.nan_to_num(y, nan=7.0))
    assert torch.equal(torch.isnan(y), torch.isnan(x))


@pytest.mark.parametrize("q", QUANTISERS)
def test_uncalibrated_quantisers_cover_each_channels_range(q):
    x = torch.from_numpy(laplacian_activations(1, 80, 6, seed=1)[0][None])
    codec = get_codec(q)
    y, _ = codec.decompress(codec.compress(x))
    step = (x.amax(dim=(0, 1)) - x.amin(dim=(0, 1))) / (codec.transform.levels - 1)
    assert torch.all((x - y).abs() <= step * 0.5 * (1 + 1e-5) + 1e-6)


def test_zero_is_reconstructed_exactly_when_the_range_straddles_it():
    x = torch.tensor([[[-0.37, 0.0, 1.91], [0.0, 0.0, 0.0], [2.5, -0.1, 0.0]]])
    for q in QUANTISERS:
        y, _ = get_codec(q).decompress(get_codec(q).compress(x))
        assert torch.all(y[x == 0] == 0), q


def test_nan_and_infinity_are_coded_as_zero_and_the_bounds(state_dir):
    codec = get_codec("q8", state_dir)
    x = torch.zeros(1, 3, CHANNELS)
    x[0, 0] = float("nan")
    x[0, 1] = float("inf")
    x[0, 2] = -float("inf")
    y, _ = codec.decompress(codec.compress(x))
    lo, hi = codec.transform.bounds({}, CHANNELS)
    assert torch.all(y[0, 0].abs() <= torch.from_numpy(hi - lo) / 255)
    assert torch.all(y[0, 1] >= torch.from_numpy(hi) - torch.from_numpy(hi - lo) / 255)
    assert torch.all(y[0, 2] <= torch.from_numpy(lo) + torch.from_numpy(hi - lo) / 255)


def test_a_constant_channel_survives_quantisation():
    x = torch.full((1, 10, 3), 4.25)
    y, _ = get_codec("q2").decompress(get_codec("q2").compress(x))
    assert torch.equal(x, y)


def test_calibrated_payloads_carry_only_a_state_tag(state_dir):
    x = torch.from_numpy(laplacian_activations(1, 40, CHANNELS, seed=9)[0][None])
    calibrated = read_header(get_codec("q8+ans", state_dir).compress(x))
    own = read_header(get_codec("q8+ans").compress(x))
    assert calibrated.params == b"" and calibrated.state_tag is not None and calibrated.size == 14
    assert len(own.params) == 8 * CHANNELS and own.state_tag is None


def test_fewer_bits_clip_harder_when_calibrated():
    x = np.concatenate(laplacian_activations(4, 200, 4, seed=3))
    ranges = {}
    for q in QUANTISERS:
        state = get_codec(q).transform.fit_state([x])
        ranges[q] = float(np.mean(state["hi"] - state["lo"]))
    assert ranges["q2"] < ranges["q4"] <= ranges["q8"]


@pytest.mark.parametrize("name", ["q8+ans", "q4+huffman"])
def test_payloads_need_the_state_they_were_calibrated_with(name, state_dir, tmp_path):
    x = torch.from_numpy(laplacian_activations(1, 30, CHANNELS, seed=4)[0][None])
    payload = get_codec(name, state_dir).compress(x)
    with pytest.raises(CodecError, match="state"):
        get_codec(name).decompress(payload)
    calibrate(name, laplacian_activations(2, 50, CHANNELS, seed=99), tmp_path)
    with pytest.raises(CodecError, match="different"):
        get_codec(name, tmp_path).decompress(payload)


def test_a_calibrated_quantiser_refuses_another_channel_count(state_dir):
    with pytest.raises(CodecError, match="channels"):
        get_codec("q8", state_dir).compress(torch.zeros(1, 4, CHANNELS + 1))


@settings(max_examples=10, deadline=None)
@given(st.sampled_from(QUANTISERS), activation_values(max_c=6))
def test_quantiser_codes_fit_their_alphabet(q, x):
    sym = get_codec(q).transform.forward(x.numpy())
    assert sym.data.dtype == np.uint8 and sym.data.shape == tuple(x.shape)
    assert sym.data.size == 0 or int(sym.data.max()) < sym.alphabet == 2 ** int(q[1:])
