"""The offloading baselines of paper 002 (DeepCOD), for activations ``x`` of shape ``(N, T, C)``.

All are lossy, need no calibration and no state, and work for any ``T >= 0``, ``C >= 1``:

* ``intp2``, ``intp4``, ``intp8`` (Offload-Intp): average-pool time by ``k``, 8-bit codes with
  per-message per-channel min/max, linear interpolation back to ``T`` frames.
* ``cs4``, ``cs8`` (Offload-CS): per frame, ``M = C // r`` random Gaussian measurements of
  the channel vector, 8-bit codes, ISTA (FISTA) reconstruction in a DCT-II basis.
* ``dct10``, ``dct25``, ``dct50``, ``dct75`` (Offload-Lossy): JPEG on each item's ``(T, C)`` "image":
  8x8 block DCT, the JPEG luminance table scaled by quality, zig-zag order cut at the last
  non-zero coefficient; meant to be followed by an entropy coder (``dct50+huffman``).

Side information (ranges) travels in the header's binary ``params``; measurement matrices
and quantisation tables are rebuilt from fixed constants and never travel. Inputs containing
NaN or infinity are refused with :class:`CodecError`: a min/max range cannot describe them.

Relative MSE ``||x - x_hat||^2 / ||x - mean(x)||^2`` on the smooth synthetic activation of
``tests/codecs/test_baselines.py`` (N=2, T=200, C=64, sum of low-frequency sinusoids in
time and channel, plus 1 % noise): see the test module's docstring for the measured values.
"""

from __future__ import annotations

import functools

import numpy as np

from splitasr.codecs.base import (
    CodecError,
    ParamReader,
    ParamWriter,
    Symbols,
    Transform,
    register_transform,
)
from splitasr.errors import MissingDependencyError

F16_MAX = float(np.finfo(np.float16).max)  # 65504: per-channel ranges beyond it are clipped


def _fft():
    """``scipy.fft``, imported where a DCT runs: the edge install has no scipy (143 MB), and
    registering these codecs must not need it."""
    try:
        import scipy.fft
    except ImportError:
        hint = "the dct and cs codecs need scipy: pip install 'splitasr[cloud]'"
        raise MissingDependencyError(hint) from None
    return scipy.fft


# ---------------------------------------------------------------- shared helpers


def _check_finite(x: np.ndarray) -> np.ndarray:
    """``x`` as float64 ``(N, T, C)``; refuses NaN/inf, which no min/max range can encode."""
    if x.ndim != 3:
        raise CodecError(f"codecs take (N, T, C) activations, got shape {x.shape}")
    x = np.asarray(x, dtype=np.float64)
    if x.size and not np.isfinite(x).all():
        raise CodecError("activations contain NaN or infinity; lossy baselines cannot encode them")
    return x


def _f16_outward(lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Round ranges ``(C,)`` to float16, outwards, so the rounded range still covers the data."""
    lo = np.clip(np.asarray(lo, np.float64), -F16_MAX, F16_MAX)
    hi = np.clip(np.asarray(hi, np.float64), -F16_MAX, F16_MAX)
    lo16, hi16 = lo.astype(np.float16), hi.astype(np.float16)
    lo16 = np.where(lo16.astype(np.float64) > lo, np.nextafter(lo16, np.float16(-np.inf)), lo16)
    hi16 = np.where(hi16.astype(np.float64) < hi, np.nextafter(hi16, np.float16(np.inf)), hi16)
    return lo16.astype(np.float16), hi16.astype(np.float16)


def _f32(v: float) -> float:
    """``v`` rounded to float32, as a Python float: what the header's params carry."""
    return float(np.float32(v))


def _scalar(params: dict, key: str) -> float:
    v = params[key]
    if not isinstance(v, int | float) or not np.isfinite(v):
        raise CodecError(f"parameter {key!r} is not a finite number")
    return float(np.float32(v))


def _range_params(params: dict) -> bytes:
    return ParamWriter().f32(_scalar(params, "lo"), _scalar(params, "hi")).bytes()


def _read_range(r: ParamReader) -> dict:
    return {"lo": r.f32(), "hi": r.f32()}


def _quant8(x: np.ndarray, lo: np.ndarray | float, hi: np.ndarray | float) -> np.ndarray:
    """Uniform 8-bit codes of ``x`` over ``[lo, hi]`` (broadcast); a zero range gives code 0."""
    span = np.asarray(hi, np.float64) - np.asarray(lo, np.float64)
    scale = np.where(span > 0, 255.0 / np.where(span > 0, span, 1.0), 0.0)
    return np.clip(np.rint((x - lo) * scale), 0, 255).astype(np.uint8)


def _dequant8(codes: np.ndarray, lo: np.ndarray | float, hi: np.ndarray | float) -> np.ndarray:
    return lo + codes.astype(np.float64) * ((np.asarray(hi, np.float64) - lo) / 255.0)


def _expect_shape(symbols: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    if tuple(symbols.shape) != tuple(shape):
        raise CodecError(f"symbols have shape {tuple(symbols.shape)}, expected {tuple(shape)}")
    return symbols


def _nsc(shape: tuple[int, ...]) -> tuple[int, int, int]:
    if len(shape) != 3:
        raise CodecError(f"expected an (N, T, C) shape, got {tuple(shape)}")
    n, t, c = (int(v) for v in shape)
    return n, t, c


# ---------------------------------------------------------------- Offload-Intp


def pool_time(x: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Average-pool ``x`` ``(N, T, C)`` over blocks of ``k`` frames.

    Average pooling rather than decimation: it is the box anti-alias filter, so fast
    fluctuations shrink instead of folding back as slow ones. The last block may be short
    and is averaged over the frames it has.

    Returns:
        pooled ``(N, ceil(T / k), C)`` and the block centres ``(ceil(T / k),)`` in frames.
    """
    n, t, c = x.shape
    tk = -(-t // k)
    if tk == 0:
        return np.zeros((n, 0, c)), np.zeros(0)
    padded = np.zeros((n, tk * k, c))
    padded[:, :t] = x
    counts = np.full(tk, float(k))
    counts[-1] = t - (tk - 1) * k
    pooled = padded.reshape(n, tk, k, c).sum(axis=2) / counts[None, :, None]
    centres = np.arange(tk) * k + (counts - 1) / 2
    return pooled, centres


def interp_time(y: np.ndarray, centres: np.ndarray, t: int) -> np.ndarray:
    """Linear interpolation of ``y`` ``(N, K, C)`` sampled at ``centres`` ``(K,)`` onto frames
    ``0 .. t-1``; constant beyond the first and last centre. Returns ``(N, t, C)``."""
    return interp_frames(y, centres, np.arange(t, dtype=np.float64))


def interp_frames(y: np.ndarray, centres: np.ndarray, frames: np.ndarray) -> np.ndarray:
    """:func:`interp_time` at the given ``frames`` ``(F,)`` only: ``(N, F, C)``."""
    n, k, c = y.shape
    if frames.size == 0 or k == 0:
        return np.zeros((n, frames.size, c))
    if k == 1:
        return np.repeat(y, frames.size, axis=1)
    left = np.clip(np.searchsorted(centres, frames, side="right") - 1, 0, k - 2)
    w = np.clip((frames - centres[left]) / (centres[left + 1] - centres[left]), 0.0, 1.0)[None, :, None]
    return y[:, left] * (1 - w) + y[:, left + 1] * w


INTP_FRAMES = 4096  # frames interpolated at once


class _Intp(Transform):
    """Offload-Intp: symbols ``(N, ceil(T / k), C)`` uint8, alphabet 256.

    ``params = {"lo": (C,), "hi": (C,)}``: per-channel ranges of the pooled values over the
    whole message, float16 rounded outwards; 4 header bytes per channel (C = 256: 1 kB).
    """

    factor = 2
    lossless = False

    def forward(self, x: np.ndarray) -> Symbols:
        x = _check_finite(x)
        pooled, _ = pool_time(x, self.factor)
        if pooled.shape[1]:
            lo, hi = _f16_outward(pooled.min(axis=(0, 1)), pooled.max(axis=(0, 1)))
        else:
            lo = hi = np.zeros(x.shape[2], np.float16)
        codes = _quant8(pooled, lo.astype(np.float64), hi.astype(np.float64))
        return Symbols(codes, 256, {"lo": lo, "hi": hi})

    def pack_params(self, params, shape):
        return ParamWriter().array(params["lo"], "<f2").array(params["hi"], "<f2").bytes()

    def unpack_params(self, blob, shape):
        c = shape[2]
        if len(blob) != 4 * c:
            raise CodecError(f"{self.name}: ranges take {4 * c} bytes for {c} channels, got {len(blob)}")
        r = ParamReader(blob, self.name)
        params = {"lo": r.array(c, "<f2"), "hi": r.array(c, "<f2")}
        r.done()
        return params

    def inverse(self, symbols, params, shape):
        n, t, c = _nsc(shape)
        _expect_shape(symbols, self.symbol_layout(params, shape)[0])
        lo, hi = np.asarray(params["lo"], np.float64), np.asarray(params["hi"], np.float64)
        if lo.shape != (c,) or hi.shape != (c,):
            raise CodecError(f"{self.name}: ranges do not match {c} channels")
        _, centres = pool_time(np.zeros((0, t, 0)), self.factor)
        out = np.empty((n, t, c), np.float32)
        for i in range(n):  # an item and INTP_FRAMES frames at a time: temporaries are float64
            pooled = _dequant8(symbols[i : i + 1], lo, hi)
            for f0 in range(0, t, INTP_FRAMES):
                frames = np.arange(f0, min(t, f0 + INTP_FRAMES), dtype=np.float64)
                out[i, f0 : f0 + frames.size] = interp_frames(pooled, centres, frames)[0]
        return out

    def symbol_layout(self, params, shape):
        n, t, c = _nsc(shape)
        return (n, -(-t // self.factor), c), 256


@register_transform("intp2", id=7)
class Intp2(_Intp):
    factor = 2


@register_transform("intp4", id=8)
class Intp4(_Intp):
    factor = 4


@register_transform("intp8", id=9)
class Intp8(_Intp):
    factor = 8


# ---------------------------------------------------------------- Offload-CS

CS_SEED = 0x5EED_0002  # measurement matrices are drawn from this: fixed, so they never travel
CS_ITERS = 100  # ISTA iterations
CS_LAMBDA = 0.01  # final l1 weight, relative to max |A^T y| of each frame
CS_LAMBDA_START = 0.5  # continuation: lambda falls geometrically from this (relative) to CS_LAMBDA
CS_MOMENTUM = True  # FISTA's extrapolation; False gives plain ISTA
CS_CHUNK = 4096  # frames solved at once


CS_MAX_CHANNELS = 2048  # widest C a cs payload may declare (the widest split point has 1280)


@functools.lru_cache(maxsize=4)
def cs_operator(c: int, m: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """The fixed measurement set-up for ``C = c`` channels and ``M = m`` measurements.

    Returns:
        ``phi`` ``(m, c)``: i.i.d. N(0, 1/m), drawn from ``CS_SEED``, ``c`` and ``m``;
        ``a = phi @ psi.T / norms`` ``(m, c)``, with ``psi`` the orthonormal DCT-II matrix
        (``psi @ x == dct(x, norm="ortho")``), so ``a`` gives the measurements as a function
        of DCT coefficients, each column scaled to unit norm (see below); computed as
        ``dct(phi, axis=1)``, never forming a ``C x C`` matrix;
        ``norms`` ``(c,)``: the column norms of ``phi @ psi.T``;
        ``lipschitz = ||a||_2^2`` (the top eigenvalue of the ``M x M`` matrix ``a a^T``):
        ISTA's step is ``1 / lipschitz``.

    Unit columns make the l1 penalty treat all coefficients alike: with few measurements a
    column (the DC one, say) can draw a small norm, and plain l1 then explains a constant
    frame with other coefficients. ISTA runs on ``a`` and its solution is divided by ``norms``.
    Memory and time are O(M * C) and O(M^2 * C); callers refuse ``c`` over
    :data:`CS_MAX_CHANNELS` first.
    """
    if not 1 <= m <= c <= CS_MAX_CHANNELS:
        raise CodecError(f"cs needs 1 <= M <= C <= {CS_MAX_CHANNELS}, got M={m}, C={c}")
    rng = np.random.default_rng([CS_SEED, c, m])
    phi = rng.standard_normal((m, c)) / np.sqrt(m)
    a = _fft().dct(phi, norm="ortho", axis=1)
    norms = np.maximum(np.linalg.norm(a, axis=0), 1e-12)
    a = a / norms
    lipschitz = float(np.linalg.eigvalsh(a @ a.T)[-1])
    for arr in (phi, a, norms):
        arr.setflags(write=False)
    return phi, a, norms, lipschitz


def ista(
    y: np.ndarray, a: np.ndarray, lipschitz: float, iters: int = CS_ITERS, momentum: bool = CS_MOMENTUM
) -> np.ndarray:
    """Sparse coefficients ``s`` ``(F, C)`` with ``y ~ s @ a.T`` for measurements ``y`` ``(F, M)``.

    ISTA: a gradient step ``1 / L`` on ``0.5 ||y - a s||^2``, then soft thresholding by
    ``lambda / L``, vectorised over the ``F`` frames. Two standard speed-ups, since a fixed
    100 iterations of the plain method leave even a constant frame far from the solution
    when ``L`` is large (few measurements: ``L ~ (1 + sqrt(C / M))^2``):

    * continuation: each frame's lambda falls geometrically from
      ``CS_LAMBDA_START * max|a^T y|`` to ``CS_LAMBDA * max|a^T y|`` over the iterations;
    * ``momentum`` (FISTA, Beck & Teboulle 2009): the same step taken from an extrapolated
      point. On 2-sparse frames (C=64, M=16, 8-bit measurements) 100 iterations give relative
      MSE 0.0005 with it and 0.036 without; plain ISTA needs about 1000 to catch up.
    """
    f, c = y.shape[0], a.shape[1]
    s = np.zeros((f, c))
    if f == 0 or iters <= 0:
        return s
    scale = np.abs(y @ a).max(axis=1, keepdims=True)  # (F, 1)
    z, t = s, 1.0
    for rel in np.geomspace(CS_LAMBDA_START, CS_LAMBDA, iters):
        g = z + ((y - z @ a.T) @ a) / lipschitz
        s_next = np.sign(g) * np.maximum(np.abs(g) - rel * scale / lipschitz, 0.0)
        if momentum:
            t_next = (1 + np.sqrt(1 + 4 * t * t)) / 2
            z = s_next + ((t - 1) / t_next) * (s_next - s)
            t = t_next
        else:
            z = s_next
        s = s_next
    return s


class _CompressiveSensing(Transform):
    """Offload-CS: symbols ``(N, T, M)`` uint8 with ``M = max(1, C // r)``, alphabet 256.

    Each frame's channel vector ``x_t`` ``(C,)`` is measured as ``y_t = phi x_t``; the ``y`` of
    the whole message share one 8-bit range, ``params = {"lo": float, "hi": float}``. Decoding
    solves for DCT coefficients with :func:`ista` (``CS_ITERS`` = 100 iterations with FISTA
    momentum, lambda ``0.5 -> 0.01`` of ``max|A^T y|`` per frame, unit-norm columns) and
    applies the inverse DCT.

    Measuring along channels follows the brief (``M = C // r``). The DCT is a fair basis
    only where neighbouring channels are alike (the 40 frequency bins inside each channel of
    a flattened conv activation); elsewhere channel order is arbitrary, so expect CS to do
    poorly there. Decoding costs ``2 * CS_ITERS * M * C`` multiply-adds per frame.
    """

    ratio = 4
    lossless = False

    def _m(self, c: int) -> int:
        return max(1, c // self.ratio)

    def check_layout(self, shape, limits):
        if shape[2] > CS_MAX_CHANNELS:
            raise CodecError(
                f"{self.name} decodes at most {CS_MAX_CHANNELS} channels, payload declares {shape[2]}"
            )

    def pack_params(self, params, shape):
        return _range_params(params)

    def unpack_params(self, blob, shape):
        r = ParamReader(blob, self.name)
        params = _read_range(r)
        r.done()
        return params

    def forward(self, x: np.ndarray) -> Symbols:
        x = _check_finite(x)
        n, t, c = x.shape
        if c > CS_MAX_CHANNELS:
            raise CodecError(f"{self.name} takes at most {CS_MAX_CHANNELS} channels, got {c}")
        phi = cs_operator(c, self._m(c))[0]
        y = x @ phi.T  # (N, T, M)
        params = {"lo": _f32(y.min()), "hi": _f32(y.max())} if y.size else {"lo": 0.0, "hi": 0.0}
        codes = _quant8(y, _scalar(params, "lo"), _scalar(params, "hi"))  # the decoder's exact range
        return Symbols(codes, 256, params)

    def inverse(self, symbols, params, shape):
        n, t, c = _nsc(shape)
        _expect_shape(symbols, self.symbol_layout(params, shape)[0])
        m = self._m(c)
        y = symbols.reshape(n * t, m)
        lo, hi = _scalar(params, "lo"), _scalar(params, "hi")
        _, a, norms, lipschitz = cs_operator(c, m)
        x = np.empty((n * t, c), np.float32)
        for start in range(0, n * t, CS_CHUNK):  # bounds the solver's float64 temporaries
            s = ista(_dequant8(y[start : start + CS_CHUNK], lo, hi), a, lipschitz) / norms
            x[start : start + CS_CHUNK] = _fft().idct(s, norm="ortho", axis=1)
        return x.reshape(n, t, c)

    def symbol_layout(self, params, shape):
        n, t, c = _nsc(shape)
        return (n, t, self._m(c)), 256


@register_transform("cs4", id=10)
class CompressiveSensing4(_CompressiveSensing):
    ratio = 4


@register_transform("cs8", id=11)
class CompressiveSensing8(_CompressiveSensing):
    ratio = 8


# ---------------------------------------------------------------- Offload-Lossy (JPEG-style)

JPEG_LUMA = np.array(
    [
        [16, 11, 10, 16, 24, 40, 51, 61],
        [12, 12, 14, 19, 26, 58, 60, 55],
        [14, 13, 16, 24, 40, 57, 69, 56],
        [14, 17, 22, 29, 51, 87, 80, 62],
        [18, 22, 37, 56, 68, 109, 103, 77],
        [24, 35, 55, 64, 81, 104, 113, 92],
        [49, 64, 78, 87, 103, 121, 120, 101],
        [72, 92, 95, 98, 112, 100, 103, 99],
    ],
    dtype=np.float64,
)  # ITU-T T.81 Annex K, table K.1
DCT_OFFSET = 2048  # symbols are coefficient + 2048 in [0, 4096): 8-bit pixels give |coefficient| <= 2048
DCT_ALPHABET = 4096
DCT_BLOCKS = 4096  # 8x8 blocks decoded at once


def jpeg_table(quality: int) -> np.ndarray:
    """The luminance table scaled as libjpeg does (``quality`` 1..100), entries in 1..255."""
    q = int(np.clip(quality, 1, 100))
    scale = 5000 / q if q < 50 else 200 - 2 * q
    return np.clip(np.floor((JPEG_LUMA * scale + 50) / 100), 1, 255)


def zigzag_order(n: int = 8) -> np.ndarray:
    """Row-major indices of an ``n x n`` block in JPEG zig-zag order, ``(n * n,)``."""
    cells = [(i, j) for i in range(n) for j in range(n)]
    cells.sort(key=lambda ij: (ij[0] + ij[1], ij[0] if (ij[0] + ij[1]) % 2 else ij[1]))
    return np.array([i * n + j for i, j in cells])


ZIGZAG = zigzag_order()
UNZIGZAG = np.argsort(ZIGZAG)


class _JpegDct(Transform):
    """Offload-Lossy: JPEG on each item's activation seen as a ``(T, C)`` grey image.

    The message's range ``[lo, hi]`` (``params``) maps onto pixel values ``-128 .. 127``;
    each item is padded by edge replication to multiples of 8 in both axes and cut into 8x8
    blocks (8 frames x 8 channels), which get an orthonormal 2-D DCT (JPEG's own scaling) and
    are divided by :func:`jpeg_table` and rounded; coefficients are read in zig-zag order.

    Symbols, 1-D uint16, alphabet 4096: first the ``B = N * ceil(T/8) * ceil(C/8)`` block
    lengths (zig-zag position of the last non-zero coefficient + 1, in ``0 .. 64``), then
    each block's first ``length`` coefficients + 2048, block after block. Cutting each block
    at its last non-zero coefficient is JPEG's end-of-block code: without it an order-0 coder
    (``huffman``, ``ans``) pays at least a bit for every one of the 64 mostly-zero values
    (on the test activation ``dct50+huffman`` shrinks from 5011 to 2401 bytes; ``zstd``
    is within 6 % either way). ``params["nsym"]`` counts the coefficient symbols, so the
    layout is known before decoding. No DC prediction: it did not pay on activations.
    """

    quality = 50
    lossless = False

    def forward(self, x: np.ndarray) -> Symbols:
        x = _check_finite(x)
        n, t, c = x.shape
        lo, hi = (_f32(x.min()), _f32(x.max())) if x.size else (0.0, 0.0)
        params = {"lo": lo, "hi": hi, "nsym": 0}
        tb, cb = -(-t // 8), -(-c // 8)
        if tb == 0:
            return Symbols(np.zeros(0, np.uint16), DCT_ALPHABET, params)
        lo32, span = self._range(params)
        pixels = (x - lo32) * (255.0 / span) - 128.0
        pixels = np.pad(pixels, ((0, 0), (0, tb * 8 - t), (0, cb * 8 - c)), mode="edge")
        blocks = pixels.reshape(n, tb, 8, cb, 8).transpose(0, 1, 3, 2, 4).reshape(-1, 8, 8)
        coef = _fft().dctn(blocks, axes=(1, 2), norm="ortho") / jpeg_table(self.quality)
        q = np.clip(np.rint(coef).reshape(-1, 64), -DCT_OFFSET, DCT_ALPHABET - DCT_OFFSET - 1)
        zz = q[:, ZIGZAG].astype(np.int64)  # (B, 64)
        nonzero = zz != 0
        lengths = np.where(nonzero.any(axis=1), 64 - np.argmax(nonzero[:, ::-1], axis=1), 0)
        kept = (zz + DCT_OFFSET)[np.arange(64)[None, :] < lengths[:, None]]  # row-major: block by block
        params["nsym"] = int(kept.size)
        return Symbols(np.concatenate([lengths, kept]).astype(np.uint16), DCT_ALPHABET, params)

    def inverse(self, symbols, params, shape):
        n, t, c = _nsc(shape)
        _expect_shape(symbols, self.symbol_layout(params, shape)[0])
        lo32, span = self._range(params)
        tb, cb = -(-t // 8), -(-c // 8)
        if tb == 0:
            return np.zeros(shape, np.float32)
        nblocks = n * tb * cb
        lengths = symbols[:nblocks].astype(np.int64)
        if lengths.max(initial=0) > 64 or int(lengths.sum()) != params["nsym"]:
            raise CodecError("corrupt DCT block lengths")
        first = nblocks + np.concatenate([[0], np.cumsum(lengths)])  # each block's first coefficient
        table = jpeg_table(self.quality)
        out = np.empty((n, t, c), np.float32)
        rows = max(1, DCT_BLOCKS // cb)  # block rows decoded at once: bounds the float64 temporaries
        for i in range(n):
            for r0 in range(0, tb, rows):
                r1 = min(tb, r0 + rows)
                b0, b1 = (i * tb + r0) * cb, (i * tb + r1) * cb
                zz = np.zeros((b1 - b0, 64))
                kept = np.arange(64)[None, :] < lengths[b0:b1, None]
                zz[kept] = symbols[first[b0] : first[b1]].astype(np.float64) - DCT_OFFSET
                coef = zz[:, UNZIGZAG].reshape(-1, 8, 8) * table
                blocks = _fft().idctn(coef, axes=(1, 2), norm="ortho")
                pixels = (
                    blocks.reshape(r1 - r0, cb, 8, 8).transpose(0, 2, 1, 3).reshape((r1 - r0) * 8, cb * 8)
                )
                f0, f1 = r0 * 8, min(t, r1 * 8)
                out[i, f0:f1] = (pixels[: f1 - f0, :c] + 128.0) * (span / 255.0) + lo32
        return out

    def pack_params(self, params, shape):
        return _range_params(params) + ParamWriter().varint(params["nsym"]).bytes()

    def unpack_params(self, blob, shape):
        r = ParamReader(blob, self.name)
        params = _read_range(r)
        params["nsym"] = r.varint()
        r.done()
        return params

    def symbol_layout(self, params, shape):
        n, t, c = _nsc(shape)
        nblocks = n * (-(-t // 8)) * (-(-c // 8))
        nsym = params.get("nsym")
        if not isinstance(nsym, int) or isinstance(nsym, bool) or not 0 <= nsym <= 64 * nblocks:
            raise CodecError("DCT payload has no valid coefficient count")
        return (nblocks + nsym,), DCT_ALPHABET

    @staticmethod
    def _range(params: dict) -> tuple[float, float]:
        """``(lo, hi - lo)`` as used by both sides; a zero span becomes 1 (constant input)."""
        lo, hi = _scalar(params, "lo"), _scalar(params, "hi")
        span = hi - lo
        return lo, span if span > 0 else 1.0


@register_transform("dct10", id=12)
class JpegDct10(_JpegDct):
    quality = 10


@register_transform("dct25", id=13)
class JpegDct25(_JpegDct):
    quality = 25


@register_transform("dct50", id=14)
class JpegDct50(_JpegDct):
    quality = 50


@register_transform("dct75", id=15)
class JpegDct75(_JpegDct):
    quality = 75
