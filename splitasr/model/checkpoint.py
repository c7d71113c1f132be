"""Save and load models as safetensors with their config in the file's metadata.

A checkpoint is one ``.safetensors`` file: tensors by name, plus metadata
``{"format": "splitasr", "model": "ds2", "config": <json>, ...}``. Nothing is unpickled.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from splitasr.errors import CheckpointError
from splitasr.model.ds2 import DS2Config, DS2Model
from splitasr.model.stages import SplitModel

FORMAT = "splitasr"
DEFAULT_CHECKPOINT = Path(__file__).resolve().parent.parent / "assets" / "ds2-small.safetensors"


def save_model(model: DS2Model, path: str | Path, extra: dict | None = None) -> None:
    from safetensors.torch import save_file

    meta = {"format": FORMAT, "model": model.name, "config": json.dumps(model.config.to_dict())}
    for key, value in (extra or {}).items():
        meta[key] = json.dumps(value)
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    save_file(state, str(path), metadata=meta)


def read_metadata(path: str | Path) -> dict:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
    return {k: (json.loads(v) if k not in ("format", "model") else v) for k, v in meta.items()}


def load_checkpoint(path: str | Path) -> SplitModel:
    """Load a DS2 safetensors checkpoint written by :func:`save_model`."""
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    try:
        meta = read_metadata(path)
        state = load_file(str(path))
    except Exception as exc:
        raise CheckpointError(f"{path}: not a readable safetensors checkpoint ({exc})") from None
    if meta.get("format") != FORMAT or meta.get("model") != "ds2":
        raise CheckpointError(f"{path}: not a splitasr ds2 checkpoint")
    model = DS2Model(DS2Config(**meta["config"]))
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise CheckpointError(
            f"{path}: weights do not match the model ({str(exc).splitlines()[0]})"
        ) from None
    model.eval()
    with torch.inference_mode():  # fill the front end's caches (window, mel filters) at load, not mid-call
        model(torch.zeros(1, 1600))
    return model
