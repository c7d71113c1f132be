"""Paper 002's offloading baselines (``intp*``, ``cs*``, ``dct*``) and the audio codecs.

Relative MSE ``||x - x_hat||^2 / ||x - mean x||^2`` on :func:`smooth_activation` (N=2,
T=200, C=64), measured when these tests were written (bytes: whole ``+zstd`` payload, the
raw float32 activation is 102400 bytes):

=========  ========  ======
codec      rel. MSE  bytes
=========  ========  ======
intp2      3.6e-4    12561
intp4      4.3e-3    6638
intp8      5.3e-2    3576
cs4        2.3e-1    6005
cs8        1.07      3068
dct75      9.3e-4    3990
dct50      2.1e-3    2901
dct25      5.4e-3    2108
=========  ========  ======

(``dct75/50/25+huffman``: 3489, 2543, 1841 bytes with the order-0 coder of ``entropy.py``.)
CS is poor here because each frame needs about 7 DCT coefficients along the channels,
more than 8 or 16 measurements can recover (cs8 does worse than sending nothing); on
exactly 2-sparse frames cs4 reaches 5e-4.
"""

from __future__ import annotations

import shutil
import zlib

import numpy as np
import pytest
import scipy.fft
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from splitasr.codecs import CodecError, get_codec
from splitasr.codecs.audio_codecs import frame_packets, unframe_packets
from splitasr.codecs.base import Header, pack_payload, unpack_payload
from splitasr.codecs.baselines import JPEG_LUMA, interp_time, jpeg_table, pool_time, zigzag_order

ACTIVATION_CODECS = ["intp2", "intp4", "intp8", "cs4", "cs8", "dct25", "dct50", "dct75"]
AUDIO_CODECS = ["pcm16", "flac", "opus6", "opus12", "opus24"]


def smooth_activation(n: int = 2, t: int = 200, c: int = 64, seed: int = 0) -> np.ndarray:
    """``(n, t, c)`` float32: six plane waves of low frequency in time and channel, plus 1 % noise."""
    rng = np.random.default_rng(seed)
    tt, cc = np.arange(t)[:, None], np.arange(c)[None, :]
    x = np.zeros((n, t, c))
    for i in range(n):
        for _ in range(6):
            ft, fc = rng.uniform(0, 0.04, size=2)
            x[i] += rng.normal() * np.cos(2 * np.pi * (ft * tt + fc * cc) + rng.uniform(0, 2 * np.pi))
    x += 0.01 * x.std() * rng.normal(size=x.shape)
    return x.astype(np.float32)


def rel_mse(x: np.ndarray, y: np.ndarray) -> float:
    return float(np.sum((x - y) ** 2) / np.sum((x - x.mean()) ** 2))


def round_trip(name: str, x: np.ndarray) -> tuple[np.ndarray, bytes]:
    codec = get_codec(name)
    payload = codec.compress(torch.from_numpy(x))
    y, lens = codec.decompress(payload)
    assert lens.tolist() == [x.shape[1]] * x.shape[0]
    return y.numpy(), payload


# ---------------------------------------------------------------- shapes and dtypes


@settings(max_examples=30, deadline=None)
@given(
    name=st.sampled_from(ACTIVATION_CODECS),
    coder=st.sampled_from(["pack", "zstd"]),
    n=st.integers(1, 3),
    t=st.integers(0, 19),
    c=st.integers(1, 19),
    seed=st.integers(0, 2**16),
)
def test_activation_baselines_round_trip_awkward_shapes(name, coder, n, t, c, seed):
    x = (np.random.default_rng(seed).standard_normal((n, t, c)) * 3).astype(np.float32)
    y, _ = round_trip(f"{name}+{coder}", x)
    assert y.shape == x.shape and y.dtype == np.float32
    assert np.isfinite(y).all()


@pytest.mark.parametrize("name", ACTIVATION_CODECS)
def test_activation_baselines_are_lossy_and_keep_constants(name):
    assert get_codec(name).lossless is False
    cs = name.startswith("cs")  # CS needs C // r measurements to find even the one DC coefficient
    x = np.full((2, 11, 32 if cs else 5), 0.75, np.float32)
    y, _ = round_trip(name, x)
    np.testing.assert_allclose(y, x, atol=0.03 if cs else 1e-3)


@settings(max_examples=15, deadline=None)
@given(
    name=st.sampled_from(AUDIO_CODECS), n=st.integers(1, 2), s=st.integers(0, 700), seed=st.integers(0, 99)
)
def test_audio_codecs_round_trip_awkward_shapes(name, n, s, seed):
    x = np.random.default_rng(seed).uniform(-0.5, 0.5, (n, s, 1)).astype(np.float32)
    y, _ = round_trip(name, x)
    assert y.shape == x.shape and y.dtype == np.float32


# ---------------------------------------------------------------- rate and distortion


@pytest.mark.parametrize("family", [["intp2", "intp4", "intp8"], ["cs4", "cs8"], ["dct75", "dct50", "dct25"]])
def test_error_grows_as_the_rate_falls(family):
    x = smooth_activation()
    errors, sizes = [], []
    for name in family:
        y, payload = round_trip(f"{name}+zstd", x)
        errors.append(rel_mse(x, y))
        sizes.append(len(payload))
    assert errors == sorted(errors) and len(set(errors)) == len(errors), errors
    assert sizes == sorted(sizes, reverse=True), sizes
    assert max(sizes) < x.nbytes / 4
    assert errors[0] < (0.4 if family[0] == "cs4" else 0.01)


def test_cs_recovers_sparse_frames_far_better_than_dense_ones():
    rng = np.random.default_rng(1)
    n, t, c = 2, 100, 64
    coef = np.zeros((n * t, c))
    for row in coef:
        row[rng.choice(c, 2, replace=False)] = rng.normal(size=2)
    sparse = scipy.fft.idct(coef, norm="ortho", axis=1).reshape(n, t, c).astype(np.float32)
    dense = rng.normal(size=(n, t, c)).astype(np.float32)
    e_sparse = rel_mse(sparse, round_trip("cs4", sparse)[0])
    e_dense = rel_mse(dense, round_trip("cs4", dense)[0])
    assert e_sparse < 0.15 and e_dense > 0.5, (e_sparse, e_dense)


def test_intp_pools_by_block_average_and_interpolates_between_centres():
    x = np.arange(10, dtype=np.float64).reshape(1, 10, 1)
    pooled, centres = pool_time(x, 4)
    np.testing.assert_allclose(pooled[0, :, 0], [1.5, 5.5, 8.5])
    np.testing.assert_allclose(centres, [1.5, 5.5, 8.5])
    np.testing.assert_allclose(interp_time(pooled, centres, 10)[0, :, 0], [1.5, 1.5, *range(2, 9), 8.5])


def test_jpeg_tables_and_zigzag_follow_the_standard():
    np.testing.assert_array_equal(jpeg_table(50), JPEG_LUMA)
    assert (jpeg_table(25) >= jpeg_table(50)).all() and (jpeg_table(75) <= jpeg_table(50)).all()
    assert zigzag_order()[:10].tolist() == [0, 1, 8, 16, 9, 2, 3, 10, 17, 24]
    assert sorted(zigzag_order().tolist()) == list(range(64))


# ---------------------------------------------------------------- audio codecs


def test_pcm16_error_is_at_most_one_lsb():
    x = np.random.default_rng(0).uniform(-1, 1, (2, 4000, 1)).astype(np.float32)
    x[0, :3, 0] = [-1.0, 1.0, 0.0]
    y, payload = round_trip("pcm16", x)
    assert np.abs(y - x).max() <= 1 / 32768
    assert len(payload) < 2 * x.size + 200


def test_flac_is_lossless_on_16_bit_input_and_smaller_than_pcm():
    rng = np.random.default_rng(0)
    t = np.arange(16000) / 16000
    wave = 0.3 * np.sin(2 * np.pi * 220 * t) + 0.001 * rng.normal(size=t.size)
    x = (np.round(np.stack([wave, wave[::-1]]) * 32768) / 32768).astype(np.float32)[:, :, None]
    x[1, -1, 0] = -1.0
    y, payload = round_trip("flac", x)
    np.testing.assert_array_equal(y, x)
    assert len(payload) < len(round_trip("pcm16", x)[1]) / 2


@pytest.fixture(scope="module")
def utterance() -> np.ndarray:
    """About 4 s of espeak-ng speech at 16 kHz."""
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed")
    from splitasr.corpus.tts import Speaker, render

    text = "the quick brown fox jumps over the lazy dog near the river bank"
    return render(text, Speaker("espeak-ng", "en-us", "m3", rate=160, pitch=50))


@pytest.mark.parametrize("name,kbps", [("opus6", 6), ("opus12", 12), ("opus24", 24)])
def test_opus_meets_its_bit_rate_and_keeps_length_and_alignment(utterance, name, kbps):
    pytest.importorskip("av")
    x = utterance[None, :, None]
    y, payload = round_trip(name, x)
    assert y.shape == x.shape
    rate = len(payload) * 8 / (x.shape[1] / 16000) / 1000
    assert 0.75 * kbps <= rate <= 1.25 * kbps, rate
    a, b = x[0, 400:-400, 0], y[0, :, 0]
    lags = range(-20, 21)
    corr = [float(np.dot(a, b[400 + lag : 400 + lag + a.size])) for lag in lags]
    assert abs(lags[int(np.argmax(corr))]) <= 2  # pre-skip compensated


def test_opus_packet_framing_round_trips_long_packets():
    packets = [b"", b"a" * 127, b"b" * 128, bytes(range(256)) * 5]
    assert unframe_packets(frame_packets(packets)) == packets
    with pytest.raises(CodecError):
        unframe_packets(frame_packets(packets)[:-1])


def test_audio_codecs_refuse_multichannel_and_non_finite_input():
    with pytest.raises(CodecError):
        get_codec("flac").compress(torch.zeros(1, 100, 2))
    with pytest.raises(CodecError):
        get_codec("pcm16").compress(torch.full((1, 10, 1), float("nan")))
    with pytest.raises(CodecError):
        get_codec("dct50").compress(torch.full((1, 10, 3), float("inf")))


# ---------------------------------------------------------------- corrupt payloads


@pytest.mark.parametrize("name", ACTIVATION_CODECS + AUDIO_CODECS)
def test_random_and_truncated_payloads_raise_codec_error(name):
    if name.startswith("opus"):
        pytest.importorskip("av")
    codec = get_codec(name)
    rng = np.random.default_rng(zlib.crc32(name.encode()))
    shape = (1, 800, 1) if name in AUDIO_CODECS else (2, 13, 9)
    payload = codec.compress(torch.from_numpy(rng.uniform(-0.5, 0.5, shape).astype(np.float32)))
    for bad in (b"", rng.bytes(64), payload[: len(payload) // 2], payload[:-1], payload + b"\0"):
        with pytest.raises(CodecError):
            codec.decompress(bad)
    header, body = unpack_payload(payload)
    for bad_body in (body[:-1], body + b"\x01"):  # a valid CRC over a body of the wrong length
        with pytest.raises(CodecError):
            codec.decompress(pack_payload(header, bad_body))


@pytest.mark.parametrize(
    "name,params",
    [
        ("intp4", b"!!"),
        ("intp4", bytes(4 * 9 - 2)),
        ("intp4", np.full(18, np.inf, "<f2").tobytes()),
        ("cs4", b"x"),
        ("cs4", np.array([np.nan, 1.0], "<f4").tobytes()),
        ("dct50", b""),
        ("dct50", np.zeros(2, "<f4").tobytes() + b"\xff\xff\xff\xff\x0f"),
        ("flac", b"\x80"),
        ("flac", b"\xff\xff\xff\xff\x0f"),
        ("opus12", b"\x0a\xff\xff\x03"),
    ],
)
def test_bad_parameters_raise_codec_error(name, params):
    if name.startswith("opus"):
        pytest.importorskip("av")
    codec = get_codec(name)
    shape = (1, 800, 1) if name in AUDIO_CODECS else (2, 13, 9)
    header, body = unpack_payload(codec.compress(torch.zeros(shape)))
    with pytest.raises(CodecError):
        codec.decompress(pack_payload(Header(header.codec, header.shape, header.lens, params), body))


def test_garbage_flac_body_raises_codec_error():
    codec = get_codec("flac")
    header, body = unpack_payload(codec.compress(torch.zeros(1, 800, 1)))
    garbage = np.random.default_rng(0).bytes(len(body))
    with pytest.raises(CodecError):
        codec.decompress(pack_payload(header, garbage))


def test_corrupt_dct_block_lengths_raise_codec_error():
    codec = get_codec("dct50+pack")
    x = smooth_activation(1, 16, 16)
    header, body = unpack_payload(codec.compress(torch.from_numpy(x)))
    sym = np.frombuffer(body, "<u2").copy()
    for bad in (65, int(sym[0]) + 1 if sym[0] < 64 else int(sym[0]) - 1):
        sym2 = sym.copy()
        sym2[0] = bad
        with pytest.raises(CodecError):
            codec.decompress(pack_payload(header, sym2.tobytes()))
