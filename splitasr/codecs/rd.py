"""Rate-distortion codecs: a learned factorised prior codes the latents of a small encoder.

``lrd`` (learned rate-distortion) is a :class:`~splitasr.codecs.base.Transform` like the
other learned codecs (:mod:`.learned`), with one difference: it is trained for
``rate + lambda x distortion`` (:mod:`splitasr.training.rd_train`), where the rate is the
code length of its latents under a learned density, and at run time the ``ans`` coder
codes them with that same density (``lrd+ans``: :meth:`Lrd.symbol_prior`, taken by
:meth:`splitasr.codecs.entropy.Ans.bind`).

The density (:class:`FactorizedPrior`) is CompressAI's ``EntropyBottleneck`` (Balle et
al. 2018, "Variational image compression with a scale hyperprior", appendix 6.1): per
latent channel a cumulative distribution ``c(x) = sigmoid(f_K(...f_1(x)))``, each ``f_k``
a tiny monotone map (positive matrices via softplus, ``x + tanh(a) * tanh(x)`` between).
CompressAI itself was not used: on this project's pinned torch 2.13.0 its install would
replace torch (it pulls torch 2.14.1, torchvision and CUDA wheels).

* Training: ``y_tilde = y + u``, ``u ~ U(-1/2, 1/2)``; rate ``sum -log2(c(y+1/2) - c(y-1/2))``.
* Export (:func:`prior_tables`, once, when the state is saved): per channel the median
  ``m``, and an integer symbol range ``lo .. hi`` around it holding all but about
  ``2 x TAIL`` of the mass (at most ``PRIOR_MAX_SYMBOLS`` symbols); the pmf of
  ``round(y - m)`` on that range, the tails folded into the end symbols, as a 16-bit
  frequency table (:func:`~splitasr.codecs.entropy.quantise_pmf`: every symbol >= 1).
  The tables are stored in the state, so encoder and decoder use bit-identical ones.
* Run time: ``symbol = clamp(round(y - m), lo, hi) - lo``, decoded to
  ``q = symbol + lo + m``. Values beyond the range are clamped (a distortion, not an
  escape code): by construction they occur with probability about ``TAIL`` per value.

Variable rate from one set of weights (gain units, Cui et al. 2021, "Asymmetric gained
deep image compression with continuous rate adaptation"): with ``rates = R > 1`` the
encoder's latent is multiplied by a learned gain vector ``g_r`` ``(D,)`` before rounding
and the decoder's input by an inverse gain ``h_r``, one pair per rate index ``r``, each
trained with its own lambda; a position between two indices interpolates geometrically
(``g = g_i^(1-a) g_(i+1)^a``), so any rate between the lowest and the highest is
available. The prior is shared. The encoder picks the position (:meth:`Lrd.at_rate`);
the payload carries it (params: one float32), so the decoder needs no setting.
"""

from __future__ import annotations

import copy
import math
from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from splitasr.codecs.base import (
    CodecError,
    ParamReader,
    ParamWriter,
    Symbols,
    Transform,
    register_transform,
)
from splitasr.codecs.entropy import PRIOR_MAX_SYMBOLS, ChannelPrior, quantise_pmf

TAIL = 1e-6  # probability mass left beyond each end of a channel's symbol range
LIKELIHOOD_FLOOR = 1e-9


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


@dataclass
class LrdConfig:
    """Shape of an ``lrd`` codec; saved in its state file.

    ``point``: the split point it reads and decodes to; ``in_dim`` the values per frame
    there; ``latent_dim`` latent channels every ``stride`` frames; ``enc_hidden`` the
    device encoder's one hidden width (keep it small: it runs on the device);
    ``hidden`` the cloud decoder's width.
    """

    point: str = "stem"
    in_dim: int = 384
    latent_dim: int = 32
    stride: int = 2
    enc_hidden: int = 64
    hidden: int = 384
    rates: int = 1  # gain-vector pairs (1: one fixed rate, no gains)

    def __post_init__(self):
        if min(self.in_dim, self.latent_dim, self.stride, self.enc_hidden, self.hidden, self.rates) < 1:
            raise CodecError("lrd config: every size must be >= 1")
        if self.rates > 64:
            raise CodecError("lrd config: at most 64 rates")


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
    * :meth:`decode`: latent -> ``(N, t_out, in_dim)`` (transposed convolution, two
      residual blocks, a 1x1 convolution).
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
        self.dec = nn.Sequential(_Res(h), _Res(h), nn.GELU(), nn.Conv1d(h, c, 1))
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
        return math.ceil(t_in / self.cfg.stride)

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
        y = self.dec(self.up(q.transpose(1, 2))).transpose(1, 2)
        y = y[:, :t_out]
        y = F.pad(y, (0, 0, 0, t_out - y.shape[1])) if y.shape[1] < t_out else y
        return y * self.in_std + self.in_mean

    def forward(
        self, x: torch.Tensor, rate: float = 0.0, mask: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Training pass at ``rate``: ``(reconstruction (N, T, in_dim), bits (scalar))``
        with uniform noise standing in for rounding; ``mask`` ``(N, T_lat, 1)`` marks
        valid latent frames."""
        y = self.encode(x, rate)
        y_tilde = y + torch.empty_like(y).uniform_(-0.5, 0.5)
        return self.decode(y_tilde, x.shape[1], rate), self.prior.bits(y_tilde, mask)

    def encoder_parameters(self) -> int:
        """Parameters that run on the device (the normalisation buffers included)."""
        gains = self.cfg.latent_dim * self.cfg.rates if self.cfg.rates > 1 else 0
        return (
            sum(p.numel() for m in (self.enc1, self.enc2) for p in m.parameters())
            + 2 * self.cfg.in_dim
            + gains
        )

    def encoder_flops(self, t_in: int) -> int:
        """Multiply-adds of :meth:`encode` on ``t_in`` frames (one item)."""
        cfg, t_lat = self.cfg, self.latent_frames(t_in)
        return t_lat * (cfg.in_dim * cfg.enc_hidden * 2 * cfg.stride + cfg.enc_hidden * cfg.latent_dim)


# ------------------------------------------------------------------ state files


def lrd_to_state(net: LrdNet, extra: dict | None = None) -> dict:
    """Weights (float32), the run-time prior tables and the config, for
    :func:`~splitasr.codecs.state.save_state`."""
    arrays = {f"w.{k}": v.detach().cpu().float().numpy() for k, v in net.state_dict().items()}
    tables = {f"prior.{k}": v for k, v in prior_tables(net.prior).items()}
    return {**arrays, **tables, "config": asdict(net.cfg), **(extra or {})}


def lrd_from_state(state: dict) -> tuple[LrdNet, dict[str, np.ndarray]]:
    """``(network in eval mode, prior tables)`` from a saved state, checked."""
    try:
        cfg = LrdConfig(**state["config"])
    except (KeyError, TypeError) as exc:
        raise CodecError(f"lrd state has no valid config ({exc})") from None
    net = LrdNet(cfg)
    weights = {k[2:]: torch.from_numpy(np.asarray(v)) for k, v in state.items() if k.startswith("w.")}
    try:
        missing, unexpected = net.load_state_dict(weights, strict=False)
    except RuntimeError as exc:
        raise CodecError(f"lrd state does not match its config ({exc})") from None
    if missing or unexpected:
        raise CodecError(
            f"lrd state does not match its config (missing {missing[:3]}, unexpected {unexpected[:3]})"
        )
    try:
        tables = {k: np.asarray(state[f"prior.{k}"]) for k in ("median", "offset", "sizes", "freqs")}
    except KeyError as exc:
        raise CodecError(f"lrd state has no prior table {exc}") from None
    if any(v.shape[0] != cfg.latent_dim for v in tables.values()):
        raise CodecError("lrd state: prior tables do not match latent_dim")
    return net.eval(), tables


@register_transform("lrd", id=27)
class Lrd(Transform):
    """A trained :class:`LrdNet` as a transform; see the module docstring. Its symbols are
    ``(N, T_lat, latent_dim)`` integers in ``0 .. sizes[c]-1``, coded best by ``ans``
    with :meth:`symbol_prior`."""

    def __init__(self, state: dict | None = None):
        super().__init__(state)
        if not self.state:
            raise CodecError(
                "codec 'lrd' is learned and has no trained state here: train it with "
                "`splitasr train-codec --config configs/lrd-<model>-<point>.toml`"
            )
        self.net, self.tables = lrd_from_state(self.state)
        t = self.tables
        self.prior = ChannelPrior(t["freqs"].astype(np.int64), t["sizes"].astype(np.int64))
        self.rate = float(self.config.rates - 1)  # the finest by default; see at_rate

    takes_option = True

    def with_option(self, option: str) -> Lrd:
        """``lrd@1.5``: rate position 1.5; ``lrd@2k``: the position whose measured rate
        (``rate_kbps`` in the state, per rate index, from training) is 2 kbit/s,
        interpolated in log-rate and clamped to the available range."""
        try:
            value = float(option[:-1] if option.endswith("k") else option)
        except ValueError:
            raise CodecError(f"lrd@{option}: write a rate position (lrd@1.5) or kbit/s (lrd@2k)") from None
        if not option.endswith("k"):
            return self.at_rate(value)
        kbps = np.asarray(self.state.get("rate_kbps", []), np.float64)
        if kbps.size != self.config.rates or self.config.rates < 2:
            raise CodecError(f"lrd@{option}: this state has no measured rates to pick from; name a position")
        if not np.isfinite(value) or value <= 0 or (np.diff(kbps) <= 0).any():
            raise CodecError(f"lrd@{option}: cannot pick a position (rates {kbps.round(2).tolist()} kbit/s)")
        pos = float(np.interp(np.log(value), np.log(kbps), np.arange(kbps.size)))
        return self.at_rate(pos)

    def at_rate(self, rate: float) -> Lrd:
        """This codec encoding at rate position ``rate`` (``0 .. rates-1``; higher: more
        bits, less distortion), sharing the weights; ``self`` is unchanged. Payloads say
        their rate, so any :class:`Lrd` with the same state decodes them."""
        if not 0 <= rate <= self.config.rates - 1:
            raise CodecError(f"lrd rate {rate} is outside 0..{self.config.rates - 1}")
        other = copy.copy(self)
        other.rate = float(np.float32(rate))  # what the payload's float32 carries
        return other

    def pack_params(self, params, shape):
        if self.config.rates == 1:
            return super().pack_params(params, shape)
        return ParamWriter().f32(params["rate"]).bytes()

    def unpack_params(self, blob, shape):
        if self.config.rates == 1:
            return super().unpack_params(blob, shape)
        r = ParamReader(blob, "lrd")
        rate = r.f32()
        r.done()
        if not 0 <= rate <= self.config.rates - 1:
            raise CodecError(f"lrd payload names rate {rate}, outside 0..{self.config.rates - 1}")
        return {"rate": rate}

    @property
    def config(self) -> LrdConfig:
        return self.net.cfg

    def symbol_prior(self) -> ChannelPrior:
        """The learned prior as integer tables, for the ``ans`` coder."""
        return self.prior

    def check_layout(self, shape, limits):
        if shape[2] != self.config.in_dim:
            raise CodecError(f"lrd decodes to {self.config.in_dim} channels, payload declares {shape[2]}")

    def quantise(self, y: np.ndarray) -> np.ndarray:
        """Continuous latent ``(..., D)`` -> symbols ``(..., D)`` (clamped to each channel's range)."""
        r = np.round(y.astype(np.float64) - self.tables["median"]) - self.tables["offset"]
        return np.clip(r, 0, self.tables["sizes"] - 1).astype(np.uint8)  # sizes <= 256

    def dequantise(self, symbols: np.ndarray) -> np.ndarray:
        """Symbols ``(..., D)`` -> latent values ``q = symbol + lo + median``, float32."""
        return (symbols.astype(np.float32) + self.tables["offset"] + self.tables["median"]).astype(np.float32)

    def latent(self, x: np.ndarray) -> np.ndarray:
        """Encoder output ``(N, T_lat, D)`` float32 for activations ``x`` ``(N, T, in_dim)``."""
        if x.shape[-1] != self.config.in_dim:
            raise CodecError(f"lrd takes {self.config.in_dim} values per frame, got {x.shape[-1]}")
        if not np.isfinite(x).all():
            raise CodecError("lrd: activation contains NaN or infinity")
        with torch.inference_mode():
            return self.net.encode(torch.from_numpy(np.ascontiguousarray(x, np.float32)), self.rate).numpy()

    def forward(self, x: np.ndarray) -> Symbols:
        params = {"rate": self.rate} if self.config.rates > 1 else {}
        return Symbols(self.quantise(self.latent(x)), int(self.prior.sizes.max()), params)

    def inverse(self, symbols, params, shape):
        sym = np.asarray(symbols)
        if sym.size and (sym.astype(np.int64) >= self.prior.sizes).any():
            raise CodecError("lrd: symbol outside its channel's range")
        rate = params.get("rate", 0.0)
        with torch.inference_mode():
            return self.net.decode(torch.from_numpy(self.dequantise(sym)), shape[1], rate).numpy()

    def symbol_layout(self, params, shape):
        n, t_lat = shape[0], self.net.latent_frames(shape[1])
        return (n, t_lat, self.config.latent_dim), int(self.prior.sizes.max())
