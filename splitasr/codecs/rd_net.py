"""The PyTorch parts of the ``lrd`` codec (:mod:`splitasr.codecs.rd`): its network, the
learned prior and the export of the prior's run-time tables.

Kept apart from the transform so that ``import splitasr.codecs`` needs no torch; the
transform builds its network on first use (:attr:`splitasr.codecs.rd.Lrd.net`).
"""

from __future__ import annotations

import math
from dataclasses import asdict

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from splitasr.codecs.base import CodecError
from splitasr.codecs.entropy import PRIOR_MAX_SYMBOLS, quantise_pmf
from splitasr.codecs.rd import LIKELIHOOD_FLOOR, TAIL, LrdConfig, lrd_tables_from_state

SCALE_FLOOR = 0.11  # the hyperprior's smallest spread (CompressAI's lower bound)
HYPER_DEC_HIDDEN = 64


class FactorizedPrior(nn.Module):
    """Per-channel learned CDF (CompressAI ``EntropyBottleneck``'s density).

    ``channels`` latent channels; ``filters`` the hidden widths of the per-channel monotone
    MLP (CompressAI's default ``(3, 3, 3, 3)``); ``init_scale`` the initial spread.
    """

    def __init__(self, channels: int, filters: tuple[int, ...] = (3, 3, 3, 3), init_scale: float = 10.0):
        super().__init__()
        dims = (1, *filters, 1)
        scale = init_scale ** (1 / (len(dims) - 1))
        self.matrices, self.biases, self.factors = nn.ParameterList(), nn.ParameterList(), nn.ParameterList()
        for i in range(len(dims) - 1):
            init = math.log(math.expm1(1 / scale / dims[i + 1]))
            self.matrices.append(nn.Parameter(torch.full((channels, dims[i + 1], dims[i]), init)))
            self.biases.append(nn.Parameter(torch.rand(channels, dims[i + 1], 1) - 0.5))
            if i < len(dims) - 2:
                self.factors.append(nn.Parameter(torch.zeros(channels, dims[i + 1], 1)))
        self.channels = channels

    def logits_cdf(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` ``(C, 1, M)`` -> logits of the CDF at each point, ``(C, 1, M)``."""
        h = x
        for i, (m, b) in enumerate(zip(self.matrices, self.biases, strict=True)):
            h = torch.matmul(F.softplus(m), h) + b
            if i < len(self.factors):
                h = h + torch.tanh(self.factors[i]) * torch.tanh(h)
        return h

    def likelihood(self, y: torch.Tensor) -> torch.Tensor:
        """``y`` ``(N, T, C)`` (integer-valued or noisy) -> ``P(y - 1/2 < Y < y + 1/2)`` per
        value, ``(N, T, C)``, floored at :data:`LIKELIHOOD_FLOOR`."""
        n, t, c = y.shape
        v = y.permute(2, 0, 1).reshape(c, 1, n * t)
        lower, upper = self.logits_cdf(v - 0.5), self.logits_cdf(v + 0.5)
        sign = -torch.sign(lower + upper).detach()  # evaluate in the flatter tail for precision
        p = (torch.sigmoid(sign * upper) - torch.sigmoid(sign * lower)).abs()
        return p.clamp_min(LIKELIHOOD_FLOOR).reshape(c, n, t).permute(1, 2, 0)

    def bits(self, y: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Total code length in bits of ``y`` ``(N, T, C)`` (``mask`` ``(N, T, 1)``: valid frames)."""
        b = -torch.log2(self.likelihood(y))
        return (b * mask).sum() if mask is not None else b.sum()


@torch.no_grad()
def _quantile(prior: FactorizedPrior, level: float, span: float = 1e4, steps: int = 60) -> np.ndarray:
    """Per channel the ``x`` where the CDF reaches ``level``, by bisection: ``(C,)`` float64."""
    logit = math.log(level / (1 - level))
    lo = torch.full((prior.channels, 1, 1), -span, dtype=torch.float64)
    hi = torch.full_like(lo, span)
    p = prior.double()
    try:
        for _ in range(steps):
            mid = (lo + hi) / 2
            below = p.logits_cdf(mid) < logit
            lo, hi = torch.where(below, mid, lo), torch.where(below, hi, mid)
    finally:
        prior.float()
    return ((lo + hi) / 2).reshape(-1).numpy()


@torch.no_grad()
def prior_tables(prior: FactorizedPrior, max_symbols: int = PRIOR_MAX_SYMBOLS) -> dict[str, np.ndarray]:
    """Run-time tables of a trained prior (see the module docstring): ``median`` ``(C,)``
    float32, ``offset`` ``(C,)`` int32 (``lo``), ``sizes`` ``(C,)`` int32 and ``freqs``
    ``(C, L)`` int64 (16-bit frequencies, 0 past a channel's size)."""
    if not 2 <= max_symbols <= PRIOR_MAX_SYMBOLS:
        raise CodecError(f"max_symbols must be 2..{PRIOR_MAX_SYMBOLS}")
    median = _quantile(prior, 0.5).astype(np.float32).astype(np.float64)
    lo = np.floor(_quantile(prior, TAIL) - median).astype(np.int64)
    hi = np.ceil(_quantile(prior, 1 - TAIL) - median).astype(np.int64)
    lo, hi = np.minimum(lo, -1), np.maximum(hi, 1)  # at least 3 symbols
    half = max_symbols // 2
    lo, hi = np.maximum(lo, -half), np.minimum(hi, max_symbols - 1 - half)
    sizes = hi - lo + 1
    width = int(sizes.max())
    freqs = np.zeros((prior.channels, width), np.int64)
    p = prior.double()
    try:
        for c in range(prior.channels):
            k = np.arange(lo[c], hi[c] + 1, dtype=np.float64) + median[c]
            edges = torch.from_numpy(np.concatenate([k - 0.5, [k[-1] + 0.5]]))
            logits = p.logits_cdf(edges.expand(prior.channels, 1, -1).contiguous())[c, 0]
            cdf = torch.sigmoid(logits).numpy()
            cdf[0], cdf[-1] = 0.0, 1.0  # the clamped tails fold into the end symbols
            freqs[c, : sizes[c]] = quantise_pmf(np.diff(cdf))
    finally:
        prior.float()
    return {
        "median": median.astype(np.float32),
        "offset": lo.astype(np.int32),
        "sizes": sizes.astype(np.int32),
        "freqs": freqs,
    }


def gaussian_bits(v: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Bits of integer-spaced values at offset ``v`` from a Gaussian's mean: ``-log2`` of its
    mass on ``[v - 1/2, v + 1/2]`` (spread ``sigma``, same shape), computed in the lower tail."""
    a = -v.abs()
    p = torch.special.ndtr((a + 0.5) / sigma) - torch.special.ndtr((a - 0.5) / sigma)
    return -torch.log2(p.clamp_min(LIKELIHOOD_FLOOR))


@torch.no_grad()
def hyper_tables(net: LrdNet, max_symbols: int = PRIOR_MAX_SYMBOLS) -> dict[str, np.ndarray]:
    """Run-time tables of a trained hyperprior (see :mod:`splitasr.codecs.rd`): per class
    ``k`` and channel the mean (``mean`` ``(K, D)`` float32) and the discretised Gaussian's
    16-bit frequencies on ``-half .. half`` (``freqs`` ``(K, D, L)``; ``half`` ``(D,)``
    covers all but ~``TAIL`` of the widest class's mass, the tails folded into the end
    symbols); the classes' frequencies (``class_freqs`` ``(K,)``) and the device's class
    MLP (``w1``, ``b1``, ``w2``, ``b2``)."""
    cfg, k = net.cfg, net.cfg.hyper_classes
    mean, sigma = (t.double().numpy() for t in net.class_params(torch.arange(k, dtype=torch.float32)))
    edge = float(torch.special.ndtri(torch.tensor(1 - TAIL, dtype=torch.float64)))
    half = np.clip(np.ceil(edge * sigma.max(0) + 0.5), 1, (max_symbols - 1) // 2).astype(np.int64)
    freqs = np.zeros((k, cfg.latent_dim, int(2 * half.max() + 1)), np.int64)
    for c in range(cfg.latent_dim):
        n = np.arange(-half[c], half[c] + 2, dtype=np.float64) - 0.5  # the symbols' edges
        for j in range(k):
            cdf = torch.special.ndtr(torch.from_numpy(n / sigma[j, c])).numpy()
            cdf[0], cdf[-1] = 0.0, 1.0  # the clamped tails fold into the end symbols
            freqs[j, c, : 2 * half[c] + 1] = quantise_pmf(np.diff(cdf))
    p = net.prior_z.double()
    try:
        edges = torch.arange(k + 1, dtype=torch.float64).reshape(1, 1, -1) - 0.5
        cdf = torch.sigmoid(p.logits_cdf(edges))[0, 0].numpy()
    finally:
        net.prior_z.float()
    cdf[0], cdf[-1] = 0.0, 1.0
    (l1, _, l2) = net.hyper_enc
    return {
        "mean": mean.astype(np.float32),
        "half": half.astype(np.int32),
        "freqs": freqs,
        "class_freqs": quantise_pmf(np.diff(cdf)),
        "w1": l1.weight.numpy().copy(),
        "b1": l1.bias.numpy().copy(),
        "w2": l2.weight.numpy().copy(),
        "b2": l2.bias.numpy().copy(),
    }


class _Res(nn.Module):
    def __init__(self, ch: int, kernel: int = 5):
        super().__init__()
        self.conv1 = nn.Conv1d(ch, ch, kernel, padding=kernel // 2)
        self.conv2 = nn.Conv1d(ch, ch, kernel, padding=kernel // 2)

    def forward(self, x):
        return x + self.conv2(F.gelu(self.conv1(F.gelu(x))))


class LrdNet(nn.Module):
    """Device encoder, cloud decoder and the latents' prior. Tensors are ``(N, T, C)``.

    * :meth:`encode`: ``(N, T, in_dim)`` -> continuous latent ``(N, ceil(T/stride), latent_dim)``
      (a strided convolution, GELU, a 1x1 convolution: the only part on the device);
    * :meth:`decode`: latent -> ``(N, t_out, in_dim)`` (transposed convolution,
      ``dec_blocks`` residual blocks, a 1x1 convolution). The blocks past the first two
      live in ``dec_more`` so that states of two-block codecs load unchanged.
    """

    def __init__(self, cfg: LrdConfig):
        super().__init__()
        self.cfg = cfg
        c, d, s, e, h = cfg.in_dim, cfg.latent_dim, cfg.stride, cfg.enc_hidden, cfg.hidden
        self.register_buffer("in_mean", torch.zeros(c))
        self.register_buffer("in_std", torch.ones(c))
        self.enc1 = nn.Conv1d(c, e, kernel_size=2 * s, stride=s, padding=s // 2)
        self.enc2 = nn.Conv1d(e, d, kernel_size=1)
        self.up = nn.ConvTranspose1d(d, h, kernel_size=2 * s, stride=s, padding=s // 2)
        self.dec_more = nn.Sequential(*(_Res(h) for _ in range(cfg.dec_blocks - 2)))
        self.dec = nn.Sequential(_Res(h), _Res(h), nn.GELU(), nn.Conv1d(h, c, 1))
        if cfg.hyper_classes:  # the class MLP on the device, the class -> (mean, spread) MLP in the cloud
            self.hyper_enc = nn.Sequential(
                nn.Linear(d, cfg.hyper_hidden), nn.ReLU(), nn.Linear(cfg.hyper_hidden, 1)
            )
            self.hyper_dec = nn.Sequential(
                nn.Linear(1, HYPER_DEC_HIDDEN), nn.ReLU(), nn.Linear(HYPER_DEC_HIDDEN, 2 * d)
            )
            self.prior_z = FactorizedPrior(1)
        else:
            self.prior = FactorizedPrior(d)
        if cfg.rates > 1:  # log-gains, spread so a higher index starts finer (more bits)
            start = torch.linspace(-1.0, 1.0, cfg.rates)[:, None].expand(cfg.rates, d)
            self.log_gain = nn.Parameter(start.clone())
            self.log_inv_gain = nn.Parameter(-start.clone())

    def gains(self, rate: float) -> tuple[torch.Tensor, torch.Tensor]:
        """``(gain (D,), inverse gain (D,))`` at rate position ``rate`` in ``[0, rates-1]``
        (geometric interpolation between the neighbouring indices); ones with one rate."""
        if self.cfg.rates == 1:
            one = torch.ones(self.cfg.latent_dim)
            return one, one
        if not 0 <= rate <= self.cfg.rates - 1:
            raise CodecError(f"lrd rate {rate} is outside 0..{self.cfg.rates - 1}")
        i = min(int(math.floor(rate)), self.cfg.rates - 2)
        a = rate - i
        g = (1 - a) * self.log_gain[i] + a * self.log_gain[i + 1]
        h = (1 - a) * self.log_inv_gain[i] + a * self.log_inv_gain[i + 1]
        return g.exp(), h.exp()

    def latent_frames(self, t_in: int) -> int:
        return self.cfg.latent_frames(t_in)

    def encode(self, x: torch.Tensor, rate: float = 0.0) -> torch.Tensor:
        """``(N, T, in_dim)`` -> ``(N, ceil(T / stride), latent_dim)``, scaled by the gain
        of ``rate``."""
        t_lat = self.latent_frames(x.shape[1])
        z = (x - self.in_mean) / self.in_std
        z = self.enc2(F.gelu(self.enc1(z.transpose(1, 2)))).transpose(1, 2)
        z = z[:, :t_lat]
        z = F.pad(z, (0, 0, 0, t_lat - z.shape[1])) if z.shape[1] < t_lat else z
        return z * self.gains(rate)[0] if self.cfg.rates > 1 else z

    def decode(self, q: torch.Tensor, t_out: int, rate: float = 0.0) -> torch.Tensor:
        """``(N, T_lat, latent_dim)`` -> ``(N, t_out, in_dim)``; ``rate`` as at :meth:`encode`."""
        if self.cfg.rates > 1:
            q = q * self.gains(rate)[1]
        y = self.dec(self.dec_more(self.up(q.transpose(1, 2)))).transpose(1, 2)
        y = y[:, :t_out]
        y = F.pad(y, (0, 0, 0, t_out - y.shape[1])) if y.shape[1] < t_out else y
        return y * self.in_std + self.in_mean

    def class_value(self, y: torch.Tensor) -> torch.Tensor:
        """The hyperprior's continuous class ``(K-1) sigmoid(a)`` of each latent frame
        ``y`` ``(N, T_lat, D)`` -> ``(N, T_lat, 1)``; rounded, it is the frame's class."""
        return (self.cfg.hyper_classes - 1) * torch.sigmoid(self.hyper_enc(y))

    def class_params(self, k: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(mean, spread)`` ``(..., D)`` of the latents of class ``k`` ``(...)`` (integer-valued)."""
        u = (2 * k / (self.cfg.hyper_classes - 1) - 1)[..., None]
        mean, log_sigma = self.hyper_dec(u).chunk(2, dim=-1)
        return mean, log_sigma.exp().clamp_min(SCALE_FLOOR)

    def forward(
        self, x: torch.Tensor, rate: float = 0.0, mask: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Training pass at ``rate``: ``(reconstruction (N, T, in_dim), bits (scalar))``
        with uniform noise standing in for rounding; ``mask`` ``(N, T_lat, 1)`` marks
        valid latent frames. With a hyperprior the bits include the classes', and the
        class reaches the mean and spread rounded (straight-through), as at run time."""
        y = self.encode(x, rate)
        y_tilde = y + torch.empty_like(y).uniform_(-0.5, 0.5)
        x_hat = self.decode(y_tilde, x.shape[1], rate)
        if not self.cfg.hyper_classes:
            return x_hat, self.prior.bits(y_tilde, mask)
        z = self.class_value(y)
        side = self.prior_z.bits(z + torch.empty_like(z).uniform_(-0.5, 0.5), mask)
        mean, sigma = self.class_params((z + (z.round() - z).detach())[..., 0])
        b = gaussian_bits(y_tilde - mean, sigma)
        return x_hat, side + ((b * mask).sum() if mask is not None else b.sum())

    def encoder_parameters(self) -> int:
        """Parameters that run on the device (the normalisation buffers included)."""
        gains = self.cfg.latent_dim * self.cfg.rates if self.cfg.rates > 1 else 0
        device = (self.enc1, self.enc2, self.hyper_enc) if self.cfg.hyper_classes else (self.enc1, self.enc2)
        return sum(p.numel() for m in device for p in m.parameters()) + 2 * self.cfg.in_dim + gains

    def encoder_flops(self, t_in: int) -> int:
        """Multiply-adds of :meth:`encode` on ``t_in`` frames (one item)."""
        cfg, t_lat = self.cfg, self.latent_frames(t_in)
        hyper = cfg.latent_dim * cfg.hyper_hidden + cfg.hyper_hidden if cfg.hyper_classes else 0
        return t_lat * (
            cfg.in_dim * cfg.enc_hidden * 2 * cfg.stride + cfg.enc_hidden * cfg.latent_dim + hyper
        )


# ------------------------------------------------------------------ state files


CLOUD_HALF = ("up.", "dec_more.", "dec.")  # state keys stored as float16 (the cloud decoder)


def lrd_to_state(net: LrdNet, extra: dict | None = None) -> dict:
    """Weights, the run-time prior tables and the config, for
    :func:`~splitasr.codecs.state.save_state`.

    The cloud decoder's weights (``up``, ``dec_more``, ``dec``: nearly all of a codec whose decoder is
    wide) are stored as float16 and run as float32: they only shape a continuous
    reconstruction, so the halved file costs ~1e-3 of its values' scale and no symbol.
    Everything the symbols depend on (device encoder, gains, class MLP) and the tables
    stay float32."""
    arrays = {
        f"w.{k}": v.detach().cpu().to(torch.float16 if k.startswith(CLOUD_HALF) else torch.float32).numpy()
        for k, v in net.state_dict().items()
    }
    big = [k for k, v in arrays.items() if v.dtype == np.float16 and not np.isfinite(v).all()]
    if big:  # beyond float16's 65504 (or NaN): the cloud would decode NaN; keep the checkpoint
        raise CodecError(f"lrd state: {big[0]} does not fit float16 (|w| > 65504 or NaN)")
    if net.cfg.hyper_classes:
        tables = {f"hyper.{k}": v for k, v in hyper_tables(net).items()}
    else:
        tables = {f"prior.{k}": v for k, v in prior_tables(net.prior).items()}
    return {**arrays, **tables, "config": asdict(net.cfg), **(extra or {})}


def net_weights(state: dict) -> dict[str, torch.Tensor]:
    """The network's tensors in a saved state or training checkpoint (keys ``w.<name>``,
    as :func:`lrd_to_state` writes them), by parameter name."""
    return {k[2:]: torch.from_numpy(np.asarray(v)) for k, v in state.items() if k.startswith("w.")}


def lrd_net_from_state(state: dict) -> LrdNet:
    """The network of a saved state in eval mode, checked against its config."""
    cfg, _ = lrd_tables_from_state(state)
    net = LrdNet(cfg)
    weights = net_weights(state)
    try:
        missing, unexpected = net.load_state_dict(weights, strict=False)
    except RuntimeError as exc:
        raise CodecError(f"lrd state does not match its config ({exc})") from None
    if missing or unexpected:
        raise CodecError(
            f"lrd state does not match its config (missing {missing[:3]}, unexpected {unexpected[:3]})"
        )
    return net.eval()


def lrd_from_state(state: dict) -> tuple[LrdNet, dict[str, np.ndarray]]:
    """``(network in eval mode, prior tables)`` from a saved state, checked."""
    return lrd_net_from_state(state), lrd_tables_from_state(state)[1]
