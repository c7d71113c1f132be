"""What a frozen model computed once per utterance, kept on disk for the codec trainers.

A trainer's teacher pass (the activation at the split point, the model's output, a
transcript) costs up to about a second per utterance on this CPU: thousands of
utterances take tens of minutes, and one interrupted pass must not start over. So the pass
is cached in files of :data:`CHUNK` utterances, each keyed by the caller's ``head`` (which
model, which point: whatever changes what is computed) and by the audio files it holds
(path, size, modification time and, with ``with_text``, the transcript). A stopped pass
resumes at its first missing chunk; a larger ``limit`` reuses the full chunks a smaller one
computed (a partial last chunk is computed again as part of a larger one).

A file is one ``.npz`` (no pickle) of ragged columns: every tensor field of the item
dataclass concatenated along its first axis with a ``<name>_lens`` column beside it, every
``str`` field as an array of strings. It is written to a temporary name and renamed, so a
stop mid-write leaves no half file under the real name.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import sys
import time
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import numpy as np
import torch

from splitasr.errors import ConfigError

CHUNK = 250  # utterances per cached file: a long teacher pass survives a stop

Item = TypeVar("Item")


def cached_items(
    manifests: list[str],
    limit: int,
    cache_dir: str | Path | None,
    head: list,
    compute: Callable[[list, Path], list[Item]],
    cls: type[Item],
    with_text: bool = False,
    progress: bool = False,
) -> list[Item]:
    """``compute(utterances, root)`` over the first ``limit`` (0: all) utterances of each manifest,
    in order, :data:`CHUNK` at a time, each chunk loaded from ``cache_dir`` when there.

    ``head``: JSON-able values naming what ``compute`` depends on besides the audio (e.g.
    the model's fingerprint and the point). ``cls``: the item dataclass ``compute`` returns.
    ``cache_dir`` empty or ``None``: nothing is read or written.
    """
    from splitasr.manifest import read_manifest

    if limit < 0:
        raise ConfigError(f"limit_per_manifest must be >= 0 (0: all), got {limit}")
    items: list[Item] = []
    for m in manifests:
        utts = read_manifest(m, limit)
        root = Path(m).parent
        for start in range(0, len(utts), CHUNK):
            chunk = utts[start : start + CHUNK]
            path = chunk_path(cache_dir, head, chunk, root, with_text)
            if path is not None and path.is_file():
                held = load_items(path, cls)
                if len(held) != len(chunk):
                    found = f"{len(held)} items for {len(chunk)} utterances"
                    raise ConfigError(f"{path}: damaged teacher cache file ({found}); delete it")
                items += held
                continue
            t0 = time.time()
            fresh = compute(chunk, root)
            if len(fresh) != len(chunk):  # the items must stay one per utterance, in order
                raise ValueError(f"compute gave {len(fresh)} items for {len(chunk)} utterances")
            if path is not None:
                save_items(path, fresh)
            if progress:
                print(
                    f"teacher pass: {m} [{start}:{start + len(chunk)}] in {time.time() - t0:.0f} s",
                    file=sys.stderr,
                    flush=True,
                )
            items += fresh
    return items


def chunk_path(
    cache_dir: str | Path | None, head: list, utts: list, root: Path, with_text: bool = False
) -> Path | None:
    """The file of one chunk: a hash of ``head`` and of each audio file's identity (path,
    size, modification time) and, with ``with_text``, its transcript."""
    if not cache_dir:
        return None
    stats = []
    for u in utts:
        wav = u.resolve(root)
        stat = _stat(wav)
        entry = [str(wav), *((stat.st_size, stat.st_mtime_ns) if stat else ())]
        stats.append([*entry, u.text] if with_text else entry)
    audio = hashlib.sha1(json.dumps(stats).encode()).hexdigest()
    key = json.dumps([*head, audio])
    return Path(cache_dir) / f"{hashlib.sha1(key.encode()).hexdigest()[:16]}.npz"


def _stat(path: Path):
    try:
        return path.stat()
    except OSError:  # missing: the teacher pass says so when it opens it
        return None


def save_items(path: Path, items: list) -> None:
    """Write dataclass ``items`` as one ``.npz``, atomically: each tensor field (every item's
    value at least 1-D, e.g. ``(T, C)``) concatenated along its first axis beside its
    ``<name>_lens`` ``(N,)`` int64; each ``str`` field as an ``(N,)`` array of strings.

    Raises:
        ValueError: no items.
        TypeError: a field whose values are not all ``str`` or all tensors of 1 or more
            dimensions (a bug in the caller: it has no column format).
    """
    if not items:
        raise ValueError("no items to cache")
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays = {}
    for f in dataclasses.fields(items[0]):
        values = [getattr(it, f.name) for it in items]
        if all(isinstance(v, str) for v in values):
            arrays[f.name] = np.array(values, dtype=np.str_)
        elif all(isinstance(v, torch.Tensor) and v.dim() >= 1 for v in values):
            parts = [v.numpy() for v in values]
            arrays[f.name] = np.concatenate(parts)
            arrays[f"{f.name}_lens"] = np.array([len(p) for p in parts], np.int64)
        else:
            kinds = sorted({type(v).__name__ for v in values})
            raise TypeError(
                f"field {f.name!r} holds {', '.join(kinds)}: a cached field is str or a tensor of >= 1 dims"
            )
    tmp = path.with_suffix(f".{os.getpid()}.tmp.npz")  # two trainers may fill one cache
    np.savez(tmp, **arrays)
    tmp.replace(path)


def load_items(path: Path, cls: type[Item]) -> list[Item]:
    """Read what :func:`save_items` wrote, as ``cls`` instances (each tensor a view of its
    column's array: no copy per item).

    Raises:
        ConfigError: the file is unreadable or does not hold ``cls``'s columns, all of one
            length, with lengths that add up to each tensor column (a damaged cache file:
            the message says to delete it).
    """

    try:
        with np.load(path, allow_pickle=False) as z:
            cols = {f.name: _column(z, f.name) for f in dataclasses.fields(cls)}
    except (OSError, ValueError, TypeError, KeyError, EOFError, zipfile.BadZipFile) as exc:
        raise ConfigError(f"{path}: damaged teacher cache file ({exc}); delete it") from None
    counts = {k: len(v) for k, v in cols.items()}
    if len(set(counts.values())) > 1:
        raise ConfigError(f"{path}: damaged teacher cache file (column lengths {counts}); delete it")
    n = next(iter(counts.values()), 0)
    return [cls(**{k: v[i] for k, v in cols.items()}) for i in range(n)]


def _column(z, name: str) -> list:
    """One field's values from an open ``.npz``: tensors cut by ``<name>_lens``, or strings."""
    if f"{name}_lens" not in z.files:
        texts = z[name]
        if texts.ndim != 1 or texts.dtype.kind != "U":
            raise ValueError(f"{name} is {texts.dtype} {texts.shape}, not a column of strings")
        return [str(s) for s in texts]
    data, lens = z[name], z[f"{name}_lens"]
    if lens.ndim != 1 or lens.dtype.kind not in "iu" or (lens < 0).any() or lens.sum() != len(data):
        raise ValueError(f"{name}_lens {lens.tolist()[:8]} does not cut {name} of {len(data)} rows")
    return [torch.from_numpy(a) for a in np.split(data, np.cumsum(lens)[:-1])]
