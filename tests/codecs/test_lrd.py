"""The rate-distortion codec ``lrd+ans``: its learned prior's tables, the exact round trip
of the latents, the rate estimate against real payloads, and hostile payloads.

The codec here is *untrained* (random weights, its prior's tables derived from the
untrained density, :func:`tests.codecs.synthetic.untrained_lrd_dir`): the format, the
coder and the bounds do not depend on training."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from splitasr.audio import load_audio
from splitasr.codecs import CodecError, DecodeLimits, get_codec
from splitasr.codecs.base import Codec, Header, ParamWriter, pack_payload
from splitasr.codecs.entropy import PRIOR_TOTAL, ChannelPrior, quantise_pmf
from splitasr.codecs.rd import Lrd, LrdConfig, LrdNet, lrd_to_state, prior_tables
from splitasr.codecs.state import load_state
from tests.codecs.synthetic import laplacian_activations, untrained_lrd_dir


@pytest.fixture(scope="module")
def codec():
    return get_codec("lrd+ans", untrained_lrd_dir(256))


@pytest.fixture(scope="module")
def stem(whisper, speech_dir) -> torch.Tensor:
    """Real Whisper ``stem`` activations of two synthesised utterances, ``(1, T, 384)`` each."""
    out = []
    for name in ("hello", "digits"):
        wave = torch.from_numpy(load_audio(speech_dir / f"{name}.wav"))[None]
        with torch.inference_mode():
            x, _ = whisper.head(wave, None, "stem")
        out.append(x)
    return out


def test_quantised_tables_are_golden():
    """Pure float64 numpy, fixed order: the same integers on every machine."""
    assert quantise_pmf(np.array([0.5, 0.25, 0.125, 0.125])).tolist() == [32767, 16384, 8193, 8192]
    f = quantise_pmf(np.array([1.0, 0.0, 0.0]))  # a degenerate pmf still codes every symbol
    assert f.tolist() == [65280, 255, 1] and f.sum() == PRIOR_TOTAL


def test_encoder_and_decoder_derive_identical_tables():
    torch.manual_seed(1)
    net = LrdNet(LrdConfig(in_dim=32, latent_dim=8, hidden=16))
    a, b = prior_tables(net.prior), prior_tables(net.prior)
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert (a["freqs"].sum(1) == PRIOR_TOTAL).all() and (a["freqs"][:, : a["sizes"].min()] >= 1).all()
    # both ends build their prior from the stored tables, not from the network
    state = lrd_to_state(net)
    for k in a:
        assert np.array_equal(state[f"prior.{k}"], a[k])
    enc, dec = get_codec("lrd+ans", untrained_lrd_dir(256)), get_codec("lrd+ans", untrained_lrd_dir(256))
    assert np.array_equal(enc.transform.prior.freqs, dec.transform.prior.freqs)
    stored = load_state(untrained_lrd_dir(256), "lrd")
    assert np.array_equal(enc.transform.prior.freqs, stored["prior.freqs"])
    assert enc.coder._prior is enc.transform.prior  # ans codes with the transform's prior


def test_round_trip_gives_the_quantised_latents_exactly(codec):
    x = torch.from_numpy(np.stack(laplacian_activations(2, 40, 256, seed=5)))
    sym = codec.transform.forward(x.numpy())
    payload = codec.compress(x)
    header = codec.read_header(payload)
    body = payload[header.size :]
    shape, alphabet = codec.transform.symbol_layout({}, header.shape)
    decoded = codec.coder.decode(body, shape, alphabet)
    assert decoded.shape == (2, 20, 16) and np.array_equal(decoded, sym.data)
    y, lens = codec.decompress(payload)
    with torch.inference_mode():
        expect = codec.transform.net.decode(torch.from_numpy(codec.transform.dequantise(sym.data)), 40)
    assert torch.equal(y, expect) and lens.tolist() == [40, 40]


def test_estimated_rate_matches_the_payload_body_on_real_activations(stem):
    """Untrained lrd (random weights, seed 0) on Whisper stem activations of real speech."""
    codec = get_codec("lrd+ans", untrained_lrd_dir(384, 32))
    for x in stem:
        sym = codec.transform.forward(x.numpy()).data
        payload = codec.compress(x)
        body = len(payload) - codec.read_header(payload).size
        table_bits = codec.transform.prior.bits(sym)
        with torch.no_grad():  # the training-time estimate: the continuous density
            q = torch.from_numpy(codec.transform.dequantise(sym))
            model_bits = float(codec.transform.net.prior.bits(q))
        assert body > 500
        assert abs(body * 8 / table_bits - 1) < 0.02, (body, table_bits / 8)
        assert abs(body * 8 / model_bits - 1) < 0.02, (body, model_bits / 8)


def test_hostile_payloads_are_refused(codec):
    x = torch.from_numpy(laplacian_activations(1, 30, 256, seed=2)[0][None])
    payload = codec.compress(x)
    h = codec.read_header(payload)
    body = payload[h.size :]

    def craft(shape=(1, 30, 256), body=body):
        return pack_payload(Header("lrd+ans", shape, (shape[1],) * shape[0]), body, codec.state_hash)

    limits = DecodeLimits.for_point(50, 256, 120)
    cases = {
        "truncated": (payload[:-4], limits, "CRC|truncated|corrupt"),
        "huge T": (craft((1, limits.max_frames + 1, 256)), limits, "frames per item"),
        "huge C": (craft((1, 30, 100_000)), DecodeLimits(max_values=2**40), "decodes to 256"),
        "short body for T": (craft((1, 6000, 256)), limits, "too short"),
        "bad symbols": (craft(body=bytes(len(body))), limits, "ANS"),
        "odd body": (craft(body=body[:-1]), limits, "32-bit words"),
    }
    for name, (bad, lim, message) in cases.items():
        with pytest.raises(CodecError, match=message):
            codec.decompress(bad, lim)
        assert name


def test_a_bad_prior_table_is_refused():
    assert ChannelPrior(np.array([[PRIOR_TOTAL - 256, 256, 0]]), np.array([2])).channels == 1
    with pytest.raises(CodecError, match="sum"):
        ChannelPrior(np.array([[100, 1, 0]]), np.array([2]))
    with pytest.raises(CodecError, match="out of range"):
        ChannelPrior(np.array([[PRIOR_TOTAL - 1, 1, 0]]), np.array([2]))  # 0.00002 bits a symbol


def test_lrd_without_state_says_how_to_train_it():
    with pytest.raises(CodecError, match="train-codec"):
        get_codec("lrd+ans")


def test_one_state_serves_several_rates_and_payloads_say_theirs():
    """Gain units: an untrained 3-rate lrd; its initial gains already order the rates."""
    base = get_codec("lrd+ans", untrained_lrd_dir(256, rates=3))
    x = 20 * torch.from_numpy(np.stack(laplacian_activations(1, 60, 256, seed=7)))  # latents >> 1
    sizes = []
    for rate in (0.0, 1.0, 1.5, 2.0):
        enc = Codec(base.transform.at_rate(rate), base.coder)
        payload = enc.compress(x)
        sizes.append(len(payload))
        y, _ = base.decompress(payload)  # the default-rate decoder reads the payload's rate
        sym = enc.transform.forward(x.numpy()).data
        with torch.inference_mode():
            q = torch.from_numpy(base.transform.dequantise(sym))
            assert torch.equal(y, base.transform.net.decode(q, 60, rate))
    assert sizes == sorted(sizes) and sizes[0] < 0.9 * sizes[-1], sizes
    assert base.transform.rate == 2.0  # at_rate left the shared one alone
    with pytest.raises(CodecError, match="outside"):
        base.transform.at_rate(2.5)
    hostile = pack_payload(
        Header("lrd+ans", (1, 60, 256), (60,), ParamWriter().f32(7.5).bytes()), b"", base.state_hash
    )
    with pytest.raises(CodecError, match="rate 7.5"):
        base.decompress(hostile)


def test_names_pick_the_rate(tmp_path):
    from splitasr.codecs.state import save_state

    d = untrained_lrd_dir(256, rates=3)
    assert get_codec("lrd@1+ans", d).transform.rate == 1.0
    assert get_codec("lrd@0.25+ans", d).name == "lrd+ans"  # the payload names the transform alone
    with pytest.raises(CodecError, match="no measured rates"):
        get_codec("lrd@2k+ans", d)
    save_state(tmp_path, "lrd", {**load_state(d, "lrd"), "rate_kbps": [1.0, 2.0, 4.0]})
    assert get_codec("lrd@2k+ans", tmp_path).transform.rate == 1.0
    assert abs(get_codec("lrd@2.83k+ans", tmp_path).transform.rate - 1.5) < 0.01
    assert get_codec("lrd@9k+ans", tmp_path).transform.rate == 2.0  # clamped to the finest
    for bad, message in (
        ("q8@2+ans", "only rate-distortion"),
        ("lrd@fast+ans", "rate position"),
        ("lrd@+ans", "only"),
    ):
        with pytest.raises(CodecError, match=message):
            get_codec(bad, d)


@pytest.fixture(scope="module")
def hyper():
    return get_codec("lrd+ans", untrained_lrd_dir(256, hyper_classes=8))


def test_hyperprior_payloads_carry_each_frames_class_and_round_trip_exactly(hyper):
    x = torch.from_numpy(np.stack(laplacian_activations(2, 40, 256, seed=5))) * 3
    sym = hyper.transform.forward(x.numpy())
    assert sym.data.shape == (2, 20, 17)  # 16 channels + the frame's class
    classes = sym.data[..., -1]
    assert classes.max() < 8 and len(np.unique(classes)) > 1
    expect_classes = hyper.transform.frame_classes(hyper.transform.latent(x.numpy()))
    assert np.array_equal(classes, expect_classes)
    payload = hyper.compress(x)
    header = hyper.read_header(payload)
    shape, alphabet = hyper.transform.symbol_layout({}, header.shape)
    assert shape == (2, 20, 17)
    assert np.array_equal(hyper.coder.decode(payload[header.size :], shape, alphabet), sym.data)
    y, _ = hyper.decompress(payload)
    with torch.inference_mode():
        q = torch.from_numpy(hyper.transform.dequantise(sym.data))
        assert torch.equal(y, hyper.transform.net.decode(q, 40))
    # the latent comes back as round(y - mean[class]) + mean[class]
    lat = hyper.transform.latent(x.numpy())
    mean = hyper.transform.tables["mean"][classes]
    assert np.allclose(hyper.transform.dequantise(sym.data), np.round(lat - mean) + mean, atol=1e-5)


def test_hyperprior_rate_estimate_matches_the_body_side_information_included(stem):
    from splitasr.codecs.rd_net import gaussian_bits

    codec = get_codec("lrd+ans", untrained_lrd_dir(384, 32, hyper_classes=4))
    net = codec.transform.net
    for x in stem:
        sym = codec.transform.forward(x.numpy()).data
        payload = codec.compress(x)
        body = len(payload) - codec.read_header(payload).size
        table_bits = codec.transform.prior.bits(sym)
        with torch.no_grad():  # the training-time estimate at the coded values
            k = torch.from_numpy(sym[..., -1].astype(np.float32))
            mean, sigma = net.class_params(k)
            q = torch.from_numpy(codec.transform.dequantise(sym))
            model_bits = float(gaussian_bits(q - mean, sigma).sum() + net.prior_z.bits(k[..., None]))
        assert body > 200
        assert 0 <= body - table_bits / 8 <= 8, (body, table_bits / 8)  # + ANS's final state
        assert abs(table_bits / model_bits - 1) < 0.02, (table_bits, model_bits)


def test_hyperprior_hostile_payloads_and_tables_are_refused(hyper):
    from splitasr.codecs.entropy import ConditionalPrior

    x = torch.from_numpy(laplacian_activations(1, 30, 256, seed=2)[0][None])
    payload = hyper.compress(x)
    body = payload[hyper.read_header(payload).size :]

    def craft(shape=(1, 30, 256), body=body):
        return pack_payload(Header("lrd+ans", shape, (shape[1],) * shape[0]), body, hyper.state_hash)

    limits = DecodeLimits.for_point(50, 256, 120)
    for bad, message in (
        (craft((1, 6000, 256)), "too short"),
        (craft(body=bytes(len(body))), "ANS"),
        (craft(body=body[:-1]), "32-bit words"),
    ):
        with pytest.raises(CodecError, match=message):
            hyper.decompress(bad, limits)
    sym = hyper.transform.forward(x.numpy()).data.copy()
    sym[0, 0, -1] = 8  # a class the tables do not have
    with pytest.raises(CodecError, match="classes outside"):
        hyper.transform.prior.encode(sym)
    with pytest.raises(CodecError, match="frame class outside"):
        hyper.transform.inverse(sym, {}, (1, 30, 256))
    good = hyper.transform.prior
    with pytest.raises(CodecError, match="sum"):
        ConditionalPrior(good.class_freqs - 1, good.freqs, good.sizes)
    with pytest.raises(CodecError, match="one size per channel"):
        ConditionalPrior(good.class_freqs, good.freqs[:, :3], good.sizes)
    with pytest.raises(CodecError, match="one size per channel"):  # no channels
        ConditionalPrior(good.class_freqs, good.freqs[:, :0], good.sizes[:0])
    with pytest.raises(CodecError, match="integers"):
        ConditionalPrior(good.class_freqs, good.freqs.astype(np.float64), good.sizes)
    state = load_state(untrained_lrd_dir(256, hyper_classes=8), "lrd")
    del state["hyper.mean"]
    with pytest.raises(CodecError, match="no prior table"):
        Lrd(state)


def _random_conditional_prior(classes: int, channels: int, rng: np.random.Generator):
    from splitasr.codecs.entropy import ConditionalPrior

    sizes = rng.integers(2, 40, channels)
    freqs = np.zeros((classes, channels, int(sizes.max())), np.int64)
    for k in range(classes):
        for c in range(channels):  # peaked and flat tables alike
            freqs[k, c, : sizes[c]] = quantise_pmf(rng.dirichlet(np.full(sizes[c], rng.choice([0.05, 1.0]))))
    return ConditionalPrior(quantise_pmf(rng.dirichlet(np.ones(classes))), freqs, sizes)


@settings(max_examples=40, deadline=None)
@given(
    classes=st.sampled_from([2, 3, 17, 64]),
    channels=st.integers(1, 5),
    frames=st.sampled_from([0, 1, 2, 9, 200]),
    used=st.integers(1, 64),
    seed=st.integers(0, 2**31),
)
def test_hyperprior_tables_round_trip_any_symbols_empty_inputs_and_unused_classes_included(
    classes, channels, frames, used, seed
):
    """ConditionalPrior: decode(encode(s)) == s for random tables and symbols, with no
    frames, with classes no frame has (only the first ``used`` occur), K = 2 .. 64; the
    body is within the ANS stack's final state of the tables' ideal code length."""
    rng = np.random.default_rng(seed)
    prior = _random_conditional_prior(classes, channels, rng)
    cls = rng.integers(0, min(used, classes), (2, frames))
    y = (rng.random((2, frames, channels)) * prior.sizes).astype(np.int64)
    sym = np.concatenate([y, cls[..., None]], axis=-1).astype(np.uint8)
    body = prior.encode(sym)
    out = prior.decode(body, sym.shape)
    assert out.shape == sym.shape and np.array_equal(out, sym)
    assert 0 <= len(body) - prior.bits(sym) / 8 <= 8
    if frames == 0:
        assert len(body) == 4  # the stack's first word alone


def test_hyperprior_decode_is_bounded_by_the_body_before_it_allocates():
    """Hostile shapes against a 100-byte body: refused by the body-size bound, with no
    allocation proportional to the claimed frames, even where the frame count would wrap
    an int64 (the product is taken exactly)."""
    import tracemalloc

    from splitasr.codecs.entropy import ANS_START

    prior = _random_conditional_prior(2, 1, np.random.default_rng(0))
    body = np.random.default_rng(1).integers(1, 2**32, 25, dtype=np.uint64).astype("<u4").tobytes()
    tracemalloc.start()
    try:
        for shape in [(1, 10**7, 2), (2**40, 2**30, 2), (2**32, 2**32, 2)]:
            with pytest.raises(CodecError, match="too short"):
                prior.decode(body, shape)
            with pytest.raises(CodecError, match="too short"):  # a valid empty stack: the same
                prior.decode(np.array([ANS_START], "<u4").tobytes(), shape)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20, peak
    with pytest.raises(CodecError, match="negative"):
        prior.decode(body, (-1, 2))


@pytest.mark.filterwarnings("error")
def test_hyperprior_classes_match_the_training_rounding_and_saturate_without_overflow(hyper):
    """The device's numpy class (``frame_classes``) is the class training rounded
    (``round(LrdNet.class_value)``) on the same latents; huge latents give class 0 or K-1
    with no overflow warning, and a non-finite latent is refused, not cast to a class."""
    t = hyper.transform
    rng = np.random.default_rng(3)
    y = (rng.standard_normal((4, 2000, 16)) * rng.uniform(0.1, 30, (4, 1, 1))).astype(np.float32)
    with torch.no_grad():
        expect = t.net.class_value(torch.from_numpy(y)).round()[..., 0].numpy().astype(np.int64)
    got = t.frame_classes(y)
    assert np.array_equal(got, expect) and len(np.unique(got)) == 8
    big = t.frame_classes(y * 1e6)
    assert set(np.unique(big)) <= {0, 7}
    y[1, 5, 3] = np.nan
    with pytest.raises(CodecError, match="NaN"):
        t.quantise(y)


@pytest.mark.parametrize("blocks", [2, 4])
def test_the_cloud_decoder_is_stored_as_float16_and_the_symbols_do_not_move(blocks):
    """``lrd_to_state`` halves the cloud decoder (``up``, ``dec_more``, ``dec``) and keeps
    the device encoder, gains, class MLP and tables float32: the symbols are the float32
    net's exactly and the reconstruction moves by well under 1 % of its scale."""
    from splitasr.codecs.rd_net import lrd_net_from_state

    torch.manual_seed(0)
    cfg = LrdConfig(
        point="stem", in_dim=24, latent_dim=4, enc_hidden=8, hidden=16, rates=3, dec_blocks=blocks
    )
    net = LrdNet(cfg).eval()
    state = lrd_to_state(net)
    halves = {k for k, v in state.items() if isinstance(v, np.ndarray) and v.dtype == np.float16}
    assert halves and all(k.startswith(("w.up.", "w.dec.", "w.dec_more.")) for k in halves)
    assert sum(k.startswith("w.dec_more.") for k in halves) == 4 * (blocks - 2)  # 2 convs x (w, b) a block
    assert state["w.enc1.weight"].dtype == np.float32 and state["w.log_gain"].dtype == np.float32
    back = lrd_net_from_state(state)
    assert back.dec[3].weight.dtype == torch.float32
    x = torch.randn(1, 40, 24)
    with torch.no_grad():
        q = torch.round(net.encode(x, 1.0))
        assert torch.equal(torch.round(back.encode(x, 1.0)), q)
        want, got = net.decode(q, 40, 1.0), back.decode(q, 40, 1.0)
    assert float((got - want).abs().max() / want.abs().max()) < 1e-2
    with torch.no_grad():
        net.dec[3].weight[0, 0, 0] = 7e4  # beyond float16: refused, not stored as inf
    with pytest.raises(CodecError, match="w.dec.3.weight does not fit float16"):
        lrd_to_state(net)
