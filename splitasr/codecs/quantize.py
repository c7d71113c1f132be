"""Lossy scalar transforms: ``f16`` and uniform ``q8``/``q6``/``q4``/``q2`` quantisers.

``qN`` maps every channel (last axis ``C``) to ``2**N`` evenly spaced reconstruction levels

    value = offset[c] + code * step[c],    code in [0, 2**N)

between a low and a high clip bound per channel. The bounds are *calibrated* on training
activations (:meth:`Uniform.fit_state`: per channel, the symmetric percentile clip with
the least quantisation MSE, see :func:`fit_bounds`) and saved as transform state, so a
payload carries only a short state id. Without state the transform falls back to the
message's own per-channel min/max, carried in the header's params as float32 (``lo`` then
``hi``, 8 bytes per channel).

The quantiser is *mid-tread* where it matters: when a channel's range straddles zero the
grid is shifted (by at most half a step) so that 0.0 is a level and comes back exactly,
which keeps ReLU zeros and silence exact; otherwise the lowest level is the low bound.
Encoding rounds to the nearest level, so inside the clip range ``|x - y| <= step / 2``.
NaN is coded as 0.0, and values outside the range (including +-inf) as the nearest bound.
"""

from __future__ import annotations

import numpy as np

from splitasr.codecs.base import (
    CodecError,
    ParamReader,
    ParamWriter,
    Symbols,
    Transform,
    register_transform,
)

_CANDIDATE_TAILS = (0.0, 1e-4, 1e-3, 3e-3, 1e-2, 3e-2, 0.1)  # clip mass per side tried by fit_bounds
_FIT_ROWS = 50_000  # frames used to pick the clip bounds
_DEQUANT_VALUES = 1 << 18  # values dequantised at once: bounds the float64 temporaries


@register_transform("f16", id=2)
class Float16(Transform):
    """IEEE half precision: symbols are the ``uint16`` bit patterns of ``x`` ``(N, T, C)``.

    Relative error about 2**-11 for normal values; beyond +-65504 values become +-inf,
    below about 6e-8 they flush towards zero. NaN stays NaN.
    """

    def forward(self, x: np.ndarray) -> Symbols:
        with np.errstate(over="ignore"):
            half = np.ascontiguousarray(x, dtype="<f4").astype("<f2")
        return Symbols(half.view("<u2"), 65536)

    def inverse(self, symbols, params, shape):
        return np.ascontiguousarray(symbols, dtype="<u2").view("<f2").astype(np.float32).reshape(shape)

    def symbol_layout(self, params, shape):
        return tuple(shape), 65536


def grid(lo: np.ndarray, hi: np.ndarray, levels: int) -> tuple[np.ndarray, np.ndarray]:
    """Reconstruction grid ``(offset (C,), step (C,))`` float64 for bounds ``lo``/``hi`` ``(C,)``.

    ``step = (hi - lo) / (levels - 1)``; when ``lo < 0 < hi`` the offset is ``-z * step`` for
    the integer ``z`` nearest ``-lo / step``, so code ``z`` decodes to exactly 0.0. A channel
    with ``hi <= lo`` has step 0: every value decodes to ``lo``.
    """
    lo, hi = np.asarray(lo, np.float64), np.asarray(hi, np.float64)
    step = np.where(hi > lo, (hi - lo) / (levels - 1), 0.0)
    straddles = (lo < 0) & (hi > 0) & (step > 0)
    zero = np.rint(np.divide(-lo, step, out=np.zeros_like(lo), where=straddles))
    offset = np.where(straddles, -(zero * step), lo)
    return offset, step


def quantise(x: np.ndarray, offset: np.ndarray, step: np.ndarray, levels: int) -> np.ndarray:
    """Codes ``uint8`` of ``x`` ``(..., C)`` on the grid ``offset``/``step`` ``(C,)``."""
    x = np.asarray(x, np.float64)
    top = offset + (levels - 1) * step
    x = np.clip(np.where(np.isnan(x), 0.0, x), offset, top)
    inv = np.divide(1.0, step, out=np.zeros_like(step), where=step > 0)
    return np.clip(np.rint((x - offset) * inv), 0, levels - 1).astype(np.uint8)


def dequantise(codes: np.ndarray, offset: np.ndarray, step: np.ndarray) -> np.ndarray:
    """float32 values ``offset + code * step`` of codes ``(..., C)``, computed in float64
    about :data:`_DEQUANT_VALUES` values at a time."""
    codes = np.asarray(codes)
    out = np.empty(codes.shape, np.float32)
    flat_in = codes.reshape(-1, codes.shape[-1]) if codes.ndim else codes.reshape(1, 1)
    flat_out = out.reshape(flat_in.shape)
    step_rows = max(1, _DEQUANT_VALUES // max(flat_in.shape[1], 1))
    for start in range(0, flat_in.shape[0], step_rows):
        rows = slice(start, start + step_rows)
        flat_out[rows] = offset + flat_in[rows].astype(np.float64) * step
    return out


def minmax_bounds(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel min and max ``(C,)`` float32 over the finite values of ``x`` ``(..., C)``;
    ``(0, 0)`` for a channel without any."""
    flat = np.asarray(x, np.float32).reshape(-1, x.shape[-1])
    if flat.shape[0] == 0:
        return np.zeros(x.shape[-1], np.float32), np.zeros(x.shape[-1], np.float32)
    finite = np.isfinite(flat)
    lo = np.where(finite, flat, np.inf).min(axis=0)
    hi = np.where(finite, flat, -np.inf).max(axis=0)
    empty = ~finite.any(axis=0)
    return np.where(empty, 0, lo).astype(np.float32), np.where(empty, 0, hi).astype(np.float32)


def fit_bounds(x: np.ndarray, levels: int) -> tuple[np.ndarray, np.ndarray]:
    """Clip bounds ``(lo (C,), hi (C,))`` float32 for training values ``x`` ``(M, C)``.

    For each channel, tries clipping a tail mass ``p`` on each side (the ``p`` and ``1 - p``
    quantiles, ``p`` in :data:`_CANDIDATE_TAILS`, 0 meaning min/max) and keeps the pair
    with the least mean squared quantisation error: few levels favour heavy clipping,
    many levels keep the full range.
    """
    x = np.asarray(x, np.float32)
    x = x[np.isfinite(x).all(axis=1)]
    if x.shape[0] == 0:
        raise CodecError("no finite activations to calibrate the quantiser on")
    if x.shape[0] > _FIT_ROWS:
        x = x[np.linspace(0, x.shape[0] - 1, _FIT_ROWS).astype(np.int64)]
    tails = np.asarray(_CANDIDATE_TAILS)
    qs = np.quantile(x, np.concatenate([tails, 1 - tails]), axis=0).astype(np.float32)
    lows, highs = qs[: tails.size], qs[tails.size :]
    best_err = np.full(x.shape[1], np.inf)
    lo, hi = lows[0].copy(), highs[0].copy()
    for cand_lo, cand_hi in zip(lows, highs, strict=True):
        offset, step = grid(cand_lo, cand_hi, levels)
        err = np.mean((dequantise(quantise(x, offset, step, levels), offset, step) - x) ** 2, axis=0)
        better = err < best_err
        best_err = np.where(better, err, best_err)
        lo, hi = np.where(better, cand_lo, lo), np.where(better, cand_hi, hi)
    return lo.astype(np.float32), hi.astype(np.float32)


class Uniform(Transform):
    """Uniform ``bits``-bit quantiser per channel; see the module docstring."""

    bits = 8

    def __init__(self, state: dict | None = None):
        super().__init__(state)
        self._bounds = None
        if self.state:
            lo = np.asarray(self.state.get("lo"), np.float32)
            hi = np.asarray(self.state.get("hi"), np.float32)
            if lo.ndim != 1 or lo.shape != hi.shape or not (np.isfinite(lo).all() and np.isfinite(hi).all()):
                raise CodecError(f"{self.name} state needs finite per-channel 'lo' and 'hi' arrays")
            if int(self.state.get("bits", self.bits)) != self.bits:
                raise CodecError(f"{self.name} state was calibrated for {self.state.get('bits')} bits")
            self._bounds = (lo, hi)

    @property
    def levels(self) -> int:
        return 1 << self.bits

    @classmethod
    def fit_state(cls, activations: list[np.ndarray]) -> dict:
        """Calibrated clip bounds from training activations, each ``(T, C)``."""
        x = np.concatenate([np.asarray(a, np.float32).reshape(-1, a.shape[-1]) for a in activations])
        lo, hi = fit_bounds(x, 1 << cls.bits)
        return {"lo": lo, "hi": hi, "bits": cls.bits, "method": "min-mse percentile clip"}

    def forward(self, x: np.ndarray) -> Symbols:
        if self._bounds is not None:
            lo, hi = self._bounds
            if lo.size != x.shape[-1]:
                raise CodecError(f"{self.name} is calibrated for {lo.size} channels, got {x.shape[-1]}")
            params = {}
        else:
            lo, hi = minmax_bounds(x)
            params = {"lo": lo, "hi": hi}
        offset, step = grid(lo, hi, self.levels)
        return Symbols(quantise(x, offset, step, self.levels), self.levels, params)

    def check_layout(self, shape, limits):
        if self._bounds is not None and self._bounds[0].size != shape[2]:
            raise CodecError(f"{self.name} is calibrated for {self._bounds[0].size} channels, got {shape[2]}")

    def pack_params(self, params, shape):
        if not params:
            return b""
        return ParamWriter().array(params["lo"], "<f4").array(params["hi"], "<f4").bytes()

    def unpack_params(self, blob, shape):
        if self._bounds is not None:
            return super().unpack_params(blob, shape)
        c = shape[2]
        if len(blob) != 8 * c:
            raise CodecError(f"{self.name}: clip bounds take {8 * c} bytes for {c} channels, got {len(blob)}")
        r = ParamReader(blob, self.name)
        lo, hi = r.array(c, "<f4").astype(np.float32), r.array(c, "<f4").astype(np.float32)
        r.done()
        return {"lo": lo, "hi": hi}

    def bounds(self, params: dict, channels: int) -> tuple[np.ndarray, np.ndarray]:
        """``(lo, hi)`` float32 ``(C,)`` a payload was coded with: its own (``params``) or,
        with empty ``params``, the state's."""
        if "lo" in params:
            lo, hi = np.asarray(params["lo"], np.float32), np.asarray(params["hi"], np.float32)
            if lo.shape != (channels,) or hi.shape != (channels,):
                raise CodecError(f"{self.name}: bad clip bounds in the header")
            return lo, hi
        if self._bounds is None:
            raise CodecError(f"{self.name} payload needs calibration state, and this codec has none")
        if self._bounds[0].size != channels:
            raise CodecError(f"{self.name} is calibrated for {self._bounds[0].size} channels, got {channels}")
        return self._bounds

    def step(self, params: dict, channels: int) -> tuple[np.ndarray, np.ndarray]:
        """``(offset, step)`` float64 ``(C,)`` of the grid a payload uses."""
        return grid(*self.bounds(params, channels), self.levels)

    def inverse(self, symbols, params, shape):
        offset, step = self.step(params, shape[-1])
        codes = np.asarray(symbols).reshape(shape)
        if codes.size and codes.max() >= self.levels:
            raise CodecError(f"{self.name}: code out of range")
        return dequantise(codes, offset, step)

    def symbol_layout(self, params, shape):
        return tuple(shape), self.levels


@register_transform("q8", id=3)
class Q8(Uniform):
    bits = 8


@register_transform("q6", id=4)
class Q6(Uniform):
    bits = 6


@register_transform("q4", id=5)
class Q4(Uniform):
    bits = 4


@register_transform("q2", id=6)
class Q2(Uniform):
    bits = 2
