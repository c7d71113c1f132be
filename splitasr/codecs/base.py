"""The codec interface: activations ``(N, T, C)`` -> self-describing bytes -> activations.

A codec is a pipeline of two parts, named ``"<transform>+<coder>"``:

* a :class:`Transform` maps float activations to integer *symbols* with a known alphabet
  (``f32`` reinterprets the float bits losslessly, ``q8`` quantises, a learned encoder
  maps to a quantised latent ...) and back;
* a :class:`Coder` maps symbols to bytes (``pack`` stores them at fixed width, ``zstd``,
  ``huffman`` and ``ans`` entropy-code them) and back.

``get_codec("q8+ans")`` builds one; a single name is completed with the default of the
other part (``"zstd"`` means ``"f32+zstd"``, ``"q8"`` means ``"q8+pack"``). Unknown names
are refused with the list of known ones. Every part has a stable numeric id
(``@register_transform("q8", id=3)``), which is what a payload names; ids are never reused.

Payload format (version 2; little-endian, ``varint`` = unsigned LEB128, at most 5 bytes)::

    offset  bytes  field
    0       2      magic b"SC"
    2       1      version << 4 | flags      version 2; flags: 1 STATE, 2 LENS, 4 PARAMS, 8 reserved (0)
    3       v      transform id              registry id, see TRANSFORM_IDS
    .       v      coder id                  registry id, see CODER_IDS
    .       v      split point id            opaque to the codec (the pipeline's point index)
    .       1      state tag                 STATE only: first byte of the codec's state hash
    .       v v v  N, T, C                   the decoded activation's shape
    .       v * N  valid frames per item     LENS only; without it every item has T frames
    .       v + L  params length, params     PARAMS only; the transform's binary side information
    .       4      CRC32                     of every byte above and of the body, seeded with
                                             crc32(state hash) when STATE is set, else 0
    .       rest   body                      the coder's bytes, up to the end of the payload

A learned or calibrated codec at a 3-s utterance (N = 1, T = 150..151, C = 256 or 384,
every frame valid, no params) spends 2 + 1 + 1 + 1 + 1 + 1 + (1 + 2 + 2) + 4 = **16 bytes**
of header; the JSON header of format version 1 spent about 108.

Codec state (calibration tables, learned weights) never travels. It is named by its
SHA-256 (:func:`splitasr.codecs.state.state_digest` of each part, hashed together): the
tag byte lets a decoder holding other state refuse with a clear message, and because the
full hash seeds the CRC, other state that happens to share the tag fails the CRC. A
payload made without state has no tag and an unseeded CRC, so :func:`read_header` can
check it on its own; for one made with state only :meth:`Codec.decompress` (or
:meth:`Codec.read_header`) can, holding the state.

Decoding is bounded by what it is given (:class:`DecodeLimits`): the header's shape is
checked against the limits (items, frames per item, exact channel count, total values)
and against what the transform can produce (channels fixed by its state, a cap for
``cs*``, one channel for audio), the params against the shape, the body against the
symbol count it must hold (exact lengths for ``pack``/``zstd``; at least one bit per
symbol for ``huffman``; the table's minimum code length or entropy for ``ans``), all
before anything proportional to the declared sizes is allocated. Every failure is a
:class:`CodecError`. Peak memory of a successful decode is O(declared output): at most
2 x the float32 output + 2 x the payload + 40 MB for every numpy codec (measured by
``scripts/payload_attacks.py``, table in docs/codecs.md; symbols are kept at their
narrowest width and the float64 stages run in bounded chunks). Learned codecs add their
network's activations, O(T x hidden) in torch.
"""

from __future__ import annotations

import math
import zlib
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from splitasr.errors import SplitASRError

if TYPE_CHECKING:
    import torch

MAGIC = b"SC"
FORMAT_VERSION = 2
FLAG_STATE, FLAG_LENS, FLAG_PARAMS, FLAG_RESERVED = 1, 2, 4, 8
MAX_VARINT_BYTES = 5  # header varints hold values below 2**32
MAX_ELEMENTS = 64_000_000  # 64 M values (256 MB of float32): about 20 minutes at 'proj'
DEFAULT_MAX_SECONDS = 120.0  # the CLI's --max-seconds
DEFAULT_MAX_ITEMS = 64
# 120 s at the highest frame rate any split point has (the 16 kHz waveform at 'audio'):
# a codec built without knowing its point accepts any input the CLI accepts
DEFAULT_MAX_FRAMES = int(DEFAULT_MAX_SECONDS * 16000)


class CodecError(SplitASRError):
    """A payload cannot be decoded: truncated, corrupted, oversized or for another codec."""


# ---------------------------------------------------------------------------- limits


@dataclass(frozen=True)
class DecodeLimits:
    """What a decoder accepts, checked before it allocates anything.

    ``max_items``: items per payload (N); ``max_frames``: frames per item (T) of the decoded
    activation; ``channels``: the exact C the caller expects where the tail resumes
    (``codec.decodes_to(point)``), None to leave it to the transform; ``max_values``: N * T * C.
    The pipeline builds them per point with :meth:`for_point`.
    """

    max_items: int = DEFAULT_MAX_ITEMS
    max_frames: int = DEFAULT_MAX_FRAMES
    channels: int | None = None
    max_values: int = MAX_ELEMENTS

    @classmethod
    def for_point(
        cls,
        frame_rate: float,
        channels: int | None = None,
        max_seconds: float = DEFAULT_MAX_SECONDS,
        max_items: int = DEFAULT_MAX_ITEMS,
    ) -> DecodeLimits:
        """Limits for activations at ``frame_rate`` frames/s (16000 at ``audio``) with
        ``channels`` values per frame, utterances up to ``max_seconds``."""
        return cls(max_items, int(math.ceil(max_seconds * frame_rate)) + 1, channels)


# ---------------------------------------------------------------------------- varints


def put_varint(out: bytearray, value: int) -> None:
    """Append ``value`` (>= 0) as unsigned LEB128."""
    if value < 0:
        raise CodecError(f"cannot store negative value {value}")
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)


def read_varint(buf: bytes, pos: int, what: str = "value", limit: int = 2**32 - 1) -> tuple[int, int]:
    """``(value, new pos)`` of the LEB128 varint at ``buf[pos]``; refuses one running past the
    end, longer than :data:`MAX_VARINT_BYTES` or above ``limit``."""
    value = shift = 0
    for i in range(MAX_VARINT_BYTES):
        if pos + i >= len(buf):
            raise CodecError(f"payload truncated inside the {what}")
        b = buf[pos + i]
        value |= (b & 0x7F) << shift
        shift += 7
        if b < 0x80:
            if b == 0 and i > 0:  # a trailing zero group: the same value has a shorter form
                raise CodecError(f"{what} is not a canonical varint")
            if value > limit:
                raise CodecError(f"{what} {value} is over the limit of {limit}")
            return value, pos + i + 1
    raise CodecError(f"{what} is not a valid varint")


class ParamWriter:
    """Builds a transform's binary params: varints and little-endian floats."""

    def __init__(self):
        self.out = bytearray()

    def varint(self, value: int) -> ParamWriter:
        put_varint(self.out, int(value))
        return self

    def f32(self, *values: float) -> ParamWriter:
        self.out += np.asarray(values, "<f4").tobytes()
        return self

    def array(self, values: np.ndarray, dtype: str) -> ParamWriter:
        self.out += np.ascontiguousarray(values, dtype).tobytes()
        return self

    def bytes(self) -> bytes:
        return bytes(self.out)


class ParamReader:
    """Reads what :class:`ParamWriter` wrote; every read is checked against the blob's end."""

    def __init__(self, blob: bytes, what: str):
        self.blob, self.pos, self.what = blob, 0, what

    def varint(self, limit: int = 2**32 - 1) -> int:
        value, self.pos = read_varint(self.blob, self.pos, f"{self.what} parameter", limit)
        return value

    def array(self, count: int, dtype: str, finite: bool = True) -> np.ndarray:
        size = count * np.dtype(dtype).itemsize
        if self.pos + size > len(self.blob):
            raise CodecError(f"{self.what} parameters are too short")
        out = np.frombuffer(self.blob, dtype, count, self.pos).astype(np.float64)
        self.pos += size
        if finite and not np.isfinite(out).all():
            raise CodecError(f"{self.what} parameters are not finite")
        return out

    def f32(self) -> float:
        return float(self.array(1, "<f4")[0])

    def done(self) -> None:
        if self.pos != len(self.blob):
            raise CodecError(f"{self.what} parameters have {len(self.blob) - self.pos} bytes too many")


# ---------------------------------------------------------------------------- payloads


@dataclass(frozen=True)
class Header:
    """What a payload says about itself.

    ``state_tag`` is the first byte of the state hash the payload was made with (None:
    made without state); ``size`` the header's bytes, CRC included (0 before packing);
    ``crc_checked`` whether the CRC was verified (always, except by :func:`read_header`
    on a payload made with state).
    """

    codec: str
    shape: tuple[int, int, int]  # (N, T, C) of the decoded activation
    lens: tuple[int, ...]  # (N,) valid frames per item
    params: bytes = b""  # the transform's side information, binary
    point: int = 0  # split point id, opaque to the codec
    state_tag: int | None = None
    size: int = 0
    crc_checked: bool = True

    @property
    def numel(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))


def _crc_seed(state_hash: bytes) -> int:
    return zlib.crc32(state_hash) if state_hash else 0


def pack_payload(header: Header, body: bytes, state_hash: bytes = b"") -> bytes:
    """Header + body as bytes (layout in the module docstring). ``state_hash`` is the
    codec's (:attr:`Codec.state_hash`, ``b""`` without state); ``header.size``,
    ``header.state_tag`` and ``header.crc_checked`` are ignored."""
    t_name, c_name = split_name(header.codec)
    if len(header.shape) != 3 or len(header.lens) != header.shape[0]:
        raise CodecError(f"cannot pack shape {header.shape} with {len(header.lens)} lengths")
    n, t, c = (int(v) for v in header.shape)
    lens = [int(v) for v in header.lens]
    flags = (FLAG_STATE if state_hash else 0) | (FLAG_PARAMS if header.params else 0)
    flags |= FLAG_LENS if any(v != t for v in lens) else 0
    out = bytearray(MAGIC)
    out.append(FORMAT_VERSION << 4 | flags)
    for v in (TRANSFORMS[t_name].id, CODERS[c_name].id, header.point):
        put_varint(out, v)
    if state_hash:
        out.append(state_hash[0])
    for v in (n, t, c, *(lens if flags & FLAG_LENS else ())):
        if v > 2**32 - 1:
            raise CodecError(f"value {v} is too large for a payload header")
        put_varint(out, v)
    if header.params:
        put_varint(out, len(header.params))
        out += header.params
    crc = zlib.crc32(body, zlib.crc32(out, _crc_seed(state_hash)))
    return bytes(out) + crc.to_bytes(4, "little") + body


def _as_bytes(payload) -> bytes:
    if not isinstance(payload, bytes | bytearray | memoryview):
        raise CodecError(f"payload must be bytes, not {type(payload).__name__}")
    return bytes(payload)


def _parse(payload: bytes, limits: DecodeLimits) -> tuple[Header, bytes, int, int]:
    """``(header without CRC check, body, stored CRC, header bytes before the CRC)``."""
    if payload[:4] == b"SPLC":
        raise CodecError("payload has format version 1 (JSON header), which this build no longer reads")
    if len(payload) < 13:
        raise CodecError(f"payload truncated: {len(payload)} bytes is shorter than any header")
    if payload[:2] != MAGIC:
        raise CodecError("not a splitasr codec payload (bad magic)")
    version, flags = payload[2] >> 4, payload[2] & 0x0F
    if version != FORMAT_VERSION:
        raise CodecError(f"unsupported payload format version {version} (this build reads {FORMAT_VERSION})")
    if flags & FLAG_RESERVED:
        raise CodecError("corrupt payload header (reserved flag set)")
    t_id, pos = read_varint(payload, 3, "transform id")
    c_id, pos = read_varint(payload, pos, "coder id")
    if t_id not in TRANSFORM_IDS or c_id not in CODER_IDS:
        raise CodecError(f"payload names an unknown codec (transform id {t_id}, coder id {c_id})")
    point, pos = read_varint(payload, pos, "split point id")
    tag = None
    if flags & FLAG_STATE:
        if pos >= len(payload):
            raise CodecError("payload truncated before its state tag")
        tag, pos = payload[pos], pos + 1
    n, pos = read_varint(payload, pos, "item count")
    t, pos = read_varint(payload, pos, "frame count")
    c, pos = read_varint(payload, pos, "channel count")
    check_shape((n, t, c), limits)
    if flags & FLAG_LENS:
        if pos + n > len(payload):  # at least a byte per length: checked before reading N of them
            raise CodecError("payload truncated inside its valid lengths")
        lens = []
        for _ in range(n):
            v, pos = read_varint(payload, pos, "valid length", t)
            lens.append(v)
    else:
        lens = [t] * n
    params = b""
    if flags & FLAG_PARAMS:
        size, pos = read_varint(payload, pos, "params length", len(payload))
        if size == 0 or pos + size > len(payload):
            raise CodecError("payload truncated inside its params")
        params, pos = payload[pos : pos + size], pos + size
    if pos + 4 > len(payload):
        raise CodecError("payload truncated before its CRC")
    crc = int.from_bytes(payload[pos : pos + 4], "little")
    codec = f"{TRANSFORM_IDS[t_id]}+{CODER_IDS[c_id]}"
    header = Header(codec, (n, t, c), tuple(lens), params, point, tag, pos + 4, False)
    return header, payload[pos + 4 :], crc, pos


def check_shape(shape: tuple[int, int, int], limits: DecodeLimits) -> None:
    """Refuse a declared ``(N, T, C)`` outside ``limits``."""
    n, t, c = shape
    if n > limits.max_items:
        raise CodecError(f"payload declares {n} items, over the limit of {limits.max_items}")
    if t > limits.max_frames:
        raise CodecError(f"payload declares {t} frames per item, over the limit of {limits.max_frames}")
    if c < 1:
        raise CodecError("payload declares no channels")
    if limits.channels is not None and c != limits.channels:
        raise CodecError(f"payload declares {c} channels where {limits.channels} are expected")
    if n * t * c > limits.max_values:
        raise CodecError(f"declared shape {shape} exceeds the limit of {limits.max_values} values")


def read_header(payload: bytes, limits: DecodeLimits | None = None) -> Header:
    """The header of a payload, without decoding it: enough to route it (``.codec``,
    ``.point``) and size it (``.shape``, ``.lens``, ``.size``). Checks magic, version, ids,
    every field against ``limits``, and the CRC of a payload made without codec state
    (``crc_checked``); one made with state is checked by :meth:`Codec.decompress`."""
    payload = _as_bytes(payload)
    header, body, crc, end = _parse(payload, limits or DecodeLimits())
    if header.state_tag is not None:
        return header
    _check_crc(payload, body, crc, end, b"", "")
    return _checked(header)


def _checked(header: Header) -> Header:
    return Header(
        header.codec, header.shape, header.lens, header.params, header.point, header.state_tag, header.size
    )


def _check_crc(payload: bytes, body: bytes, crc: int, end: int, state_hash: bytes, hint: str) -> None:
    if zlib.crc32(body, zlib.crc32(payload[:end], _crc_seed(state_hash))) != crc:
        raise CodecError(f"payload is corrupted (CRC32 mismatch){hint}")


def unpack_payload(
    payload: bytes, state_hash: bytes = b"", limits: DecodeLimits | None = None, name: str | None = None
) -> tuple[Header, bytes]:
    """Parse and check a payload made with ``state_hash`` (``b""``: without state) by codec
    ``name`` (None: any); raises :class:`CodecError` on anything wrong."""
    payload = _as_bytes(payload)
    header, body, crc, end = _parse(payload, limits or DecodeLimits())
    if name is not None and header.codec != name:
        raise CodecError(f"payload was made by codec {header.codec!r}, not {name!r}")
    name = name or "this codec"
    if header.state_tag is None and state_hash:
        raise CodecError(f"payload was made without codec state, and {name} has state (different state)")
    if header.state_tag is not None and not state_hash:
        raise CodecError(
            f"payload was made with calibrated or learned state (tag {header.state_tag:02x}), "
            f"and {name} has none"
        )
    if header.state_tag is not None and header.state_tag != state_hash[0]:
        raise CodecError(
            f"payload was made with different codec state (other weights or calibration tables: "
            f"tag {header.state_tag:02x}, {name} has {state_hash[0]:02x})"
        )
    _check_crc(
        payload, body, crc, end, state_hash, ", or made with different codec state" if state_hash else ""
    )
    return _checked(header), body


# ---------------------------------------------------------------------------- parts


@dataclass
class Symbols:
    """Integer symbols from a :class:`Transform`.

    ``data`` has any shape and an integer dtype; every value lies in ``[0, alphabet)``.
    ``params`` is the side information the transform needs to invert; it travels in the
    header as the bytes of :meth:`Transform.pack_params`.
    """

    data: np.ndarray
    alphabet: int
    params: dict = field(default_factory=dict)


def symbol_dtype(alphabet: int) -> np.dtype:
    """The narrowest unsigned dtype holding symbols of ``alphabet``."""
    if alphabet <= 256:
        return np.dtype(np.uint8)
    if alphabet <= 65536:
        return np.dtype("<u2")
    return np.dtype("<u4")


class Transform(ABC):
    """Float activations ``(N, T, C)`` <-> integer :class:`Symbols`."""

    name: str = ""
    id: int = 0
    lossless: bool = False
    decodes_to: str | None = None  # a later split point the inverse returns; None: the same
    takes_option: bool = False  # accepts "name@option" (see with_option)

    def __init__(self, state: dict | None = None):
        self.state = state or {}

    @property
    def state_digest(self) -> bytes:
        """Hash of the state this part codes with (``b""``: none); see :mod:`.state`."""
        from splitasr.codecs.state import state_digest

        if "_digest" not in self.__dict__:
            self._digest = state_digest(self.state)
        return self._digest

    def with_option(self, option: str) -> Transform:
        """This transform set by the ``@option`` of its codec name (``lrd@2k``: the rate),
        sharing its state; only for transforms with ``takes_option``."""
        raise CodecError(f"{self.name} takes no '@' option")

    def output_layout(
        self, shape: tuple[int, ...], lens: tuple[int, ...]
    ) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """Decoded ``(shape, lens)`` for an input of ``shape`` ``(N, T, C)`` with valid
        ``lens``: the same for most transforms; learned ones may change the frame rate,
        the width or (``decodes_to``) the split point."""
        return shape, lens

    def check_layout(self, shape: tuple[int, int, int], limits: DecodeLimits) -> None:
        """Refuse a decoded ``shape`` this transform cannot produce (say, a channel count
        other than its state's) before anything is allocated. Default: any shape."""
        return None

    def pack_params(self, params: dict, shape: tuple[int, int, int]) -> bytes:
        """``Symbols.params`` as bytes for the header; ``shape`` is the decoded shape."""
        if params:
            raise CodecError(f"{self.name} has no params to pack, got {sorted(params)}")
        return b""

    def unpack_params(self, blob: bytes, shape: tuple[int, int, int]) -> dict:
        """Inverse of :meth:`pack_params`, checked against ``shape``; CodecError if malformed."""
        if blob:
            raise CodecError(f"{self.name} payloads carry no params, this one has {len(blob)} bytes")
        return {}

    @abstractmethod
    def forward(self, x: np.ndarray) -> Symbols:
        """``x``: float32 ``(N, T, C)``."""

    @abstractmethod
    def inverse(self, symbols: np.ndarray, params: dict, shape: tuple[int, ...]) -> np.ndarray:
        """Back to float32 of ``shape``."""

    @abstractmethod
    def symbol_layout(self, params: dict, shape: tuple[int, ...]) -> tuple[tuple[int, ...], int]:
        """``(symbol array shape, alphabet)`` for a payload, so a coder can decode blind.
        The symbol count must be O(N * T * C) for any shape that passed :meth:`check_layout`."""


class Coder(ABC):
    """Integer symbols <-> bytes.

    :meth:`decode` must refuse a body inconsistent with the symbol count it is asked for
    before allocating anything proportional to that count.
    """

    name: str = ""
    id: int = 0

    def __init__(self, state: dict | None = None):
        self.state = state or {}

    @property
    def state_digest(self) -> bytes:
        from splitasr.codecs.state import state_digest

        if "_digest" not in self.__dict__:
            self._digest = state_digest(self.state)
        return self._digest

    def bind(self, transform: Transform) -> None:
        """Called once by :class:`Codec` with the transform this coder follows: a coder may
        take a model of the symbols from it (``ans`` codes ``lrd`` latents with the
        transform's learned per-channel prior). Default: nothing."""
        return None

    @abstractmethod
    def encode(self, symbols: np.ndarray, alphabet: int) -> bytes: ...

    @abstractmethod
    def decode(self, body: bytes, shape: tuple[int, ...], alphabet: int) -> np.ndarray: ...


TRANSFORMS: dict[str, type[Transform]] = {}
CODERS: dict[str, type[Coder]] = {}
TRANSFORM_IDS: dict[int, str] = {}
CODER_IDS: dict[int, str] = {}
DEFAULT_TRANSFORM = "f32"
DEFAULT_CODER = "pack"
ALIASES = {"raw": "f32+pack"}  # paper 000's uncompressed float32 activations


def _register(table: dict, ids: dict, name: str, id: int) -> Callable:
    """Decorator adding a class to ``table`` under ``name`` and ``ids`` under ``id``; names
    are unique across parts, ids within a table (1..127: one varint byte)."""

    def wrap(cls):
        if name in TRANSFORMS or name in CODERS:
            raise ValueError(f"codec part {name!r} registered twice")
        if not isinstance(id, int) or not 1 <= id <= 127 or id in ids:
            raise ValueError(f"codec part {name!r}: id {id!r} is taken or outside 1..127")
        cls.name, cls.id = name, id
        table[name] = cls
        ids[id] = name
        return cls

    return wrap


def register_transform(name: str, *, id: int) -> Callable[[type[Transform]], type[Transform]]:
    return _register(TRANSFORMS, TRANSFORM_IDS, name, id)


def register_coder(name: str, *, id: int) -> Callable[[type[Coder]], type[Coder]]:
    return _register(CODERS, CODER_IDS, name, id)


class Codec:
    """A transform followed by a coder; ``compress`` -> bytes, ``decompress`` -> tensors."""

    def __init__(self, transform: Transform, coder: Coder, limits: DecodeLimits | None = None):
        self.transform, self.coder = transform, coder
        coder.bind(transform)
        self.limits = limits or DecodeLimits()
        t_digest, c_digest = transform.state_digest, coder.state_digest
        self.state_hash = b""
        if t_digest or c_digest:
            import hashlib

            self.state_hash = hashlib.sha256(b"splitasr codec state\0" + t_digest + b"\0" + c_digest).digest()

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

    def compress(
        self, x: torch.Tensor | np.ndarray, lens: torch.Tensor | np.ndarray | None = None, point: int = 0
    ) -> bytes:
        """Encode ``x`` ``(N, T, C)`` (any float dtype; a torch tensor or a numpy array) and
        its valid lengths ``(N,)``; ``point`` is the split point id the payload carries
        (opaque to the codec). Needs torch only when given torch tensors."""
        if hasattr(x, "detach"):  # a torch tensor
            import torch

            x = x.detach().cpu().to(torch.float32).contiguous().numpy()
        arr = np.ascontiguousarray(x, np.float32)
        if arr.ndim != 3:
            raise CodecError(f"codecs take (N, T, C) activations, got shape {tuple(arr.shape)}")
        if lens is None:
            lens_t = (arr.shape[1],) * arr.shape[0]
        else:
            lens_t = tuple(int(v) for v in np.asarray(lens).reshape(-1))
        if len(lens_t) != arr.shape[0] or any(not 0 <= v <= arr.shape[1] for v in lens_t):
            raise CodecError(f"valid lengths {list(lens_t)} do not fit shape {tuple(arr.shape)}")
        sym = self.transform.forward(arr)
        body = self.coder.encode(sym.data, sym.alphabet)
        return self.pack_payload(sym, body, tuple(arr.shape), lens_t, point)

    def pack_payload(
        self, sym: Symbols, body: bytes, shape: tuple[int, ...], lens: tuple[int, ...], point: int = 0
    ) -> bytes:
        """The payload for symbols ``sym`` coded as ``body`` from an input of ``shape`` with
        valid ``lens`` (what :meth:`compress` returns)."""
        out_shape, out_lens = self.transform.output_layout(tuple(shape), tuple(lens))
        params = self.transform.pack_params(sym.params, out_shape)
        header = Header(self.name, out_shape, out_lens, params, int(point))
        return pack_payload(header, body, self.state_hash)

    def read_header(self, payload: bytes, limits: DecodeLimits | None = None) -> Header:
        """The header of a payload made by this codec, every check of :meth:`decompress`
        short of decoding the body done (CRC with this codec's state included)."""
        return self._open(payload, limits or self.limits)[0]

    def _open(self, payload: bytes, limits: DecodeLimits) -> tuple[Header, bytes]:
        header, body = unpack_payload(payload, self.state_hash, limits, self.name)
        self.transform.check_layout(header.shape, limits)
        return header, body

    def decompress(
        self, payload: bytes, limits: DecodeLimits | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Decode a payload made by this codec: ``(x (N, T, C) float32, lens (N,) int64)``,
        the activation at :meth:`decodes_to` of the point it was made at. ``limits``
        (default: the codec's) bound what a payload may declare."""
        import torch

        header, body = self._open(payload, limits or self.limits)
        try:
            params = self.transform.unpack_params(header.params, header.shape)
            sym_shape, alphabet = self.transform.symbol_layout(params, header.shape)
            symbols = self.coder.decode(body, sym_shape, alphabet)
            x = self.transform.inverse(symbols, params, header.shape)
        except CodecError:
            raise
        except Exception as exc:  # a corrupt body that passed the CRC by chance, or bad params
            raise CodecError(f"cannot decode {self.name} payload ({type(exc).__name__}: {exc})") from None
        if x.shape != header.shape:
            raise CodecError(f"decoded shape {x.shape} does not match the header's {header.shape}")
        lens = torch.tensor(header.lens, dtype=torch.int64).reshape(-1)
        return torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)), lens


def name_option(name: str) -> str:
    """The option after ``@`` in a codec name's transform (``"lrd@2k+ans" -> "2k"``), or
    ``""``. Only transforms with ``takes_option`` accept one (:meth:`Transform.with_option`);
    payloads never carry the option's text, only what the transform makes of it."""
    return ALIASES.get(name, name).split("+")[0].partition("@")[2].strip()


def split_name(name: str) -> tuple[str, str]:
    """``"q8+ans" -> ("q8", "ans")``; completes single names with the default other part.
    A transform's ``@option`` (``"lrd@2k+ans" -> ("lrd", "ans")``) is checked and dropped:
    see :func:`name_option`."""
    parts = [p.strip() for p in ALIASES.get(name, name).split("+")]
    base, at, option = parts[0].partition("@")
    if at:
        if not option.strip() or not getattr(TRANSFORMS.get(base.strip()), "takes_option", False):
            raise CodecError(f"codec {name!r}: only rate-distortion transforms take an '@' option (lrd@2k)")
        parts[0] = base.strip()
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


def get_codec(name: str, state_dir: str | Path | None = None, limits: DecodeLimits | None = None) -> Codec:
    """Build a codec by name. ``state_dir`` holds calibrated/learned state (see
    :mod:`splitasr.codecs.state`); parts that need state and find none raise CodecError.
    ``limits`` are the codec's default :class:`DecodeLimits`."""
    from splitasr.codecs.state import load_state

    t_name, c_name = split_name(name)
    t_state = load_state(state_dir, t_name) if state_dir else None
    c_state = load_state(state_dir, f"{t_name}+{c_name}") if state_dir else None
    transform = TRANSFORMS[t_name](t_state)
    if option := name_option(name):
        transform = transform.with_option(option)
    return Codec(transform, CODERS[c_name](c_state), limits)


def available_codecs() -> list[str]:
    return sorted(f"{t}+{c}" for t in TRANSFORMS for c in CODERS)
