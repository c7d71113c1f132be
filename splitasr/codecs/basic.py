"""Parts that need no calibration: ``f32`` (lossless float bits), ``pack`` and ``zstd``."""

from __future__ import annotations

import numpy as np

from splitasr.codecs.base import (
    CodecError,
    Coder,
    Symbols,
    Transform,
    register_coder,
    register_transform,
    symbol_dtype,
)

UNPACK_CHUNK = 1 << 20  # symbols unpacked at once: bounds the temporaries of a packed decode


@register_transform("f32", id=1)
class Float32Bits(Transform):
    """Lossless: each float32 becomes its 4 bytes, as symbols in ``[0, 256)``.

    Symbols have shape ``(4, N*T*C)``: byte plane first (least significant byte in plane 0),
    so coders can model each plane separately: the exponent byte is far more predictable
    than the low mantissa bytes.
    """

    lossless = True

    def forward(self, x: np.ndarray) -> Symbols:
        planes = np.ascontiguousarray(x, dtype="<f4").view(np.uint8).reshape(-1, 4).T
        return Symbols(np.ascontiguousarray(planes), 256)

    def inverse(self, symbols, params, shape):
        n = int(np.prod(shape, dtype=np.int64))
        out = np.empty((n, 4), np.uint8)
        out[:] = np.asarray(symbols).reshape(4, n).T  # one copy, no int64 temporaries
        return out.view("<f4").reshape(shape)

    def symbol_layout(self, params, shape):
        return (4, int(np.prod(shape, dtype=np.int64))), 256


_width = symbol_dtype


def unpack_bits(body: bytes, n: int, bits: int) -> np.ndarray:
    """``n`` symbols of ``bits`` (< 8) bits each, packed most significant bit first, as
    uint8 ``(n,)``; unpacked :data:`UNPACK_CHUNK` at a time (chunks start on whole bytes)."""
    raw = np.frombuffer(body, np.uint8)
    out = np.empty(n, np.uint8)
    for start in range(0, n, UNPACK_CHUNK):
        stop = min(n, start + UNPACK_CHUNK)
        part = np.unpackbits(raw[start * bits // 8 : (stop * bits + 7) // 8])[: (stop - start) * bits]
        full = np.zeros((stop - start, 8), np.uint8)
        full[:, 8 - bits :] = part.reshape(-1, bits)
        out[start:stop] = np.packbits(full, axis=1)[:, 0]
    return out


@register_coder("pack", id=1)
class Pack(Coder):
    """Symbols stored at a fixed width: 1, 2 or 4 bytes, or packed bits below 8 bits."""

    def encode(self, symbols, alphabet):
        bits = int(np.ceil(np.log2(max(alphabet, 2))))
        if bits < 8:
            flat = symbols.astype(np.uint8).ravel()
            unpacked = np.unpackbits(flat[:, None], axis=1)[:, 8 - bits :]
            return np.packbits(unpacked.ravel()).tobytes()
        return np.ascontiguousarray(symbols, dtype=_width(alphabet)).tobytes()

    def decode(self, body, shape, alphabet):
        n = int(np.prod(shape, dtype=np.int64))
        bits = int(np.ceil(np.log2(max(alphabet, 2))))
        if bits < 8:
            if len(body) != (n * bits + 7) // 8:
                raise CodecError("packed body has the wrong length")
            return unpack_bits(body, n, bits).reshape(shape)
        dt = _width(alphabet)
        if len(body) != n * dt.itemsize:
            raise CodecError("body has the wrong length for its shape")
        return np.frombuffer(body, dt).reshape(shape)


@register_coder("zstd", id=2)
class Zstd(Coder):
    """zstandard (level 19) over fixed-width symbols; byte planes keep it effective on floats."""

    level = 19

    def encode(self, symbols, alphabet):
        import zstandard

        raw = np.ascontiguousarray(symbols, dtype=_width(alphabet)).tobytes()
        return zstandard.ZstdCompressor(level=self.level).compress(raw)

    def decode(self, body, shape, alphabet):
        import zstandard

        dt = _width(alphabet)
        n = int(np.prod(shape, dtype=np.int64)) * dt.itemsize
        try:
            # python-zstandard trusts a frame's declared size over max_output_size: check it first
            if zstandard.frame_content_size(body) != n:
                raise CodecError("zstd frame declares the wrong size")
            dobj = zstandard.ZstdDecompressor().decompressobj()
            raw = dobj.decompress(body)
            if dobj.unused_data or not dobj.eof:
                raise CodecError("zstd body does not end with its frame")
        except zstandard.ZstdError as exc:
            raise CodecError(f"zstd: {exc}") from None
        if len(raw) != n:
            raise CodecError("zstd body decodes to the wrong length")
        return np.frombuffer(raw, dt).reshape(shape)
