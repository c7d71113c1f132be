"""Calibrate codecs on training activations and measure entropy coders against entropy.

The flow behind ``splitasr codec calibrate``:

1. :func:`collect_activations` runs the model's head on a manifest and keeps what would
   cross the wire at a split point, one ``(T, C)`` array per utterance;
2. :func:`calibrate` fits the state each part of a codec needs and saves it with
   :func:`~splitasr.codecs.state.save_state` under the keys :func:`get_codec` loads: the
   transform's name (e.g. ``q8``: clip bounds) and ``"<transform>+<coder>"`` (e.g.
   ``q8+ans``: a probability table of that transform's symbols);
3. :func:`entropy_report` codes activations and compares the bits spent per symbol with
   the empirical entropy of the symbols.

Any registered part can take part in calibration by defining a classmethod ``fit_state``:
``Transform.fit_state(activations: list[(T, C) arrays]) -> dict | None`` and
``Coder.fit_state(symbols: list[arrays], alphabet: int) -> dict | None``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from splitasr.codecs.base import CODERS, TRANSFORMS, CodecError, get_codec, split_name
from splitasr.codecs.entropy import entropy_bits, stream_counts
from splitasr.codecs.state import load_state, save_state
from splitasr.errors import ConfigError, ManifestError


def collect_activations(
    model, manifest_path: str | Path, point: str, limit: int | None = None
) -> list[np.ndarray]:
    """The activation at ``point`` for the first ``limit`` utterances of a manifest.

    Returns:
        one float32 array per utterance, ``(T, C)`` valid frames only (``(S, 1)`` samples
        at the ``audio`` point).

    Raises:
        ConfigError: unknown split point; ManifestError/AudioError: unusable manifest.
    """
    from splitasr.audio import load_audio
    from splitasr.manifest import read_manifest
    from splitasr.pipeline import Edge

    if point not in model.split_points:
        raise ConfigError(f"unknown split point {point!r}; choose from {', '.join(model.split_points)}")
    root = Path(manifest_path).parent
    utts = read_manifest(manifest_path)[:limit]
    if not utts:
        raise ManifestError(f"{manifest_path}: manifest has no utterances")
    edge = Edge(model)
    out = []
    for utt in utts:
        h, h_lens = edge.head(torch.from_numpy(load_audio(utt.resolve(root))), point)
        out.append(np.ascontiguousarray(h[0, : int(h_lens[0])].to(torch.float32).numpy()))
    return out


def _check_activations(activations: list[np.ndarray]) -> None:
    if not activations:
        raise CodecError("no activations to calibrate on")
    dims = {a.shape[-1] for a in activations if np.ndim(a) == 2}
    if len(dims) != 1 or any(np.ndim(a) != 2 for a in activations):
        raise CodecError("calibration activations must be (T, C) arrays with one C")


def calibrate(name: str, activations: list[np.ndarray], state_dir: str | Path) -> list[Path]:
    """Fit and save the state codec ``name`` needs; returns the files written.

    The transform is fitted first, on the activations; the coder then learns its table
    from the symbols the *calibrated* transform produces. A part without ``fit_state``
    keeps whatever state ``state_dir`` already has for it. Refitting a transform (say
    ``q8`` for ``q8+huffman``) replaces the state other codecs in the folder share; their
    learned tables still decode, but calibrate them on the same activations.
    """
    _check_activations(activations)
    t_name, c_name = split_name(name)
    written = []
    t_cls, c_cls = TRANSFORMS[t_name], CODERS[c_name]
    t_state = t_cls.fit_state(activations) if hasattr(t_cls, "fit_state") else None
    if t_state is not None:
        written.append(save_state(state_dir, t_name, t_state))
    else:
        t_state = load_state(state_dir, t_name)
    if hasattr(c_cls, "fit_state"):
        transform = t_cls(t_state)
        symbols = [transform.forward(np.asarray(a, np.float32)[None]) for a in activations]
        alphabets = {s.alphabet for s in symbols}
        if len(alphabets) != 1:
            raise CodecError(f"{t_name} gave symbols with different alphabets: {sorted(alphabets)}")
        c_state = c_cls.fit_state([s.data for s in symbols], alphabets.pop())
        if c_state is not None:
            written.append(save_state(state_dir, f"{t_name}+{c_name}", c_state))
    return written


def entropy_report(name: str, activations: list[np.ndarray], state_dir: str | Path | None = None) -> dict:
    """How close codec ``name`` comes to the entropy of the symbols it codes.

    Each activation is coded as one message (``(1, T, C)``). ``entropy_bits_per_symbol`` is
    the empirical entropy of the pooled symbols, per stream (per byte plane for ``f32``,
    as the coders model them) and averaged over all symbols; ``coded_bits_per_symbol`` is
    the coder's body, tables included, and ``payload_bits_per_value`` adds the header and
    divides by activation values rather than symbols.
    """
    _check_activations(activations)
    codec = get_codec(name, state_dir)
    body_bytes = payload_bytes = values = 0
    symbols, alphabet = [], 0
    for a in activations:
        x = np.asarray(a, np.float32)[None]
        sym = codec.transform.forward(x)
        body = codec.coder.encode(sym.data, sym.alphabet)
        body_bytes += len(body)
        payload_bytes += len(codec.pack_payload(sym, body, tuple(x.shape), (x.shape[1],)))
        values += x.size
        symbols.append(sym.data)
        alphabet = sym.alphabet
    n_symbols = sum(int(s.size) for s in symbols)
    entropy = entropy_bits(stream_counts(symbols, alphabet)) / max(n_symbols, 1)
    coded = 8.0 * body_bytes / max(n_symbols, 1)
    return {
        "codec": codec.name,
        "messages": len(activations),
        "values": int(values),
        "symbols": n_symbols,
        "alphabet": int(alphabet),
        "coded_bits_per_symbol": coded,
        "entropy_bits_per_symbol": entropy,
        "overhead": coded / entropy - 1.0 if entropy > 0 else None,
        "payload_bits_per_value": 8.0 * payload_bytes / max(values, 1),
    }
