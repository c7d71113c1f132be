"""Synthetic activations and float strategies shared by the codec tests."""

from __future__ import annotations

import functools

import numpy as np
import torch
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

# float32 bit patterns a lossless codec must keep: zeros, subnormals, extremes, inf, NaNs
SPECIAL_BITS = [
    0x00000000,  # +0.0
    0x80000000,  # -0.0
    0x00000001,  # smallest subnormal
    0x807FFFFF,  # largest negative subnormal
    0x00800000,  # smallest normal
    0x7F7FFFFF,  # largest finite
    0x7F800000,  # +inf
    0xFF800000,  # -inf
    0x7FC00000,  # quiet NaN
    0xFFC00001,  # negative NaN with a payload
    0x7F800001,  # signalling NaN
    0x3F800000,  # 1.0
]


def laplacian_activations(n: int, frames: int, channels: int, seed: int = 0) -> list[np.ndarray]:
    """``n`` arrays ``(frames, channels)`` float32 like ReLU-ish network activations: Laplacian
    values with per-channel scales, the lower tail clipped at a per-channel floor."""
    rng = np.random.default_rng(seed)
    scale = rng.uniform(0.1, 3.0, channels)
    floor = -rng.uniform(0.0, 1.0, channels) * scale
    return [
        np.maximum(rng.laplace(0.0, 1.0, (frames, channels)) * scale, floor).astype(np.float32)
        for _ in range(n)
    ]


@st.composite
def activation_bits(draw, max_n: int = 2, max_t: int = 50, max_c: int = 40, channels: int | None = None):
    """A float32 tensor ``(N, T, C)`` from arbitrary bit patterns (NaNs with payloads, -0.0,
    subnormals, infinities) mixed with ordinary values."""
    n = draw(st.integers(1, max_n))
    t = draw(st.integers(0, max_t))
    c = channels or draw(st.integers(1, max_c))
    elements = st.one_of(
        st.integers(0, 2**32 - 1),
        st.sampled_from(SPECIAL_BITS),
        st.floats(-100, 100, width=32).map(lambda v: int(np.float32(v).view(np.uint32))),
    )
    raw = draw(hnp.arrays(np.uint32, (n, t, c), elements=elements))
    return torch.from_numpy(raw.view(np.float32))


@st.composite
def activation_values(draw, max_n: int = 2, max_t: int = 50, max_c: int = 40, channels: int | None = None):
    """A float32 tensor ``(N, T, C)`` of finite values on varied scales, for lossy codecs."""
    n = draw(st.integers(1, max_n))
    t = draw(st.integers(0, max_t))
    c = channels or draw(st.integers(1, max_c))
    scale = draw(st.sampled_from([1e-3, 1.0, 50.0]))
    elements = st.floats(-1.0, 1.0, width=32, allow_subnormal=False)
    raw = draw(hnp.arrays(np.float32, (n, t, c), elements=elements))
    return torch.from_numpy(raw * np.float32(scale))


def same_bits(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Bit-exact equality, NaN payloads and signed zeros included."""
    return a.shape == b.shape and torch.equal(
        a.contiguous().view(torch.int32), b.contiguous().view(torch.int32)
    )


@functools.cache
def untrained_lrd_dir(
    in_dim: int = 256, latent_dim: int = 16, seed: int = 0, rates: int = 1, hyper_classes: int = 0
) -> str:
    """A state folder holding an ``lrd`` codec with randomly initialised weights and the
    prior tables derived from its (untrained) density: a real, if useless, codec for tests
    of the format and its bounds. Kept for the test session in a temporary folder."""
    import tempfile

    import torch

    from splitasr.codecs.rd import LrdConfig, LrdNet, lrd_to_state
    from splitasr.codecs.state import save_state

    torch.manual_seed(seed)
    out = tempfile.mkdtemp(prefix="lrd-untrained-")
    cfg = LrdConfig(in_dim=in_dim, latent_dim=latent_dim, hidden=64, rates=rates, hyper_classes=hyper_classes)
    save_state(out, "lrd", lrd_to_state(LrdNet(cfg)))
    return out
