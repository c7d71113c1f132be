"""A tiny rate-distortion training run through the frozen Whisper: the loss falls, the
state loads as a codec, and a second run continues from the checkpoint."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch

from splitasr.codecs import get_codec
from splitasr.codecs.rd import LrdConfig
from splitasr.errors import ConfigError
from splitasr.training.rd_train import (
    CHECKPOINT,
    LOG,
    OutlierGuard,
    RdTrainConfig,
    train_rd,
    utterance_weights,
)


def _cfg(manifest, out, steps: int) -> RdTrainConfig:
    return RdTrainConfig(
        codec=LrdConfig(point="stem", in_dim=384, latent_dim=8, enc_hidden=16, hidden=32),
        model="whisper-tiny.en",
        train=[str(manifest)],
        out=str(out),
        steps=steps,
        utts_per_step=2,
        lr=3e-3,
        lmbda=1.0,
        log_every=1,
        checkpoint_every=4,
        cache_dir=str(out / "cache"),
        threads=1,
    )


def test_a_tiny_run_lowers_the_loss_writes_a_codec_and_resumes(whisper, speech_manifest, tmp_path):
    torch.set_num_threads(1)
    report = train_rd(_cfg(speech_manifest, tmp_path, 12), progress=False)
    rows = [json.loads(line) for line in (tmp_path / LOG).read_text().splitlines()]
    assert [r["step"] for r in rows] == list(range(1, 13))
    first, last = sum(r["loss"] for r in rows[:3]) / 3, sum(r["loss"] for r in rows[-3:]) / 3
    assert last < first, (first, last)
    assert 0 <= report["rate"][0]["overhead_bytes_per_payload"] <= 8  # ANS's final state: tiny bodies here
    assert (
        report["device"]["encoder_params"] < 500_000
        and report["device"]["encoder_share_of_model_macs"] < 0.01
    )
    codec = get_codec("lrd+ans", tmp_path)
    x = torch.randn(1, 50, 384)
    y, _ = codec.decompress(codec.compress(x))
    assert y.shape == (1, 50, 384)
    assert (tmp_path / f"{CHECKPOINT}.safetensors").is_file()
    report = train_rd(_cfg(speech_manifest, tmp_path, 14), progress=False)  # continues at step 12
    rows = [json.loads(line) for line in (tmp_path / LOG).read_text().splitlines()]
    assert report["steps"] == 14 and [r["step"] for r in rows[-2:]] == [13, 14]


def test_a_checkpoint_of_another_config_is_refused(whisper, speech_manifest, tmp_path):
    train_rd(_cfg(speech_manifest, tmp_path, 1), progress=False)
    cfg = _cfg(speech_manifest, tmp_path, 2)
    cfg.codec = LrdConfig(point="stem", in_dim=384, latent_dim=4, enc_hidden=16, hidden=32)
    with pytest.raises(ConfigError, match="another lrd config"):
        train_rd(cfg, progress=False)


def test_the_recipe_is_read_and_checked(tmp_path):
    cfg = RdTrainConfig.from_toml("configs/lrd-whisper-stem.toml")
    assert cfg.codec.point == "stem" and cfg.lmbda > 0
    bad = tmp_path / "bad.toml"
    bad.write_text('kind = "lrd"\nlambda = 3\n')
    with pytest.raises(ConfigError, match="unknown keys"):
        RdTrainConfig.from_toml(bad)


def test_a_multi_rate_run_needs_a_lambda_per_rate_and_reports_each(whisper, speech_manifest, tmp_path):
    cfg = _cfg(speech_manifest, tmp_path, 3)
    cfg.codec = LrdConfig(point="stem", in_dim=384, latent_dim=8, enc_hidden=16, hidden=32, rates=2)
    with pytest.raises(ConfigError, match="lmbdas"):
        train_rd(cfg, progress=False)
    cfg.lmbdas = [0.5, 4.0]
    report = train_rd(cfg, progress=False)
    assert [r["rate"] for r in report["rate"]] == [0, 1]
    assert report["rate"][0]["body_bytes"] <= report["rate"][1]["body_bytes"]


def test_an_outlier_loss_is_flagged_against_the_recent_median_and_a_lasting_shift_is_taken_in():
    guard = OutlierGuard(20.0, window=10, min_seen=5)
    assert not any(guard.is_outlier(v) for v in [30.0, 32.0, 31.0, 29.0, 33.0])
    assert guard.is_outlier(5000.0)  # the step-2770 kind of spike
    assert guard.is_outlier(float("nan")) and guard.is_outlier(float("inf"))
    assert not guard.is_outlier(600.0)  # 600 < 20 x median 31: the spike did not raise the median
    shifted = [guard.is_outlier(5000.0) for _ in range(10)]  # a new scale for good
    assert shifted[0] and not shifted[-1]  # skipped at first, then the window's median follows
    assert OutlierGuard(0.0, min_seen=1).is_outlier(1e9) is False  # factor 0: off (but not NaN-blind)
    assert OutlierGuard(0.0).is_outlier(float("nan"))


def test_the_learning_rates_drop_tenfold_at_lr_drop_step(whisper, speech_manifest, tmp_path):
    cfg = _cfg(speech_manifest, tmp_path, 3)
    cfg.lr_drop_step = 2
    train_rd(cfg, progress=False)
    rows = [json.loads(line) for line in (tmp_path / LOG).read_text().splitlines()]
    assert [r["lr"] for r in rows] == pytest.approx([3e-3, 3e-3, 3e-4])
    assert [r["skipped"] for r in rows] == [0, 0, 0]


def test_a_hyperprior_run_trains_its_class_tables_and_the_state_codes(whisper, speech_manifest, tmp_path):
    cfg = _cfg(speech_manifest, tmp_path, 6)
    cfg.codec = LrdConfig(point="stem", in_dim=384, latent_dim=8, enc_hidden=16, hidden=32, hyper_classes=4)
    report = train_rd(cfg, progress=False)
    (rate,) = report["rate"]
    assert 0 <= rate["overhead_bytes_per_payload"] <= 8  # body vs the tables' estimate, classes included
    codec = get_codec("lrd+ans", tmp_path)
    assert codec.transform.prior.classes == 4 and codec.transform.symbol_channels == 9
    # the device part counts the class MLP: 8 -> 16 -> 1
    plain = LrdConfig(point="stem", in_dim=384, latent_dim=8, enc_hidden=16, hidden=32)
    from splitasr.codecs.rd import LrdNet

    assert report["device"]["encoder_params"] == LrdNet(plain).encoder_parameters() + 8 * 16 + 16 + 16 + 1


def test_a_checkpoint_from_before_the_hyperprior_fields_still_resumes(tmp_path):
    """A checkpoint whose config predates ``hyper_classes``/``hyper_hidden`` (the runs in
    progress when they were added) is the same config: it resumes, weights and Adam
    moments included; a real difference is still refused."""
    from dataclasses import asdict

    from splitasr.codecs.rd import LrdNet
    from splitasr.codecs.state import load_state, save_state
    from splitasr.training.rd_train import _load_checkpoint, _save_checkpoint

    cfg = LrdConfig(point="stem", in_dim=24, latent_dim=4, enc_hidden=8, hidden=16)
    net = LrdNet(cfg)
    opt = torch.optim.Adam(net.parameters())
    net(torch.randn(1, 10, 24))[1].backward()  # the rate alone: the cloud decoder gets no gradient
    opt.step()
    _save_checkpoint(tmp_path, net, opt, 7, [])
    st = load_state(tmp_path, CHECKPOINT)
    old = {k: v for k, v in asdict(cfg).items() if not k.startswith("hyper_")}
    save_state(tmp_path, CHECKPOINT, {**st, "config": old})
    fresh = LrdNet(cfg)
    fresh_opt = torch.optim.Adam(fresh.parameters())
    assert _load_checkpoint(tmp_path, fresh, fresh_opt) == 7
    assert torch.equal(fresh.enc1.weight, net.enc1.weight)
    moments = {n: fresh_opt.state[p] for n, p in fresh.named_parameters() if p in fresh_opt.state}
    assert set(moments) == {n for n, p in net.named_parameters() if p in opt.state}  # no decoder
    for n, p in net.named_parameters():
        if n in moments:
            assert torch.equal(moments[n]["exp_avg_sq"], opt.state[p]["exp_avg_sq"]), n
    save_state(tmp_path, CHECKPOINT, {**st, "config": {**old, "hyper_classes": 4}})
    with pytest.raises(ConfigError, match="another lrd config"):
        _load_checkpoint(tmp_path, LrdNet(cfg), torch.optim.Adam(LrdNet(cfg).parameters()))


def test_a_second_stage_starts_from_another_runs_checkpoint_in_its_own_folder(
    whisper, speech_manifest, tmp_path, capsys
):
    train_rd(_cfg(speech_manifest, tmp_path / "one", 3), progress=False)
    cfg = _cfg(speech_manifest, tmp_path / "two", 5)
    cfg.init, cfg.mse_weight = str(tmp_path / "one"), 0.2
    report = train_rd(cfg, progress=False)
    rows = [json.loads(line) for line in (tmp_path / "two" / LOG).read_text().splitlines()]
    assert report["steps"] == 5 and [r["step"] for r in rows] == [4, 5]  # went on from step 3
    assert len((tmp_path / "one" / LOG).read_text().splitlines()) == 3  # stage one untouched
    # the same codec counts on from init's step: steps not past it is refused, not a 0-step run
    cfg = _cfg(speech_manifest, tmp_path / "short", 3)
    cfg.init = str(tmp_path / "one")
    with pytest.raises(ConfigError, match="stands at step 3 and steps = 3"):
        train_rd(cfg, progress=False)
    assert not (tmp_path / "short" / "lrd.safetensors").exists()
    # another codec config (a hyperprior added): warm start, from step 0, said in one line
    cfg = _cfg(speech_manifest, tmp_path / "hyper", 2)
    cfg.init, cfg.log_every = str(tmp_path / "one"), 10
    cfg.codec = LrdConfig(point="stem", in_dim=384, latent_dim=8, enc_hidden=16, hidden=32, hyper_classes=4)
    capsys.readouterr()
    assert train_rd(cfg, progress=True)["steps"] == 2
    parts = "new hyper_dec, hyper_enc, prior_z; grown nothing; dropped prior;"
    line = f"warm start from {tmp_path / 'one'}: {parts}"
    assert line in capsys.readouterr().out
    cfg = _cfg(speech_manifest, tmp_path / "three", 5)
    cfg.init = str(tmp_path / "nothing")
    with pytest.raises(ConfigError, match="no lrd-checkpoint"):
        train_rd(cfg, progress=False)


def test_a_stage_with_a_hyperprior_and_rates_added_keeps_the_weights_that_fit(tmp_path):
    """``warm_start``: the encoder and decoder of a single-rate factorised codec carry over
    into one with a hyperprior and three rates, whose middle rate then codes exactly as
    the old one did; a checkpoint for another encoder is refused."""
    from splitasr.codecs.rd import LrdNet
    from splitasr.training.rd_train import _save_checkpoint, warm_start

    old_cfg = LrdConfig(point="stem", in_dim=24, latent_dim=4, enc_hidden=8, hidden=16)
    old = LrdNet(old_cfg)
    with torch.no_grad():
        for p in old.parameters():
            p.add_(torch.randn_like(p))
        old.in_std.fill_(2.0)
    _save_checkpoint(tmp_path, old, torch.optim.Adam(old.parameters()), 300, [])
    new = LrdNet(LrdConfig(**{**old_cfg.__dict__, "rates": 3, "hyper_classes": 4}))
    started = warm_start(tmp_path, new)
    assert started.new == ["hyper_dec", "hyper_enc", "log_gain", "log_inv_gain", "prior_z"]
    assert started.dropped == ["prior"]  # the factorised prior: the hyperprior replaces it
    assert torch.equal(new.enc1.weight, old.enc1.weight) and torch.equal(new.dec[3].weight, old.dec[3].weight)
    assert torch.equal(new.in_std, old.in_std)
    x = torch.randn(1, 12, 24)
    with torch.no_grad():
        assert torch.equal(new.encode(x, 1.0), old.encode(x))  # middle rate: gain 1
    other = LrdNet(LrdConfig(point="stem", in_dim=24, latent_dim=6, enc_hidden=8, hidden=16))
    with pytest.raises(ConfigError, match="differs in latent_dim; nothing to start from"):
        warm_start(tmp_path, other)


def test_a_stage_with_a_wider_encoder_and_more_decoder_blocks_starts_as_the_trained_codec(tmp_path):
    """``warm_start`` grows a trained codec: ``enc_hidden`` 8 -> 16 and ``dec_blocks``
    2 -> 4 give the same latents and the same reconstruction, bit for bit (new encoder
    inputs zeroed, new blocks the identity), and then train (the new weights have a
    gradient); a narrower encoder is refused."""
    from splitasr.codecs.rd import LrdNet
    from splitasr.training.rd_train import _save_checkpoint, warm_start

    old_cfg = LrdConfig(point="stem", in_dim=24, latent_dim=4, enc_hidden=8, hidden=16, rates=2)
    old = LrdNet(old_cfg).eval()
    _save_checkpoint(tmp_path, old, torch.optim.Adam(old.parameters()), 300, [])
    new = LrdNet(LrdConfig(**{**old_cfg.__dict__, "enc_hidden": 16, "dec_blocks": 4})).eval()
    started = warm_start(tmp_path, new)
    assert started.grown == ["enc1", "enc2"] and started.new == ["dec_more"] and started.dropped == []
    assert new.enc2.weight[:, 8:].abs().sum() == 0 and new.enc1.weight[8:].abs().sum() > 0
    x = torch.randn(2, 12, 24)
    with torch.no_grad():
        for rate in (0.0, 0.5, 1.0):
            y_old, y_new = old.encode(x, rate), new.encode(x, rate)
            assert torch.equal(y_new, y_old)
            assert torch.equal(new.decode(y_new.round(), 12, rate), old.decode(y_old.round(), 12, rate))
    new.train()
    new.decode(new.encode(x, 0.0), 12, 0.0).square().sum().backward()
    assert new.enc2.weight.grad[:, 8:].abs().sum() > 0
    assert new.dec_more[0].conv2.weight.grad.abs().sum() > 0
    more_rates = LrdNet(LrdConfig(**{**old_cfg.__dict__, "rates": 3}))
    started = warm_start(tmp_path, more_rates)  # gains start afresh, in order: not spliced
    assert "log_gain" in started.new and started.grown == []
    assert torch.all(more_rates.log_gain[1:, 0] > more_rates.log_gain[:-1, 0])
    narrow = LrdNet(LrdConfig(**{**old_cfg.__dict__, "enc_hidden": 4}))
    with pytest.raises(ConfigError, match="differs in enc_hidden \\(narrower\\)"):
        warm_start(tmp_path, narrow)


def test_a_stage_can_start_from_a_saved_codec_state(tmp_path):
    """``warm_start`` from an ``lrd.safetensors`` as shipped (weights only, cloud decoder in
    float16): the device encoder carries over bit for bit, the decoder to float16's
    precision; a state saved for another model is refused."""
    from splitasr.codecs.rd import LrdNet
    from splitasr.codecs.rd_net import lrd_to_state
    from splitasr.codecs.state import save_state
    from splitasr.training.rd_train import warm_start

    cfg = LrdConfig(point="stem", in_dim=24, latent_dim=4, enc_hidden=8, hidden=16, rates=2)
    old = LrdNet(cfg).eval()
    path = save_state(tmp_path, "lrd", lrd_to_state(old, {"model": "whisper-tiny.en"}))
    new = LrdNet(cfg).eval()
    started = warm_start(path, new, "whisper-tiny.en")
    assert started.new == [] and started.dropped == [] and started.grown == []
    x = torch.randn(1, 12, 24)
    with torch.no_grad():
        y = old.encode(x, 1.0)
        assert torch.equal(new.encode(x, 1.0), y)
        torch.testing.assert_close(
            new.decode(y.round(), 12, 1.0), old.decode(y.round(), 12, 1.0), atol=5e-3, rtol=5e-3
        )
    with pytest.raises(
        ConfigError, match=re.escape(f"{path} codes whisper-tiny.en's activations, not ds2's")
    ):
        warm_start(path, LrdNet(cfg), "ds2")
    save_state(tmp_path, "junk", {"x": np.zeros(3, np.float32)})
    with pytest.raises(ConfigError, match="junk.safetensors holds no valid lrd config"):
        warm_start(tmp_path / "junk.safetensors", LrdNet(cfg))


def test_lambda_between_rates_is_the_geometric_interpolation_of_its_neighbours():
    from splitasr.training.rd_train import lmbda_at

    assert [lmbda_at([10.0, 40.0, 160.0], r) for r in (0, 1, 2)] == pytest.approx([10.0, 40.0, 160.0])
    assert lmbda_at([10.0, 40.0, 160.0], 0.5) == pytest.approx(20.0)
    assert lmbda_at([10.0, 40.0, 160.0], 1.75) == pytest.approx(40.0 * 4**0.75)


def test_a_continuous_rate_run_trains_and_refuses_a_non_positive_lambda(
    whisper, speech_manifest, tmp_path, monkeypatch
):
    cfg = _cfg(speech_manifest, tmp_path, 2)
    cfg.codec = LrdConfig(point="stem", in_dim=384, latent_dim=8, enc_hidden=16, hidden=32, rates=2)
    cfg.continuous_rates = True
    cfg.lmbdas = [0.0, 4.0]
    with pytest.raises(ConfigError, match="every lmbda must be > 0"):
        train_rd(cfg, progress=False)
    cfg.lmbdas = [0.5, 4.0]
    import splitasr.training.rd_train as rd

    drawn = []
    real = rd.rd_loss
    monkeypatch.setattr(rd, "rd_loss", lambda *a: drawn.append(a[7]) or real(*a))
    report = train_rd(cfg, progress=False)
    assert report["steps"] == 2 and [r["rate"] for r in report["rate"]] == [0, 1]
    assert len(drawn) == 4 and all(0 < r < 1 for r in drawn)  # positions between the indices


def test_the_teacher_cache_is_chunked_so_a_stopped_pass_resumes_and_a_larger_limit_reuses_it(
    whisper, speech_manifest, tmp_path, monkeypatch
):
    """With chunks of one utterance, a limit of 1 computes one chunk; a limit of 2 then
    computes only the second, and gives the same first item; a third call computes
    nothing."""
    import splitasr.training.cache as cache_module
    import splitasr.training.rd_train as rd

    monkeypatch.setattr(cache_module, "CHUNK", 1)
    computed = []
    real = rd._teacher_items
    monkeypatch.setattr(
        rd, "_teacher_items", lambda m, p, wavs: computed.append(len(wavs)) or real(m, p, wavs)
    )
    model, cache = whisper.distilling(), str(tmp_path / "cache")
    first = rd.prepare_items(model, "stem", [str(speech_manifest)], 1, cache)
    assert computed == [1] and len(list((tmp_path / "cache").glob("*.npz"))) == 1
    both = rd.prepare_items(model, "stem", [str(speech_manifest)], 2, cache)
    assert computed == [1, 1] and len(both) == 2
    assert torch.equal(both[0].x, first[0].x) and torch.equal(both[0].tokens, first[0].tokens)
    assert both[1].tokens.numel() > both[0].tokens.numel() - 10  # a real transcript, not a copy
    assert not torch.equal(both[1].x[:10], both[0].x[:10])
    rd.prepare_items(model, "stem", [str(speech_manifest)], 2, cache)
    assert computed == [1, 1]


def test_the_cloud_decoder_has_two_to_sixteen_blocks():
    from splitasr.codecs.base import CodecError

    for bad in (1, 17):
        with pytest.raises(CodecError, match="dec_blocks is 2..16"):
            LrdConfig(dec_blocks=bad)


def test_a_checkpoint_of_another_models_activations_is_refused_before_anything_loads(tmp_path):
    """DS2's and Whisper's ``features`` have the same config (80 values a frame): the
    checkpoint's codec home tells them apart, for a resume and for a warm start alike, and
    a refused load leaves the net as it was."""
    from splitasr.codecs.rd import LrdNet
    from splitasr.training.rd_train import _load_checkpoint, _save_checkpoint, warm_start

    cfg = LrdConfig(point="features", in_dim=80, latent_dim=4, enc_hidden=8, hidden=16)
    ds2 = LrdNet(cfg)
    _save_checkpoint(tmp_path, ds2, torch.optim.Adam(ds2.parameters()), 5, [], "ds2")
    mine = LrdNet(cfg)
    before = mine.enc1.weight.detach().clone()
    with pytest.raises(ConfigError, match="codes ds2's activations, not whisper-tiny.en's"):
        _load_checkpoint(tmp_path, mine, torch.optim.Adam(mine.parameters()), "whisper-tiny.en")
    assert torch.equal(mine.enc1.weight, before)
    hyper = LrdNet(LrdConfig(**{**cfg.__dict__, "hyper_classes": 4}))
    with pytest.raises(ConfigError, match="codes ds2's activations"):
        warm_start(tmp_path, hyper, "whisper-tiny.en")
    assert _load_checkpoint(tmp_path, mine, torch.optim.Adam(mine.parameters()), "ds2") == 5
    assert torch.equal(mine.enc1.weight, ds2.enc1.weight)
    assert warm_start(tmp_path, hyper, "ds2").dropped == ["prior"]


def test_every_shipped_lrd_recipe_reads_and_names_a_known_point():
    from pathlib import Path

    paths = sorted(Path("configs").glob("lrd-*.toml"))
    assert len(paths) >= 5
    for path in paths:
        cfg = RdTrainConfig.from_toml(path)
        assert cfg.codec.point in ("features", "stem", "proj"), path
        assert cfg.codec.rates == 1 or len(cfg.lmbdas) == cfg.codec.rates, path


def test_manifest_weights_give_each_manifest_its_share_of_draws_whatever_its_size():
    w = utterance_weights([3, 1], [0.25, 0.75])
    assert w == pytest.approx([0.25 / 3] * 3 + [0.75])
    assert utterance_weights([3, 1], []) is None
    with pytest.raises(ConfigError, match="2 values for 3 train manifests"):
        utterance_weights([3, 1, 2], [0.5, 0.5])
    with pytest.raises(ConfigError, match="not all 0"):
        utterance_weights([3, 1], [0.0, 0.0])
    with pytest.raises(ConfigError, match="finite"):
        utterance_weights([3, 1], [float("nan"), 1.0])


def test_a_weighted_run_trains_and_a_weight_list_of_the_wrong_length_is_refused(
    whisper, speech_manifest, tmp_path
):
    """Two train manifests with weights [1, 0] run (the cache's size is checked against the
    manifests'); one weight for two manifests is refused before any step."""
    cfg = _cfg(speech_manifest, tmp_path / "a", 2)
    cfg.train = [str(speech_manifest), str(speech_manifest)]
    cfg.manifest_weights = [1.0, 0.0]
    train_rd(cfg, progress=False)
    rows = [json.loads(line) for line in (tmp_path / "a" / LOG).read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2] and all(r["skipped"] == 0 for r in rows)
    cfg.manifest_weights = [1.0]
    with pytest.raises(ConfigError, match="1 values for 2 train manifests"):
        train_rd(cfg, progress=False)


def test_train_codec_refuses_a_negative_thread_count_in_one_line(tmp_path, capsys):
    from splitasr.cli import main

    recipe = tmp_path / "r.toml"
    recipe.write_text('kind = "lrd"\nmodel = "ds2"\ntrain = ["m.jsonl"]\n[codec]\npoint = "proj"\n')
    assert main(["train-codec", "--config", str(recipe), "--threads", "-1"]) == 2
    err = capsys.readouterr().err
    assert "--threads -1" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
