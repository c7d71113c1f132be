"""Entropy coders: canonical Huffman (numpy) and ANS (``constriction``).

Both model the symbols as i.i.d. draws from a table, one table per *stream*:

* a 2-D symbol array with at most :data:`MAX_PLANES` rows is a stack of planes (``f32``
  emits ``(4, n)`` byte planes) and each row is its own stream, because the exponent byte
  of a float is far more predictable than its low mantissa bytes;
* anything else (``(N, T, C)`` codes of a quantiser) is flattened into one stream.

The table is either *static*, learned by :func:`splitasr.training.calibrate.calibrate` over
training activations and saved as coder state (``{"counts": (P, alphabet) int64}``,
smoothed so every symbol can be coded, see :func:`fit_counts`), or, without state, the
message's own histogram, stored compactly at the start of the body.

Huffman spends a whole number of bits per symbol, so on small alphabets (``q2``, ``q4``) it
stays several percent above the entropy, and it cannot go below 1 bit per symbol; ANS
comes within a fraction of a percent.

Body layouts (all integers little-endian, ``varint`` is unsigned LEB128). With a learned
table (the coder has state, which the payload's state hash confirms) the body starts
directly with the coded data; with its own histogram it starts with
``varint len | zstd(table)``:

* ``huffman``: ``(own table) | varint bits of every chunk of every stream | each stream's
  bits, byte-aligned``. Streams are cut into chunks of :data:`CHUNK` symbols whose bit
  lengths are stored, so the decoder walks many chunks in lock-step with numpy
  (:data:`CHUNK` vectorised steps per batch of at most :data:`BATCH_BITS` bits) instead of
  one Python step per symbol.
* ``ans``: ``(own table) | ANS words:u32...``; all streams go through one ANS stack, which
  starts from the state :data:`ANS_START` (not 0: from an empty stack the first symbol of
  a model would cost nothing, and a body could then claim any number of them) and must
  end there.

A corrupt body raises :class:`CodecError`: every length, count and table entry is checked
against what the header's shape allows, and the body's size against the symbol count it
must hold (Huffman: at least a varint per chunk and one bit per symbol; ANS: the minimum
code length of a learned table, or the entropy of its own histogram, whose counts must add
up to the symbol count), before anything proportional to the symbol count is allocated.
Decoded symbols are stored at their narrowest width (uint8 up to 256 symbols).
"""

from __future__ import annotations

import hashlib
import math
import threading
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from splitasr.codecs.base import CodecError, Coder, register_coder, symbol_dtype

MAX_PLANES = 8  # a 2-D symbol array with more rows than this is one stream, not planes
MAX_CODE_BITS = 20  # Huffman length limit: decode tables have at most 2**20 entries
CHUNK = 1024  # symbols per independently located Huffman chunk
BATCH_BITS = 1 << 22  # Huffman bits decoded at once: bounds the decoder's lookup tables
LOOKUP = 1 << 18  # Huffman symbols looked up at once
ANS_START = 1 << 24  # the ANS stack's first word (see the module docstring)
ANS_CHUNK = 1 << 20  # ANS symbols decoded at once
_MAX_VARINT_BYTES = 9  # 63-bit values


def _ans_words(body: bytes, offset: int, need_bits: float, what: str) -> np.ndarray:
    """The 32-bit words of an ANS body from ``offset``, refused before anything is
    allocated for the symbols when the body is shorter than ``need_bits`` allow
    (``what``: the symbols, for the message)."""
    if (len(body) - offset) % 4:
        raise CodecError("ANS body is not a whole number of 32-bit words")
    words = np.frombuffer(body, "<u4", offset=offset).astype(np.uint32)
    if 0.99 * need_bits - 96 > 32 * words.size:
        raise CodecError(
            f"ANS body of {len(body)} bytes is too short for {what} "
            f"(they need at least {need_bits / 8:.0f} bytes)"
        )
    return words


def _ans_decode(words: np.ndarray, fill: Callable[[object], None]) -> None:
    """Run ``fill(coder)`` on an ANS decoder over ``words``; whatever constriction raises
    becomes a :class:`CodecError`, and the stack must end at :data:`ANS_START` (every word
    used, none missing)."""
    import constriction

    try:
        coder = constriction.stream.stack.AnsCoder(words)
        fill(coder)
        rest = coder.get_compressed()
    except (ValueError, KeyError, RuntimeError, IndexError) as exc:
        raise CodecError(f"ANS: {exc}") from None
    if rest.size != 1 or int(rest[0]) != ANS_START:
        raise CodecError("ANS body does not end where its symbols do")


# ---------------------------------------------------------------------------- varints


def encode_varints(values: np.ndarray) -> bytes:
    """Unsigned LEB128 of non-negative integers ``(n,)`` (< 2**63), vectorised."""
    v = np.asarray(values, dtype=np.uint64).ravel()
    if v.size == 0:
        return b""
    nbytes = np.ones(v.size, np.int64)
    for k in range(1, _MAX_VARINT_BYTES):
        nbytes += v >= np.uint64(1 << (7 * k))
    idx = np.arange(int(nbytes.sum())) - np.repeat(np.cumsum(nbytes) - nbytes, nbytes)
    groups = (np.repeat(v, nbytes) >> (7 * idx).astype(np.uint64)) & np.uint64(0x7F)
    more = idx < np.repeat(nbytes, nbytes) - 1
    return (groups | (more.astype(np.uint64) << np.uint64(7))).astype(np.uint8).tobytes()


def decode_varints(buf: bytes, pos: int, count: int) -> tuple[np.ndarray, int]:
    """Read ``count`` varints from ``buf[pos:]``: ``(values (count,) int64, new pos)``."""
    if count == 0:
        return np.zeros(0, np.int64), pos
    if pos > len(buf):
        raise CodecError("body truncated before its varints")
    window = np.frombuffer(buf[pos : pos + count * _MAX_VARINT_BYTES], np.uint8)
    ends = np.flatnonzero(window < 0x80)[:count]
    if ends.size < count:
        raise CodecError("body truncated inside its varints")
    starts = np.concatenate([[0], ends[:-1] + 1])
    sizes = ends - starts + 1
    if sizes.max() > _MAX_VARINT_BYTES:
        raise CodecError("varint too long")
    used = window[: ends[-1] + 1].astype(np.uint64)
    idx = np.arange(used.size) - np.repeat(starts, sizes)
    parts = (used & np.uint64(0x7F)) << (7 * idx).astype(np.uint64)
    values = np.add.reduceat(parts, starts)
    if np.any(values >= np.uint64(1 << 63)):
        raise CodecError("varint out of range")
    return values.astype(np.int64), pos + int(ends[-1]) + 1


# ---------------------------------------------------------------------------- streams


def stream_shape(shape: tuple[int, ...]) -> tuple[int, int]:
    """``(streams, symbols per stream)`` for a symbol array of ``shape`` (see module doc)."""
    if len(shape) == 2 and 1 <= shape[0] <= MAX_PLANES:
        return int(shape[0]), int(shape[1])
    return 1, int(np.prod(shape, dtype=np.int64))


def as_streams(symbols: np.ndarray) -> np.ndarray:
    """The symbols as ``(S, n)`` int64 streams."""
    s, n = stream_shape(symbols.shape)
    return np.asarray(symbols).reshape(s, n).astype(np.int64, copy=False)


def _check_range(streams: np.ndarray, alphabet: int) -> None:
    if streams.size and (streams.min() < 0 or streams.max() >= alphabet):
        raise CodecError(f"symbols outside the alphabet [0, {alphabet})")


def histogram(row: np.ndarray, alphabet: int) -> tuple[np.ndarray, np.ndarray]:
    """``(ids (k,), counts (k,))`` of the symbols that occur in ``row`` ``(n,)``; an empty
    row gets the dummy table ``([0], [1])`` so every stream has at least one symbol."""
    counts = np.bincount(row, minlength=alphabet)
    ids = np.flatnonzero(counts)
    if ids.size == 0:
        return np.zeros(1, np.int64), np.ones(1, np.int64)
    return ids, counts[ids].astype(np.int64)


def _ranks(ids: np.ndarray, alphabet: int) -> np.ndarray:
    """``(alphabet,)`` map from symbol to its index among ``ids``."""
    rank = np.zeros(alphabet, np.int64)
    rank[ids] = np.arange(ids.size)
    return rank


def stream_counts(symbols: list[np.ndarray], alphabet: int) -> np.ndarray:
    """Histogram ``(S, alphabet)`` int64 of a list of symbol arrays with the same stream count."""
    counts = None
    for sym in symbols:
        streams = as_streams(sym)
        _check_range(streams, alphabet)
        c = np.stack([np.bincount(row, minlength=alphabet) for row in streams]).astype(np.int64)
        if counts is not None and counts.shape != c.shape:
            raise CodecError("symbol arrays disagree on their number of streams")
        counts = c if counts is None else counts + c
    if counts is None:
        raise CodecError("no symbols to count")
    return counts


def entropy_bits(counts: np.ndarray) -> float:
    """Total empirical entropy in bits of streams with histograms ``counts`` ``(S, A)``."""
    total = 0.0
    for row in np.atleast_2d(counts).astype(np.float64):
        n = row.sum()
        p = row[row > 0] / max(n, 1.0)
        total += float(-(p * np.log2(p)).sum() * n)
    return total


# ------------------------------------------------------------------------- table state


def _state_counts(state: dict) -> np.ndarray | None:
    """The learned ``(P, alphabet)`` count table from coder state, checked."""
    counts = state.get("counts")
    if counts is None:
        return None
    counts = np.asarray(counts)
    if counts.ndim != 2 or counts.shape[0] < 1 or counts.shape[1] < 2 or np.any(counts < 0):
        raise CodecError("coder state: 'counts' must be a non-negative (planes, alphabet) table")
    if np.any(counts.sum(axis=1) == 0):
        raise CodecError("coder state: every plane of 'counts' needs a symbol with a nonzero count")
    return counts.astype(np.int64)


def fit_counts(symbols: list[np.ndarray], alphabet: int, unseen_mass: float = 0.01) -> dict:
    """Coder state from training symbols: a smoothed count table ``(S, alphabet)`` int64.

    Every symbol gets one pseudo-count on top of ``scale`` times its observed count, with
    ``scale`` chosen so the pseudo-counts hold at most about ``unseen_mass`` of the total:
    plain Laplace smoothing (scale 1) would give a 65536-symbol alphabet learned from a few
    hundred thousand values a quarter of its probability for symbols never seen.
    """
    counts = stream_counts(symbols, alphabet)
    seen = max(int(counts.sum(axis=1).min()), 1)
    scale = max(1, int(np.ceil(alphabet / (unseen_mass * seen))))
    return {"counts": counts * scale + 1, "alphabet": int(alphabet), "scale": scale}


_STATIC_MODELS: dict[tuple, list] = {}  # learned models by (coder, streams, table hash)
_STATIC_CACHE_SIZE = 16
_STATIC_LOCK = threading.Lock()


class _TableCoder(Coder):
    """Shared handling of static (state) versus own (in-body) tables."""

    def __init__(self, state: dict | None = None):
        super().__init__(state)
        self._counts = _state_counts(self.state)
        self._hash = hashlib.sha256(self._counts.tobytes()).hexdigest() if self._counts is not None else ""

    @classmethod
    def fit_state(cls, symbols: list[np.ndarray], alphabet: int) -> dict:
        """Learn the static table from a calibration set of symbol arrays."""
        return fit_counts(symbols, alphabet)

    def _static_rows(self, n_streams: int, alphabet: int) -> list[np.ndarray] | None:
        """One count row per stream from state, or None when there is no learned table."""
        if self._counts is None:
            return None
        p, a = self._counts.shape
        if a != alphabet:
            raise CodecError(f"learned table is for alphabet {a}, symbols have {alphabet}")
        if p not in (1, n_streams):
            raise CodecError(f"learned table has {p} planes, symbols have {n_streams} streams")
        return [self._counts[0 if p == 1 else s] for s in range(n_streams)]

    def _static(self, n_streams: int, alphabet: int) -> list | None:
        """Per-stream models built from the learned table, cached across instances (a
        65536-symbol Huffman code takes tens of milliseconds to build)."""
        rows = self._static_rows(n_streams, alphabet)
        if rows is None:
            return None
        key = (type(self).__name__, n_streams, self._hash)
        with _STATIC_LOCK:  # shared by every thread of a server: read, fill and evict under one lock
            models = _STATIC_MODELS.get(key)
        if models is None:  # built outside the lock; two threads may build the same, both correct
            models = [self._model_from_counts(np.arange(alphabet), r) for r in rows]
            with _STATIC_LOCK:
                while len(_STATIC_MODELS) >= _STATIC_CACHE_SIZE:
                    _STATIC_MODELS.pop(next(iter(_STATIC_MODELS)))
                _STATIC_MODELS[key] = models
        return models

    def _model_from_counts(self, ids: np.ndarray, counts: np.ndarray):
        raise NotImplementedError

    def _head(self, table: bytes | None = None) -> bytes:
        """Nothing with a learned table; ``varint len | table`` with the message's own."""
        if table is None:
            return b""
        return encode_varints(np.array([len(table)])) + table

    def _read_head(self, body: bytes, n_streams: int, alphabet: int, value_limit: int):
        """The message's own tables ``[(ids, values)]`` per stream, or None with a learned
        table; and the position after them."""
        if self._counts is not None:
            self._static_rows(n_streams, alphabet)  # checks the table fits the symbols
            return None, 0
        if not body:
            raise CodecError("empty body")
        (size,), pos = decode_varints(body, 0, 1)
        if size == 0 or pos + size > len(body):
            raise CodecError("table runs past the end of the body")
        tables = unpack_tables(body[pos : pos + size], n_streams, alphabet, value_limit)
        return tables, pos + size


def pack_tables(tables: list[tuple[np.ndarray, np.ndarray]]) -> bytes:
    """Sparse tables ``[(ids (k,) increasing, values (k,) >= 0)]`` as zstd-compressed varints:
    per table ``k``, the gaps between ids (minus one) and the values."""
    import zstandard

    parts = []
    for ids, values in tables:
        gaps = np.diff(ids, prepend=-1) - 1
        parts.append(encode_varints(np.concatenate([[ids.size], gaps, values])))
    return zstandard.ZstdCompressor(level=19).compress(b"".join(parts))


def unpack_tables(
    blob: bytes, n_tables: int, alphabet: int, value_limit: int
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Inverse of :func:`pack_tables`, checking every table against ``alphabet``."""
    import zstandard

    bound = n_tables * (1 + 2 * alphabet) * _MAX_VARINT_BYTES
    try:
        declared = zstandard.frame_content_size(blob)
    except zstandard.ZstdError as exc:
        raise CodecError(f"table: {exc}") from None
    if declared < 0 or declared > bound:
        raise CodecError("table has an impossible size")
    try:
        raw = zstandard.ZstdDecompressor().decompress(blob, max_output_size=bound)
    except zstandard.ZstdError as exc:
        raise CodecError(f"table: {exc}") from None
    tables, pos = [], 0
    for _ in range(n_tables):
        (k,), pos = decode_varints(raw, pos, 1)
        if not 1 <= k <= alphabet:
            raise CodecError("table has an impossible number of symbols")
        vals, pos = decode_varints(raw, pos, 2 * int(k))
        if vals[:k].max() >= alphabet:
            raise CodecError("table names a symbol outside the alphabet")
        ids = np.cumsum(vals[:k] + 1) - 1
        if ids[-1] >= alphabet:
            raise CodecError("table names a symbol outside the alphabet")
        values = vals[k:]
        if values.min() < 1 or values.max() > value_limit:
            raise CodecError("table has an impossible entry")
        tables.append((ids, values))
    if pos != len(raw):
        raise CodecError("table has trailing bytes")
    return tables


# ---------------------------------------------------------------------------- Huffman


def _minimum_redundancy(weights: list[int]) -> list[int]:
    """Huffman code lengths of ``weights`` sorted in non-decreasing order (Moffat and
    Katajainen's in-place algorithm: O(k) after the sort, no heap)."""
    a, n = list(weights), len(weights)
    if n == 1:
        return [0]
    a[0] += a[1]
    root, leaf = 0, 2
    for nxt in range(1, n - 1):
        if leaf >= n or a[root] < a[leaf]:
            a[nxt], a[root] = a[root], nxt
            root += 1
        else:
            a[nxt] = a[leaf]
            leaf += 1
        if leaf >= n or (root < nxt and a[root] < a[leaf]):
            a[nxt] += a[root]
            a[root] = nxt
            root += 1
        else:
            a[nxt] += a[leaf]
            leaf += 1
    a[n - 2] = 0
    for nxt in range(n - 3, -1, -1):
        a[nxt] = a[a[nxt]] + 1
    avail, used, depth, root, nxt = 1, 0, 0, n - 2, n - 1
    while avail > 0:
        while root >= 0 and a[root] == depth:
            used += 1
            root -= 1
        while avail > used:
            a[nxt] = depth
            nxt -= 1
            avail -= 1
        avail, depth, used = 2 * used, depth + 1, 0
    return a


def huffman_lengths(counts: np.ndarray, max_bits: int = MAX_CODE_BITS) -> np.ndarray:
    """Code lengths ``(k,)`` for positive ``counts`` ``(k,)``, at most ``max_bits`` long.

    Over-long codes are shortened by raising the smallest counts to a floor that doubles
    until the code fits, which only touches the rarest symbols (as Brotli does). A single
    symbol gets length 0: it costs no bits at all.
    """
    counts = np.asarray(counts, dtype=np.int64)
    if counts.size == 0 or counts.min() < 1:
        raise CodecError("Huffman counts must be positive")
    if counts.size > 1 << max_bits:
        raise CodecError("alphabet too large for the Huffman length limit")
    order = np.argsort(counts, kind="stable")
    floor = 1
    while True:
        w = np.maximum(counts[order], floor)
        lens = np.asarray(_minimum_redundancy(w.tolist()), dtype=np.int64)
        if lens.max() <= max_bits:
            out = np.empty_like(lens)
            out[order] = lens
            return out
        floor *= 2


@dataclass(frozen=True)
class HuffmanCode:
    """A canonical prefix code; arrays are sorted by (length, symbol)."""

    symbols: np.ndarray  # (k,) int64
    lengths: np.ndarray  # (k,) int64, 0 only for a single-symbol code
    codes: np.ndarray  # (k,) int64 canonical code values

    @classmethod
    def from_lengths(cls, ids: np.ndarray, lengths: np.ndarray) -> HuffmanCode:
        """Canonical codes for symbols ``ids`` ``(k,)`` with code ``lengths`` ``(k,)``."""
        ids, lengths = np.asarray(ids, np.int64), np.asarray(lengths, np.int64)
        if ids.size == 1:
            return cls(ids, np.zeros(1, np.int64), np.zeros(1, np.int64))
        if lengths.min() < 1 or lengths.max() > MAX_CODE_BITS:
            raise CodecError("Huffman code length out of range")
        if np.sum(np.ldexp(1.0, -lengths)) > 1.0:
            raise CodecError("Huffman code lengths violate the Kraft inequality")
        order = np.lexsort((ids, lengths))
        ids, lengths = ids[order], lengths[order]
        bl_count = np.bincount(lengths, minlength=MAX_CODE_BITS + 1)
        first = np.zeros(MAX_CODE_BITS + 2, np.int64)
        for n in range(1, MAX_CODE_BITS + 1):
            first[n] = (first[n - 1] + bl_count[n - 1]) << 1
        group_start = np.searchsorted(lengths, lengths, side="left")
        codes = first[lengths] + (np.arange(ids.size) - group_start)
        return cls(ids, lengths, codes)

    @property
    def max_len(self) -> int:
        return int(self.lengths.max())

    def encoder_tables(self, alphabet: int) -> tuple[np.ndarray, np.ndarray]:
        """``(code (alphabet,), length (alphabet,))``; absent symbols have length -1."""
        code = np.zeros(alphabet, np.int64)
        length = np.full(alphabet, -1, np.int64)
        code[self.symbols] = self.codes
        length[self.symbols] = self.lengths
        return code, length

    @cached_property
    def decoder_tables(self) -> tuple[np.ndarray, np.ndarray]:
        """Lookup by the next ``max_len`` bits: ``(symbol (2**L,) int32, length (2**L,))``.

        Codes that are not in the code (Kraft sum < 1) decode to -1, caught afterwards.
        Cached: a learned code builds its tables once.
        """
        width = self.max_len
        reps = np.left_shift(1, width - self.lengths)
        sym = np.full(1 << width, -1, np.int32)
        length = np.ones(1 << width, np.uint8)
        used = int(reps.sum())
        sym[:used] = np.repeat(self.symbols.astype(np.int32), reps)
        length[:used] = np.repeat(self.lengths.astype(np.uint8), reps)
        return sym, length


def _chunk_ends(n: int) -> np.ndarray:
    """Index one past the last symbol of every chunk of a stream of ``n`` symbols."""
    return np.minimum(np.arange(1, -(-n // CHUNK) + 1) * CHUNK, n)


def huffman_encode_stream(data: np.ndarray, code: HuffmanCode, alphabet: int) -> tuple[np.ndarray, bytes]:
    """Code one stream ``(n,)``: ``(bits per chunk (ceil(n/CHUNK),), bytes)``.

    Each code is at most 20 bits and starts at most 7 bits into a byte, so it lies in one
    big-endian 32-bit window at its first byte; the windows' bytes are summed with
    ``bincount`` (codes never share bits, so the sum is the bitwise OR).
    """
    code_of, len_of = code.encoder_tables(alphabet)
    lens = len_of[data]
    if lens.size and lens.min() < 0:
        raise CodecError("symbol missing from the Huffman code")
    ends = np.cumsum(lens)
    chunk_bits = np.diff(ends[_chunk_ends(data.size) - 1], prepend=0) if data.size else np.zeros(0, np.int64)
    total = int(ends[-1]) if data.size else 0
    if total == 0:
        return chunk_bits, b""
    starts = ends - lens
    window = code_of[data] << (32 - (starts & 7) - lens)
    first = starts >> 3
    nbytes = (total + 7) // 8
    out = np.zeros(nbytes + 3)
    for k in range(4):
        out += np.bincount(first + k, weights=(window >> (24 - 8 * k)) & 0xFF, minlength=nbytes + 3)
    return chunk_bits, out[:nbytes].astype(np.uint8).tobytes()


def _fill_next(buf: bytes, total: int, width: int, len_tab: np.ndarray, out: np.ndarray, base: int) -> None:
    """Fill ``out`` ``(total + 2,)`` with where the code starting at each bit position of
    ``buf`` ends, as an index offset by ``base``.

    Position ``total + 1`` is a sink: codes running past the end, and the end itself, go
    there and stay, so a corrupt chunk cannot walk out of its run. The code lengths are
    looked up one bit offset at a time from each byte's big-endian 32-bit window, so the
    temporaries stay at a few bytes per bit.
    """
    sink = base + total + 1
    b = np.frombuffer(buf + bytes(4), np.uint8).astype(np.uint32)
    words = (b[:-4] << 24) | (b[1:-3] << 16) | (b[2:-2] << 8) | b[3:-1]
    del b
    steps = np.empty((len(buf), 8), np.uint8)
    mask = np.uint32((1 << width) - 1)
    for off in range(8):
        steps[:, off] = len_tab[(words >> np.uint32(32 - width - off)) & mask]
    del words
    steps = steps.reshape(-1)
    for a in range(0, total, LOOKUP):  # slices keep the arange temporaries small
        b = min(total, a + LOOKUP)
        head = out[a:b]
        head[:] = np.arange(base + a, base + b, dtype=out.dtype)
        head += steps[a:b]
        np.minimum(head, sink, out=head)
    out[total:] = sink


def _segments(bits: np.ndarray, budget: int) -> list[tuple[int, int]]:
    """Cut a stream's chunks (bit lengths ``bits``) into runs ``[j0, j1)`` of at most
    ``budget`` bits each (a single chunk may exceed it)."""
    ends = np.cumsum(bits)
    runs, j = [], 0
    while j < bits.size:
        before = int(ends[j - 1]) if j else 0
        k = max(int(np.searchsorted(ends, before + budget, side="right")), j + 1)
        runs.append((j, k))
        j = k
    return runs


def _walk(segments: list, codes: list[HuffmanCode], out: np.ndarray) -> None:
    """Decode a batch of chunk runs into ``out``. ``segments``: ``(stream, buf, first bit,
    bits per chunk (k,), symbols per chunk (k,), first symbol index)``.

    Where a code starting at each bit position ends is computed for every position of
    every run at once (one table, each run at its own offset); every chunk then hops
    through that table in lock-step, :data:`CHUNK` numpy steps per batch, and the symbols
    are looked up at the visited positions, :data:`LOOKUP` at a time.
    """
    sizes = [first + int(bits.sum()) + 2 for _, _, first, bits, _, _ in segments]
    nxt = np.empty(sum(sizes), np.int32 if sum(sizes) < 2**31 else np.int64)
    starts, ends, bases, base = [], [], [], 0
    for (s, buf, first, bits, _, _), size in zip(segments, sizes, strict=True):
        code = codes[s]
        _fill_next(buf, size - 2, code.max_len, code.decoder_tables[1], nxt[base : base + size], base)
        bounds = first + np.cumsum(bits)
        starts.append(base + bounds - bits)
        ends.append(base + bounds)
        bases.append(base)
        base += size
    pos = np.concatenate(starts).astype(nxt.dtype)
    nsym = np.concatenate([seg[4] for seg in segments])
    steps = int(nsym.max())
    visited = np.empty((pos.size, steps + 1), nxt.dtype)
    for i in range(steps):
        visited[:, i] = pos
        pos = nxt[pos]
    visited[:, steps] = pos
    del nxt
    if not np.array_equal(visited[np.arange(pos.size), nsym], np.concatenate(ends)):
        raise CodecError("Huffman chunk boundaries do not match the decoded codes")
    row = 0
    for (s, buf, _, bits, seg_nsym, at0), base in zip(segments, bases, strict=True):
        code, width = codes[s], codes[s].max_len
        sym_tab = code.decoder_tables[0]
        b = np.frombuffer(buf + bytes(4), np.uint8)
        per = max(1, LOOKUP // CHUNK)
        for r0 in range(0, bits.size, per):
            r1 = min(bits.size, r0 + per)
            rows = visited[row + r0 : row + r1, :steps]
            at = rows[np.arange(steps)[None, :] < seg_nsym[r0:r1, None]].astype(np.int64) - base
            byte = at >> 3
            window = (
                (b[byte].astype(np.int64) << 24)
                | (b[byte + 1].astype(np.int64) << 16)
                | (b[byte + 2].astype(np.int64) << 8)
                | b[byte + 3]
            )
            sym = sym_tab[(window >> (32 - width - (at & 7))) & ((1 << width) - 1)]
            if sym.min() < 0:
                raise CodecError("invalid Huffman code in the body")
            first_sym = at0 + r0 * CHUNK
            out[s, first_sym : first_sym + sym.size] = sym
        row += bits.size


def huffman_decode_streams(
    bufs: list[bytes],
    n: int,
    chunk_bits: list[np.ndarray],
    codes: list[HuffmanCode],
    dtype: np.dtype = np.dtype(np.int64),
) -> np.ndarray:
    """Decode ``n`` symbols from each stream's bytes: ``(len(bufs), n)`` of ``dtype``.

    Streams are cut into runs of whole chunks and the runs grouped into batches of at most
    :data:`BATCH_BITS` bits, each decoded by :func:`_walk`: memory stays bounded however
    long the streams are, and a small message is one batch.
    """
    out = np.empty((len(bufs), n), dtype)
    if n == 0:
        return out
    nsym_all = np.diff(_chunk_ends(n), prepend=0)
    batch, batch_bits = [], 0
    for s, (buf, bits, code) in enumerate(zip(bufs, chunk_bits, codes, strict=True)):
        total = int(bits.sum())
        if len(buf) != (total + 7) // 8:
            raise CodecError("Huffman stream has the wrong length")
        if code.symbols.size == 1:
            if total:
                raise CodecError("single-symbol Huffman stream carries bits")
            out[s] = code.symbols[0]
            continue
        if np.any(bits < nsym_all) or np.any(bits > nsym_all * code.max_len):
            raise CodecError("Huffman chunk lengths do not fit their symbols")
        first_bit = np.cumsum(bits) - bits
        for j0, j1 in _segments(bits, BATCH_BITS):
            a, seg_bits = int(first_bit[j0]), bits[j0:j1]
            b = a + int(seg_bits.sum())
            seg = (s, buf[a >> 3 : (b + 7) >> 3], a & 7, seg_bits, nsym_all[j0:j1], j0 * CHUNK)
            if batch and batch_bits + (b - a) > BATCH_BITS:
                _walk(batch, codes, out)
                batch, batch_bits = [], 0
            batch.append(seg)
            batch_bits += b - a
    if batch:
        _walk(batch, codes, out)
    return out


@register_coder("huffman", id=3)
class Huffman(_TableCoder):
    """Canonical Huffman code per stream, from a learned table or the message's histogram."""

    def _model_from_counts(self, ids: np.ndarray, counts: np.ndarray) -> HuffmanCode:
        keep = counts > 0
        return HuffmanCode.from_lengths(ids[keep], huffman_lengths(counts[keep]))

    def encode(self, symbols: np.ndarray, alphabet: int) -> bytes:
        streams = as_streams(symbols)
        _check_range(streams, alphabet)
        codes = self._static(streams.shape[0], alphabet)
        if codes is not None:
            head = self._head()
        else:
            codes, tables = [], []
            for row in streams:
                ids, counts = histogram(row, alphabet)
                code = self._model_from_counts(ids, counts)
                codes.append(code)
                by_symbol = np.argsort(code.symbols)
                # a single-symbol code has length 0 but is stored as 1: table entries are >= 1
                tables.append((code.symbols[by_symbol], np.maximum(code.lengths[by_symbol], 1)))
            head = self._head(pack_tables(tables))
        coded = [huffman_encode_stream(row, code, alphabet) for row, code in zip(streams, codes, strict=True)]
        chunk_bits = np.concatenate([c for c, _ in coded])
        return head + encode_varints(chunk_bits) + b"".join(data for _, data in coded)

    def decode(self, body: bytes, shape: tuple[int, ...], alphabet: int) -> np.ndarray:
        n_streams, n = stream_shape(shape)
        tables, pos = self._read_head(body, n_streams, alphabet, MAX_CODE_BITS)
        if tables is None:
            codes = self._static(n_streams, alphabet)
        else:
            codes = [HuffmanCode.from_lengths(ids, lens) for ids, lens in tables]
        n_chunks = -(-n // CHUNK)
        if n_streams * n_chunks > len(body) - pos:  # a varint (>= 1 byte) per chunk
            raise CodecError(f"Huffman body of {len(body)} bytes is too short for {n_streams} x {n} symbols")
        chunk_bits, pos = decode_varints(body, pos, n_streams * n_chunks)
        bufs, bits_per_stream = [], []
        for s in range(n_streams):
            bits = chunk_bits[s * n_chunks : (s + 1) * n_chunks]
            if bits.size and bits.max() > CHUNK * MAX_CODE_BITS:
                raise CodecError("Huffman chunk is longer than any code allows")
            size = (int(bits.sum()) + 7) // 8
            if pos + size > len(body):
                raise CodecError("Huffman body truncated")
            bufs.append(body[pos : pos + size])
            bits_per_stream.append(bits)
            pos += size
        if pos != len(body):
            raise CodecError("Huffman body has trailing bytes")
        out = huffman_decode_streams(bufs, n, bits_per_stream, codes, symbol_dtype(alphabet))
        return out.reshape(shape)


# ------------------------------------------------------------------------------- ANS


@dataclass(frozen=True)
class _AnsModel:
    """Which symbols a stream codes (None: the whole alphabet) and their probabilities."""

    ids: np.ndarray | None
    probs: np.ndarray  # (k,) float64, unnormalised

    def min_bits(self) -> float:
        """A lower bound on the bits of any symbol under this model once ``constriction``
        has quantised it to 24-bit probabilities (which moves each by under 2**-24 per symbol)."""
        k = self.probs.size
        top = float(self.probs.max() / self.probs.sum()) + (k + 1) * 2.0**-24
        return -np.log2(min(top, 1.0 - (k - 1) * 2.0**-24))


def _categorical(probs: np.ndarray):
    import constriction

    return constriction.stream.model.Categorical(probs, perfect=False)


def ans_min_bits(models: list[_AnsModel], n: int, own: bool) -> float:
    """The fewest bits ``n`` symbols per stream can take under ``models``: with the
    message's own histograms (``own``) their entropy (Gibbs: no model codes a sequence in
    fewer bits than its empirical entropy), else ``n`` times each model's cheapest symbol."""
    if own:
        return sum(entropy_bits(m.probs[None]) for m in models if m.probs.size > 1)
    return n * sum(m.min_bits() for m in models if m.probs.size > 1)


@register_coder("ans", id=4)
class Ans(_TableCoder):
    """Asymmetric numeral systems (``constriction``'s 32-bit ``AnsCoder``, 24-bit probabilities).

    With its own histogram a stream codes only the symbols that occur (ranks into the
    sorted ids), so absent symbols waste no probability mass.
    """

    _prior: ChannelPrior | ConditionalPrior | None = None

    def _model_from_counts(self, ids: np.ndarray, counts: np.ndarray) -> _AnsModel:
        return _AnsModel(None, np.asarray(counts, np.float64))

    def bind(self, transform) -> None:
        """Take the transform's learned prior (``symbol_prior()``: a :class:`ChannelPrior`
        or a :class:`ConditionalPrior`) when it has one and this coder has no table of its own."""
        get = getattr(transform, "symbol_prior", None)
        if get is not None and self._counts is None:
            self._prior = get()

    def encode(self, symbols: np.ndarray, alphabet: int) -> bytes:
        import constriction

        if self._prior is not None:
            return self._prior.encode(symbols)
        streams = as_streams(symbols)
        _check_range(streams, alphabet)
        models = self._static(streams.shape[0], alphabet)
        if models is not None:
            head = self._head()
        else:
            models, tables = [], []
            for row in streams:
                ids, counts = histogram(row, alphabet)
                models.append(_AnsModel(ids, counts.astype(np.float64)))
                tables.append((ids, counts))
            head = self._head(pack_tables(tables))
        coder = constriction.stream.stack.AnsCoder(np.array([ANS_START], np.uint32))
        for row, model in reversed(list(zip(streams, models, strict=True))):
            data = row if model.ids is None else _ranks(model.ids, alphabet)[row]
            if row.size and model.probs.size > 1:
                coder.encode_reverse(data.astype(np.int32), _categorical(model.probs))
        return head + coder.get_compressed().astype("<u4").tobytes()

    def decode(self, body: bytes, shape: tuple[int, ...], alphabet: int) -> np.ndarray:

        if self._prior is not None:
            return self._prior.decode(body, shape)
        n_streams, n = stream_shape(shape)
        tables, pos = self._read_head(body, n_streams, alphabet, 1 << 62)
        if tables is None:
            models = self._static(n_streams, alphabet)
        else:
            if any(int(counts.sum()) != max(n, 1) or (n == 0 and counts.size != 1) for _, counts in tables):
                raise CodecError(f"ANS table counts do not add up to the {n} symbols of a stream")
            models = [_AnsModel(ids, counts.astype(np.float64)) for ids, counts in tables]
        need = ans_min_bits(models, n, tables is not None)
        words = _ans_words(body, pos, need, f"{n_streams} x {n} symbols")
        out = np.empty((n_streams, n), symbol_dtype(alphabet))

        def fill(coder) -> None:
            for s, model in enumerate(models):
                if model.probs.size == 1:
                    out[s] = 0 if model.ids is None else model.ids[0]
                    continue
                cat = _categorical(model.probs)
                for start in range(0, n, ANS_CHUNK):
                    dec = coder.decode(cat, min(ANS_CHUNK, n - start))
                    out[s, start : start + dec.size] = dec if model.ids is None else model.ids[dec]

        _ans_decode(words, fill)
        return out.reshape(shape)


# ------------------------------------------------------------------ per-channel priors

PRIOR_PRECISION = 16  # bits of the integer frequency tables of a learned prior
PRIOR_TOTAL = 1 << PRIOR_PRECISION
PRIOR_MAX_SYMBOLS = 256  # symbols per channel, bounded (the range is clamped, see rd.py)
PRIOR_TOP = PRIOR_TOTAL - 256  # no symbol gets more: at least 2**-8 for the rest, so each
# symbol costs at least 0.0056 bits and a body of B bits holds at most ~180 B symbols


def _frames(shape: tuple[int, ...]) -> int:
    """Frames of a ``(..., C)`` symbol shape, the product of its leading dims as a Python
    int: ``np.prod`` in int64 wraps (``(2**40, 2**30, C)`` gives 0 and would pass the
    body-size bound with a 4-byte body)."""
    if any(int(d) < 0 for d in shape):
        raise CodecError(f"symbol shape {tuple(shape)} has a negative dimension")
    return math.prod(int(d) for d in shape[:-1])


def quantise_pmf(pmf: np.ndarray) -> np.ndarray:
    """A probability vector ``(L,)`` (2 <= L <= PRIOR_MAX_SYMBOLS) as integer frequencies
    summing to exactly ``PRIOR_TOTAL``, each >= 1 and <= ``PRIOR_TOP``.

    Pure float64 numpy with a fixed order of operations, so the encoder and the decoder
    derive the same table from the same pmf; the tables are computed once when a codec's
    state is exported and stored in it, so they never depend on the machine at run time."""
    pmf = np.asarray(pmf, np.float64)
    if pmf.ndim != 1 or not 2 <= pmf.size <= PRIOR_MAX_SYMBOLS or not np.isfinite(pmf).all():
        raise CodecError(f"cannot build a frequency table from a pmf of shape {pmf.shape}")
    pmf = np.clip(pmf, 0.0, None)
    pmf = pmf / pmf.sum() if pmf.sum() > 0 else np.full(pmf.size, 1.0 / pmf.size)
    spare = PRIOR_TOTAL - pmf.size  # one count per symbol is reserved
    freqs = 1 + np.floor(pmf * spare).astype(np.int64)
    rest = PRIOR_TOTAL - int(freqs.sum())
    order = np.argsort(-(pmf * spare - np.floor(pmf * spare)), kind="stable")
    freqs[order[:rest]] += 1  # largest remainders first
    top = int(np.argmax(freqs))
    if freqs[top] > PRIOR_TOP:  # give the excess to the runner-up (or a neighbour)
        other = int(np.argsort(-freqs, kind="stable")[1])
        freqs[other] += int(freqs[top]) - PRIOR_TOP
        freqs[top] = PRIOR_TOP
    return freqs


@dataclass(frozen=True)
class ChannelPrior:
    """A learned factorised prior as integer tables: channel ``c`` of a ``(..., C)`` symbol
    array takes values ``0 .. sizes[c]-1`` with probability ``freqs[c, s] / PRIOR_TOTAL``.

    ``freqs`` ``(C, L)`` int64, rows summing to ``PRIOR_TOTAL`` over their first
    ``sizes[c]`` entries (the rest 0); ``sizes`` ``(C,)``. Body: ``ANS words:u32...``,
    channels in order, each channel's symbols in C order of the leading axes, on one
    ANS stack from :data:`ANS_START` like :class:`Ans`.
    """

    freqs: np.ndarray
    sizes: np.ndarray

    def __post_init__(self):
        f, z = np.asarray(self.freqs), np.asarray(self.sizes)
        if f.ndim != 2 or z.shape != (f.shape[0],) or f.shape[1] > PRIOR_MAX_SYMBOLS:
            raise CodecError("learned prior: freqs must be (C, L <= 256) with one size per channel")
        if z.min() < 2 or z.max() > f.shape[1]:
            raise CodecError("learned prior: every channel needs 2..L symbols")
        live = np.arange(f.shape[1])[None, :] < z[:, None]
        if (f[live] < 1).any() or (f[~live] != 0).any() or (f.max() > PRIOR_TOP):
            raise CodecError("learned prior: frequencies out of range")
        if (f.sum(1) != PRIOR_TOTAL).any():
            raise CodecError(f"learned prior: every row must sum to {PRIOR_TOTAL}")

    @property
    def channels(self) -> int:
        return int(self.freqs.shape[0])

    @cached_property
    def _models(self) -> list:
        return [_categorical(self.freqs[c, : self.sizes[c]] / PRIOR_TOTAL) for c in range(self.channels)]

    def bits(self, symbols: np.ndarray) -> float:
        """The ideal code length in bits of ``symbols`` ``(..., C)`` under the tables: the
        rate a payload body should come within a few words of."""
        sym = np.asarray(symbols).reshape(-1, self.channels).astype(np.int64)
        p = self.freqs[np.arange(self.channels)[None, :], sym] / PRIOR_TOTAL
        return float(-np.log2(p).sum())

    def min_bits(self, n: int) -> float:
        """The fewest bits ``n`` symbols per channel can take (each symbol's probability is
        at most ``PRIOR_TOP / PRIOR_TOTAL``, plus constriction's 24-bit rounding)."""
        top = self.freqs.max(1) / PRIOR_TOTAL + (self.sizes + 1) * 2.0**-24
        return float(n * -np.log2(np.minimum(top, 1.0)).sum())

    def encode(self, symbols: np.ndarray) -> bytes:
        import constriction

        sym = np.asarray(symbols)
        if sym.ndim < 1 or sym.shape[-1] != self.channels:
            raise CodecError(f"learned prior codes {self.channels} channels, symbols have shape {sym.shape}")
        cols = sym.reshape(-1, self.channels).astype(np.int64)
        if cols.size and ((cols < 0).any() or (cols >= self.sizes[None, :]).any()):
            raise CodecError("symbols outside the learned prior's range")
        coder = constriction.stream.stack.AnsCoder(np.array([ANS_START], np.uint32))
        if cols.shape[0]:
            for c in reversed(range(self.channels)):
                coder.encode_reverse(cols[:, c].astype(np.int32), self._models[c])
        return coder.get_compressed().astype("<u4").tobytes()

    def decode(self, body: bytes, shape: tuple[int, ...]) -> np.ndarray:
        """Symbols of ``shape`` ``(..., C)`` from ``body``, bounded: the body must hold at
        least :meth:`min_bits` before the output is allocated."""

        if not shape or shape[-1] != self.channels:
            raise CodecError(f"learned prior codes {self.channels} channels, payload asks for {shape}")
        n = _frames(shape)
        words = _ans_words(body, 0, self.min_bits(n), f"{n} x {self.channels} symbols")
        out = np.empty((n, self.channels), symbol_dtype(int(self.sizes.max())))

        def fill(coder) -> None:
            for c in range(self.channels):
                for start in range(0, n, ANS_CHUNK):
                    dec = coder.decode(self._models[c], min(ANS_CHUNK, n - start))
                    out[start : start + dec.size, c] = dec

        _ans_decode(words, fill)
        return out.reshape(shape)


@dataclass(frozen=True)
class ConditionalPrior:
    """A hyperprior as integer tables: each frame of a ``(..., C + 1)`` symbol array carries
    its class ``k`` (``0 .. K-1``) in the last column, coded under ``class_freqs`` ``(K,)``;
    channel ``c`` of the frame is then coded under ``freqs[k, c]`` (``(K, C, L)``, rows
    summing to ``PRIOR_TOTAL`` over their first ``sizes[c]`` entries, the rest 0).

    The class is side information the encoder chooses (the frame's loudness, in effect):
    the decoder reads it before the channels, so both ends pick the same table from
    integers alone, never from a float the two machines might round differently. Body: one
    ANS stack from :data:`ANS_START`: the classes, then per channel per class the symbols
    of the frames in that class, in C order of the leading axes.
    """

    class_freqs: np.ndarray
    freqs: np.ndarray
    sizes: np.ndarray

    def __post_init__(self):
        k, f, z = np.asarray(self.class_freqs), np.asarray(self.freqs), np.asarray(self.sizes)
        if k.ndim != 1 or not 2 <= k.size <= PRIOR_MAX_SYMBOLS:
            raise CodecError("hyperprior: class_freqs must be (K,) with 2 <= K <= 256")
        if (
            f.ndim != 3
            or f.shape[0] != k.size
            or f.shape[1] < 1
            or z.shape != (f.shape[1],)
            or f.shape[2] > PRIOR_MAX_SYMBOLS
        ):
            raise CodecError("hyperprior: freqs must be (K, C >= 1, L <= 256) with one size per channel")
        if not all(np.issubdtype(a.dtype, np.integer) for a in (k, f, z)):
            raise CodecError("hyperprior: tables must be integers")
        # every row obeys a factorised prior's rules: one table per (class, channel), one for the classes
        ChannelPrior(f.reshape(-1, f.shape[2]), np.tile(z, k.size))
        ChannelPrior(k[None, :], np.array([k.size]))

    @property
    def channels(self) -> int:
        """Channels besides the class column."""
        return int(self.freqs.shape[1])

    @property
    def classes(self) -> int:
        return int(self.class_freqs.shape[0])

    @cached_property
    def _models(self) -> tuple[object, list[list]]:
        classes = _categorical(self.class_freqs / PRIOR_TOTAL)
        cells = [
            [_categorical(self.freqs[k, c, : self.sizes[c]] / PRIOR_TOTAL) for c in range(self.channels)]
            for k in range(self.classes)
        ]
        return classes, cells

    def _columns(self, symbols: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(channel symbols (n, C) int64, classes (n,) int64)``, checked."""
        sym = np.asarray(symbols)
        if sym.ndim < 1 or sym.shape[-1] != self.channels + 1:
            raise CodecError(
                f"hyperprior codes {self.channels} channels + a class, symbols have shape {sym.shape}"
            )
        cols = sym.reshape(-1, self.channels + 1).astype(np.int64)
        cls, y = cols[:, -1], cols[:, :-1]
        if cols.size and ((cls < 0).any() or (cls >= self.classes).any()):
            raise CodecError("frame classes outside the hyperprior's range")
        if y.size and ((y < 0).any() or (y >= self.sizes[None, :]).any()):
            raise CodecError("symbols outside the hyperprior's range")
        return y, cls

    def bits(self, symbols: np.ndarray) -> float:
        """The ideal code length in bits of ``symbols`` ``(..., C + 1)``, side information
        (the classes) included."""
        y, cls = self._columns(symbols)
        p = self.freqs[cls[:, None], np.arange(self.channels)[None, :], y] / PRIOR_TOTAL
        return float(-np.log2(p).sum() - np.log2(self.class_freqs[cls] / PRIOR_TOTAL).sum())

    def min_bits(self, n: int) -> float:
        """The fewest bits ``n`` frames can take (see :meth:`ChannelPrior.min_bits`)."""
        top = self.freqs.max(axis=(0, 2)) / PRIOR_TOTAL + (self.sizes + 1) * 2.0**-24
        top_k = self.class_freqs.max() / PRIOR_TOTAL + (self.classes + 1) * 2.0**-24
        return float(n * (-np.log2(np.minimum(top, 1.0)).sum() - np.log2(min(top_k, 1.0))))

    def encode(self, symbols: np.ndarray) -> bytes:
        import constriction

        y, cls = self._columns(symbols)
        classes, cells = self._models
        coder = constriction.stream.stack.AnsCoder(np.array([ANS_START], np.uint32))
        if cls.size:
            for c in reversed(range(self.channels)):
                for k in reversed(range(self.classes)):
                    sel = y[cls == k, c]
                    if sel.size:
                        coder.encode_reverse(sel.astype(np.int32), cells[k][c])
            coder.encode_reverse(cls.astype(np.int32), classes)
        return coder.get_compressed().astype("<u4").tobytes()

    def decode(self, body: bytes, shape: tuple[int, ...]) -> np.ndarray:
        """Symbols of ``shape`` ``(..., C + 1)`` from ``body``, bounded: the body must hold
        at least :meth:`min_bits` before the output is allocated."""
        if not shape or shape[-1] != self.channels + 1:
            raise CodecError(f"hyperprior codes {self.channels} channels + a class, payload asks for {shape}")
        n = _frames(shape)
        words = _ans_words(body, 0, self.min_bits(n), f"{n} frames of {self.channels} symbols")
        width = max(int(self.sizes.max()), self.classes)
        out = np.empty((n, self.channels + 1), symbol_dtype(width))
        classes, cells = self._models

        def fill(coder) -> None:
            for start in range(0, n, ANS_CHUNK):
                dec = coder.decode(classes, min(ANS_CHUNK, n - start))
                out[start : start + dec.size, -1] = dec
            cls = out[:, -1].astype(np.int64)
            rows = [np.flatnonzero(cls == k) for k in range(self.classes)]
            for c in range(self.channels):
                for k, idx in enumerate(rows):
                    for start in range(0, idx.size, ANS_CHUNK):
                        part = idx[start : start + ANS_CHUNK]
                        out[part, c] = coder.decode(cells[k][c], part.size)

        _ans_decode(words, fill)
        return out.reshape(shape)
