"""Calibrated or learned codec state (scales, probability tables, network weights).

One ``<name>.safetensors`` file per codec part in a state folder, usually
``splitasr/assets/codecs/<model>/<split point>/``: arrays as tensors, everything else as
JSON in the metadata. Nothing is unpickled.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

STATE_ROOT = Path(__file__).resolve().parent.parent / "assets" / "codecs"


def shipped_state_dir(model: str, point: str) -> Path:
    """Where the shipped state of codecs for ``model`` at split ``point`` lives:
    ``splitasr/assets/codecs/<model>/<point>/``."""
    return STATE_ROOT / model / point


def state_path(state_dir: str | Path, key: str) -> Path:
    return Path(state_dir) / f"{key}.safetensors"


def save_state(state_dir: str | Path, key: str, state: dict) -> Path:
    """Write ``state`` (numpy arrays and JSON-able values) for codec part ``key``."""
    from safetensors.numpy import save_file

    arrays = {k: np.ascontiguousarray(v) for k, v in state.items() if isinstance(v, np.ndarray)}
    meta = {k: v for k, v in state.items() if not isinstance(v, np.ndarray)}
    path = state_path(state_dir, key)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(arrays, str(path), metadata={"json": json.dumps(meta)})
    return path


def load_state(state_dir: str | Path, key: str) -> dict | None:
    """The saved state for ``key``, or None when the folder has none."""
    from safetensors import safe_open
    from safetensors.numpy import load_file

    path = state_path(state_dir, key)
    if not path.is_file():
        return None
    with safe_open(str(path), framework="np") as f:
        meta = json.loads((f.metadata() or {}).get("json", "{}"))
    return {**meta, **load_file(str(path))}


def state_digest(state: dict | None) -> bytes:
    """SHA-256 of a codec part's state (arrays by dtype, shape and bytes; other values as
    sorted JSON), or ``b""`` for a part without state. Payloads name the state they were
    made with by this digest (see :mod:`splitasr.codecs.base`); it is never shipped."""
    if not state:
        return b""
    h = hashlib.sha256()
    for key in sorted(state):
        value = state[key]
        h.update(key.encode() + b"\0")
        if isinstance(value, np.ndarray):
            arr = np.ascontiguousarray(value)
            h.update(f"{arr.dtype.str}{arr.shape}".encode())
            h.update(arr.reshape(-1).view(np.uint8))
        else:
            h.update(json.dumps(value, sort_keys=True, default=str).encode())
        h.update(b"\0")
    return h.digest()
