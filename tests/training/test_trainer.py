"""A tiny end-to-end training run: the recipe trains, checkpoints, validates and resumes."""

import json

import pytest
import soundfile as sf

from splitasr.audio import SAMPLE_RATE
from splitasr.corpus.tts import Speaker, render
from splitasr.model.checkpoint import read_metadata
from splitasr.model.registry import load_model
from splitasr.training.trainer import TrainConfig, train


@pytest.fixture(scope="module")
def tiny_corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus")
    lines = []
    for i, text in enumerate(["one two three", "a cat sat", "hello there", "good morning"]):
        wave = render(text, Speaker("espeak-ng", "en-us", "m1", 170, 50))
        sf.write(root / f"{i}.wav", wave, SAMPLE_RATE)
        lines.append(
            json.dumps(
                {
                    "audio": f"{i}.wav",
                    "text": text,
                    "duration": len(wave) / SAMPLE_RATE,
                    "speaker": "s",
                    "source": "tts",
                }
            )
        )
    (root / "train.jsonl").write_text("\n".join(lines) + "\n")
    (root / "dev.jsonl").write_text("\n".join(lines[:2]) + "\n")
    return root


def _config(root, out, epochs):
    cfg_path = root / "recipe.toml"
    cfg_path.write_text(
        f'out = "{out}"\nepochs = {epochs}\nbatch_seconds = 4.0\ndev = ["{root}/dev.jsonl"]\n'
        f'[train]\n"{root}/train.jsonl" = 1.0\n'
        "[model]\nconv_channels = 2\nproj_dim = 16\ngru_hidden = 8\ngru_layers = 1\n"
    )
    return TrainConfig.from_toml(cfg_path)


def test_training_writes_a_loadable_model_and_resumes(tiny_corpus, tmp_path):
    best = train(_config(tiny_corpus, tmp_path / "run", 1), progress=False)
    assert best.is_file() and (tmp_path / "run" / "last.pt").is_file()
    meta = read_metadata(best)
    assert len(meta["history"]) == 1 and "dev_wer" in meta["history"][0]
    train(_config(tiny_corpus, tmp_path / "run", 2), progress=False)
    meta = read_metadata(tmp_path / "run" / "last.safetensors")
    assert [row["epoch"] for row in meta["history"]] == [1, 2]
    load_model(best)


def test_bad_config_is_a_clean_error(tmp_path):
    from splitasr.errors import ConfigError

    (tmp_path / "bad.toml").write_text("epochs = 1\nunknown_key = 3\n")
    with pytest.raises(ConfigError, match="unknown keys"):
        TrainConfig.from_toml(tmp_path / "bad.toml")
    with pytest.raises(ConfigError, match="not found"):
        TrainConfig.from_toml(tmp_path / "none.toml")
