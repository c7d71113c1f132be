import pytest
import torch

from splitasr.errors import CheckpointError
from splitasr.model.checkpoint import read_metadata, save_model
from splitasr.model.ds2 import DS2Config, DS2Model
from splitasr.model.registry import load_model


def test_save_then_load_gives_the_same_outputs(tmp_path):
    torch.manual_seed(1)
    m = DS2Model(DS2Config(conv_channels=2, proj_dim=8, gru_hidden=4, gru_layers=1)).eval()
    save_model(m, tmp_path / "m.safetensors", {"note": {"a": 1}})
    back = load_model(tmp_path / "m.safetensors")
    x = torch.randn(1, 4000)
    with torch.no_grad():
        assert torch.equal(m(x)[0], back(x)[0])
    assert read_metadata(tmp_path / "m.safetensors")["note"] == {"a": 1}


def test_missing_and_garbage_checkpoints_are_refused(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        load_model(tmp_path / "none.safetensors")
    (tmp_path / "bad.safetensors").write_bytes(b"\x00" * 64)
    with pytest.raises(CheckpointError, match="not a readable"):
        load_model(tmp_path / "bad.safetensors")


def test_shipped_checkpoint_is_small_and_loads(model):
    from splitasr.model.checkpoint import DEFAULT_CHECKPOINT

    assert DEFAULT_CHECKPOINT.stat().st_size < 25 * 2**20
    assert sum(p.numel() for p in model.parameters()) == 3_538_461  # "3.5 M parameters" (README)
    assert not model.training


def test_registry_knows_every_model_and_refuses_unknown_names():
    from splitasr.model.registry import DEFAULT_MODEL, available_models

    assert available_models() == ["whisper-tiny.en", "whisper-tiny.en-dyn", "ds2"]
    assert DEFAULT_MODEL == available_models()[0]
    with pytest.raises(
        CheckpointError, match="unknown model 'large'; choose from whisper-tiny.en, whisper-tiny.en-dyn, ds2"
    ):
        load_model("large")


def test_models_default_to_their_own_decoding_convention(model):
    from splitasr.decoding import BeamSearchDecoder, GreedyDecoder

    assert isinstance(model.make_decoder(), BeamSearchDecoder) and model.make_decoder().beam_width == 32
    assert isinstance(model.make_decoder(beam=1), GreedyDecoder)
