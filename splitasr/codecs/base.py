"""The codec interface: activations ``(N, T, C)`` -> self-describing bytes -> activations.

A codec is a pipeline of two parts, named ``"<transform>+<coder>"``:

* a :class:`Transform` maps float activations to integer *symbols* with a known alphabet
  (``f32`` reinterprets the float bits losslessly, ``q8`` quantises, a learned encoder
  maps to a quantised latent ...) and back;
* a :class:`Coder` maps symbols to bytes (``pack`` stores them at fixed width, ``zstd``,
  ``huffman`` and ``ans`` entropy-code them) and back.

``get_codec("q8+ans")`` builds one; a single name is completed with the default of the
other part (``"zstd"`` means ``"f32+zstd"``, ``"q8"`` means ``"q8+pack"``). Unknown names
are refused with the list of known ones.

Every payload starts with a header (see :func:`pack_payload`): magic, format version,
codec name, decoding parameters, shape, dtype, valid lengths, body length and a CRC32 of
the header and body. :func:`unpack_payload` checks all of it, and refuses a declared shape over
:data:`MAX_ELEMENTS` before allocating anything, so random, truncated or bit-flipped
bytes raise :class:`CodecError` instead of returning garbage or exhausting memory.
"""

from __future__ import annotations

import json
import struct
import zlib
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from splitasr.errors import SplitASRError

MAGIC = b"SPLC"
FORMAT_VERSION = 1
MAX_ELEMENTS = 64_000_000  # 64 M values (256 MB of float32): about 20 minutes at 'proj'
MAX_HEADER_BYTES = 65_536
_FIXED = struct.Struct("<4sBHIB")  # magic, version, header-json length, body length, ndim


class CodecError(SplitASRError):
    """A payload cannot be decoded: truncated, corrupted, oversized or for another codec."""


@dataclass(frozen=True)
class DecodeLimits:
    """What a payload may declare (provisional)."""

    max_items: int = 64
    max_frames: int | None = None
    channels: int | None = None


@dataclass(frozen=True)
class Header:
    """What a payload says about itself."""

    codec: str
    shape: tuple[int, ...]  # (N, T, C) of the decoded activation
    lens: tuple[int, ...]  # (N,) valid frames per item
    params: dict = field(default_factory=dict)  # what the decoder needs besides its state
    dtype: str = "float32"
    point: int = 0
    size: int = 0  # header bytes

    @property
    def numel(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))


def pack_payload(header: Header, body: bytes) -> bytes:
    """Header + body as bytes: ``MAGIC | version | len(json) | len(body) | ndim | shape... |
    json | crc32(shape + json + body) | body`` (little-endian). The CRC covers the header's
    variable part too, so a flipped bit in the shape, lengths or parameters is caught."""
    meta = json.dumps(
        {
            "codec": header.codec,
            "params": header.params,
            "dtype": header.dtype,
            "lens": list(header.lens),
            "point": header.point,
        },
        separators=(",", ":"),
    ).encode()
    fixed = _FIXED.pack(MAGIC, FORMAT_VERSION, len(meta), len(body), len(header.shape))
    shape = struct.pack(f"<{len(header.shape)}I", *header.shape)
    crc = struct.pack("<I", zlib.crc32(body, zlib.crc32(meta, zlib.crc32(shape))))
    return fixed + shape + meta + crc + body


def unpack_payload(payload: bytes, max_elements: int = MAX_ELEMENTS) -> tuple[Header, bytes]:
    """Parse and check a payload; raises :class:`CodecError` on anything wrong."""
    if not isinstance(payload, bytes | bytearray | memoryview):
        raise CodecError(f"payload must be bytes, not {type(payload).__name__}")
    payload = bytes(payload)
    if len(payload) < _FIXED.size:
        raise CodecError(f"payload truncated: {len(payload)} bytes is shorter than the header")
    magic, version, meta_len, body_len, ndim = _FIXED.unpack_from(payload)
    if magic != MAGIC:
        raise CodecError("not a splitasr codec payload (bad magic)")
    if version != FORMAT_VERSION:
        raise CodecError(f"unsupported payload format version {version} (this build reads {FORMAT_VERSION})")
    if ndim == 0 or ndim > 4 or meta_len > MAX_HEADER_BYTES:
        raise CodecError("corrupt payload header")
    pos = _FIXED.size
    need = pos + 4 * ndim + meta_len + 4 + body_len
    if len(payload) != need:
        raise CodecError(f"payload truncated or padded: {len(payload)} bytes, header says {need}")
    shape = struct.unpack_from(f"<{ndim}I", payload, pos)
    shape_bytes = payload[pos : pos + 4 * ndim]
    pos += 4 * ndim
    numel = int(np.prod(shape, dtype=np.int64))
    if numel > max_elements:
        raise CodecError(f"declared shape {tuple(shape)} exceeds the limit of {max_elements} values")
    meta_bytes = payload[pos : pos + meta_len]
    (crc,) = struct.unpack_from("<I", payload, pos + meta_len)
    body = payload[pos + meta_len + 4 :]
    if zlib.crc32(body, zlib.crc32(meta_bytes, zlib.crc32(shape_bytes))) != crc:
        raise CodecError("payload is corrupted (CRC32 mismatch)")
    try:
        meta = json.loads(meta_bytes)
        codec, params, dtype, lens = meta["codec"], meta["params"], meta["dtype"], tuple(meta["lens"])
        point = int(meta.get("point", 0))
    except (ValueError, KeyError, TypeError):
        raise CodecError("corrupt payload header (metadata)") from None
    if (
        not isinstance(params, dict)
        or not isinstance(codec, str)
        or not all(isinstance(v, int) for v in lens)
    ):
        raise CodecError("corrupt payload header (types)")
    if len(lens) != shape[0] or (ndim > 1 and any(not 0 <= v <= shape[1] for v in lens)):
        raise CodecError("corrupt payload header (lengths do not match the shape)")
    return Header(codec, tuple(shape), lens, params, dtype, point, len(payload) - len(body)), body


def read_header(payload: bytes) -> Header:
    return unpack_payload(payload)[0]


@dataclass
class Symbols:
    """Integer symbols from a :class:`Transform`.

    ``data`` has any shape and an integer dtype; every value lies in ``[0, alphabet)``.
    ``params`` is JSON-able side information the transform needs to invert (it travels in
    the header). ``shape`` is the activation shape the symbols decode to.
    """

    data: np.ndarray
    alphabet: int
    params: dict = field(default_factory=dict)


class Transform(ABC):
    """Float activations ``(N, T, C)`` <-> integer :class:`Symbols`."""

    name: str = ""
    lossless: bool = False
    decodes_to: str | None = None  # a later split point the inverse returns; None: the same

    def __init__(self, state: dict | None = None):
        self.state = state or {}

    def output_layout(
        self, shape: tuple[int, ...], lens: tuple[int, ...]
    ) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """Decoded ``(shape, lens)`` for an input of ``shape`` ``(N, T, C)`` with valid
        ``lens``: the same for most transforms; learned ones may change the frame rate,
        the width or (``decodes_to``) the split point."""
        return shape, lens

    @abstractmethod
    def forward(self, x: np.ndarray) -> Symbols:
        """``x``: float32 ``(N, T, C)``."""

    @abstractmethod
    def inverse(self, symbols: np.ndarray, params: dict, shape: tuple[int, ...]) -> np.ndarray:
        """Back to float32 of ``shape``."""

    @abstractmethod
    def symbol_layout(self, params: dict, shape: tuple[int, ...]) -> tuple[tuple[int, ...], int]:
        """``(symbol array shape, alphabet)`` for a payload, so a coder can decode blind."""


class Coder(ABC):
    """Integer symbols <-> bytes. ``context`` names the stream for learned models."""

    name: str = ""

    def __init__(self, state: dict | None = None):
        self.state = state or {}

    @abstractmethod
    def encode(self, symbols: np.ndarray, alphabet: int) -> bytes: ...

    @abstractmethod
    def decode(self, body: bytes, shape: tuple[int, ...], alphabet: int) -> np.ndarray: ...


TRANSFORMS: dict[str, type[Transform]] = {}
CODERS: dict[str, type[Coder]] = {}
DEFAULT_TRANSFORM = "f32"
DEFAULT_CODER = "pack"
ALIASES = {"raw": "f32+pack"}  # paper 000's uncompressed float32 activations


def _register(table: dict, name: str) -> Callable:
    """Decorator adding a class to ``table`` under ``name``; names are unique across parts."""

    def wrap(cls):
        if name in TRANSFORMS or name in CODERS:
            raise ValueError(f"codec part {name!r} registered twice")
        cls.name = name
        table[name] = cls
        return cls

    return wrap


def register_transform(name: str) -> Callable[[type[Transform]], type[Transform]]:
    return _register(TRANSFORMS, name)


def register_coder(name: str) -> Callable[[type[Coder]], type[Coder]]:
    return _register(CODERS, name)


class Codec:
    """A transform followed by a coder; ``compress`` -> bytes, ``decompress`` -> tensors."""

    def __init__(self, transform: Transform, coder: Coder, max_elements: int = MAX_ELEMENTS):
        self.transform, self.coder, self.max_elements = transform, coder, max_elements

    @property
    def name(self) -> str:
        return f"{self.transform.name}+{self.coder.name}"

    @property
    def lossless(self) -> bool:
        return self.transform.lossless

    def decodes_to(self, point: str) -> str:
        """The split point whose activation :meth:`decompress` returns for a payload made
        at ``point``: the tail resumes there."""
        return self.transform.decodes_to or point

    def compress(self, x: torch.Tensor, lens: torch.Tensor | None = None, point: int = 0) -> bytes:
        """Encode ``x`` ``(N, T, C)`` (any float dtype) and its valid lengths ``(N,)``."""
        if x.dim() != 3:
            raise CodecError(f"codecs take (N, T, C) activations, got shape {tuple(x.shape)}")
        if lens is None:
            lens = torch.full((x.shape[0],), x.shape[1], dtype=torch.long)
        arr = x.detach().cpu().to(torch.float32).contiguous().numpy()
        sym = self.transform.forward(arr)
        body = self.coder.encode(sym.data, sym.alphabet)
        shape, out_lens = self.transform.output_layout(tuple(arr.shape), tuple(int(v) for v in lens))
        return pack_payload(Header(self.name, shape, out_lens, sym.params, point=point), body)

    def decompress(
        self, payload: bytes, limits: DecodeLimits | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Decode a payload made by this codec: ``(x (N, T, C) float32, lens (N,) int64)``,
        the activation at :meth:`decodes_to` of the point it was made at."""
        header, body = unpack_payload(payload, self.max_elements)
        if header.codec != self.name:
            raise CodecError(f"payload was made by codec {header.codec!r}, not {self.name!r}")
        try:
            sym_shape, alphabet = self.transform.symbol_layout(header.params, header.shape)
            symbols = self.coder.decode(body, sym_shape, alphabet)
            x = self.transform.inverse(symbols, header.params, header.shape)
        except CodecError:
            raise
        except Exception as exc:  # a corrupt body that passed the CRC by chance, or bad params
            raise CodecError(f"cannot decode {self.name} payload ({type(exc).__name__}: {exc})") from None
        if x.shape != header.shape:
            raise CodecError(f"decoded shape {x.shape} does not match the header's {header.shape}")
        return torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)), torch.tensor(header.lens)


def split_name(name: str) -> tuple[str, str]:
    """``"q8+ans" -> ("q8", "ans")``; completes single names with the default other part."""
    parts = [p.strip() for p in ALIASES.get(name, name).split("+")]
    if len(parts) == 1:
        (p,) = parts
        if p in CODERS:
            return DEFAULT_TRANSFORM, p
        if p in TRANSFORMS:
            return p, DEFAULT_CODER
    elif len(parts) == 2 and parts[0] in TRANSFORMS and parts[1] in CODERS:
        return parts[0], parts[1]
    raise CodecError(
        f"unknown codec {name!r}; transforms: {', '.join(sorted(TRANSFORMS))}; "
        f"coders: {', '.join(sorted(CODERS))} (write e.g. 'q8+ans')"
    )


def get_codec(name: str, state_dir: str | Path | None = None, max_elements: int = MAX_ELEMENTS) -> Codec:
    """Build a codec by name. ``state_dir`` holds calibrated/learned state (see
    :mod:`splitasr.codecs.state`); parts that need state and find none raise CodecError."""
    from splitasr.codecs.state import load_state

    t_name, c_name = split_name(name)
    t_state = load_state(state_dir, t_name) if state_dir else None
    c_state = load_state(state_dir, f"{t_name}+{c_name}") if state_dir else None
    return Codec(TRANSFORMS[t_name](t_state), CODERS[c_name](c_state), max_elements)


def available_codecs() -> list[str]:
    return sorted(f"{t}+{c}" for t in TRANSFORMS for c in CODERS)
