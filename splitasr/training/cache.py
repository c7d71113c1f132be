"""What a frozen model computed once per utterance, kept on disk for the codec trainers.

A trainer's teacher pass (the activation at the split point, the model's output, a
transcript) costs about a third of a second per utterance on this CPU: thousands of
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
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import numpy as np
import torch

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
    """``compute(utterances, root)`` over the first ``limit`` utterances of each manifest,
    in order, :data:`CHUNK` at a time, each chunk loaded from ``cache_dir`` when there.

    ``head``: JSON-able values naming what ``compute`` depends on besides the audio (e.g.
    the model's fingerprint and the point). ``cls``: the item dataclass ``compute`` returns.
    ``cache_dir`` empty or ``None``: nothing is read or written.
    """
    from splitasr.manifest import read_manifest

    items: list[Item] = []
    for m in manifests:
        utts = read_manifest(m)[:limit]
        root = Path(m).parent
        for start in range(0, len(utts), CHUNK):
            chunk = utts[start : start + CHUNK]
            path = chunk_path(cache_dir, head, chunk, root, with_text)
            if path is not None and path.is_file():
                items += load_items(path, cls)
                continue
            t0 = time.time()
            fresh = compute(chunk, root)
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
    """The file of one chunk: a hash of ``head`` and of each audio file's identity."""
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
    """Write dataclass ``items`` (tensor and ``str`` fields) as one ``.npz``, atomically."""
    if not items:
        raise ValueError("no items to cache")
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays = {}
    for f in dataclasses.fields(items[0]):
        values = [getattr(it, f.name) for it in items]
        if isinstance(values[0], str):
            arrays[f.name] = np.array(values, dtype=np.str_)
        else:
            parts = [v.numpy() for v in values]
            arrays[f.name] = np.concatenate(parts)
            arrays[f"{f.name}_lens"] = np.array([len(p) for p in parts], np.int64)
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, **arrays)
    tmp.replace(path)


def load_items(path: Path, cls: type[Item]) -> list[Item]:
    """Read what :func:`save_items` wrote, as ``cls`` instances (tensors share the file's
    arrays' memory, no copy)."""
    cols = {}
    with np.load(path, allow_pickle=False) as z:
        for f in dataclasses.fields(cls):
            if f"{f.name}_lens" in z.files:
                cuts = np.cumsum(z[f"{f.name}_lens"])[:-1]
                cols[f.name] = [torch.from_numpy(a) for a in np.split(z[f.name], cuts)]
            else:
                cols[f.name] = [str(s) for s in z[f.name]]
    n = len(next(iter(cols.values())))
    return [cls(**{k: v[i] for k, v in cols.items()}) for i in range(n)]
