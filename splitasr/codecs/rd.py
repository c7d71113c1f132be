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

A hyperprior (``hyper_classes = K >= 2``; Balle et al. 2018's scale hyperprior, made
discrete): a tiny device MLP reads each latent frame and picks its class
``k = round((K-1) sigmoid(a))``, sent first as side information under a learned
factorised prior of its own; each latent value is then coded as ``round(y - mu[k, c])``
under a discretised Gaussian with mean ``mu[k, c]`` and spread ``sigma[k, c]``, both
from a cloud-side MLP of ``k`` (:class:`~splitasr.codecs.entropy.ConditionalPrior`).
A quiet frame and a loud one get different tables; the side information costs at most
``log2 K`` bits a frame. Because ``k`` is an integer, the tables for every ``k`` are
computed once at export and stored, and the decoder picks them from the class it read:
no float has to come out the same on two machines.

The PyTorch parts (:class:`~splitasr.codecs.rd_net.LrdNet`, the prior, the table export)
live in :mod:`splitasr.codecs.rd_net`; this module needs no torch until a network runs.
"""

from __future__ import annotations

import copy
import math
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from splitasr.codecs.base import (
    CodecError,
    ParamReader,
    ParamWriter,
    Symbols,
    Transform,
    register_transform,
)
from splitasr.codecs.entropy import ChannelPrior, ConditionalPrior

if TYPE_CHECKING:
    from splitasr.codecs.rd_net import LrdNet

TAIL = 1e-6  # probability mass left beyond each end of a channel's symbol range
LIKELIHOOD_FLOOR = 1e-9


@dataclass
class LrdConfig:
    """Shape of an ``lrd`` codec; saved in its state file.

    ``point``: the split point it reads and decodes to; ``in_dim`` the values per frame
    there; ``latent_dim`` latent channels every ``stride`` frames; ``enc_hidden`` the
    device encoder's one hidden width (keep it small: it runs on the device);
    ``hidden`` the cloud decoder's width and ``dec_blocks`` its residual blocks (the cloud
    is free to be large).
    """

    point: str = "stem"
    in_dim: int = 384
    latent_dim: int = 32
    stride: int = 2
    enc_hidden: int = 64
    hidden: int = 384
    rates: int = 1  # gain-vector pairs (1: one fixed rate, no gains)
    hyper_classes: int = 0  # frame classes of the hyperprior (0: the factorised prior alone)
    hyper_hidden: int = 16  # the device's class MLP's width (with hyper_classes)
    dec_blocks: int = 2  # residual blocks of the cloud decoder (2 or more)

    def __post_init__(self):
        if min(self.in_dim, self.latent_dim, self.stride, self.enc_hidden, self.hidden, self.rates) < 1:
            raise CodecError("lrd config: every size must be >= 1")
        if self.rates > 64:
            raise CodecError("lrd config: at most 64 rates")
        if self.hyper_classes == 1 or not 0 <= self.hyper_classes <= 64 or self.hyper_hidden < 1:
            raise CodecError("lrd config: hyper_classes is 0 (none) or 2..64, hyper_hidden >= 1")
        if not 2 <= self.dec_blocks <= 16:
            raise CodecError("lrd config: dec_blocks is 2..16")

    def latent_frames(self, t_in: int) -> int:
        """Latent frames for ``t_in`` input frames: ``ceil(t_in / stride)``."""
        return math.ceil(t_in / self.stride)


HYPER_TABLES = ("mean", "half", "freqs", "class_freqs", "w1", "b1", "w2", "b2")


def lrd_tables_from_state(state: dict) -> tuple[LrdConfig, dict[str, np.ndarray]]:
    """``(config, prior tables)`` of a saved state, checked (torch-free). With a hyperprior
    the tables are ``mean`` ``(K, D)``, ``half`` ``(D,)``, ``freqs`` ``(K, D, L)``,
    ``class_freqs`` ``(K,)`` and the class MLP (``w1`` ``(H, D)``, ``b1``, ``w2`` ``(1, H)``,
    ``b2``); else ``median``, ``offset``, ``sizes`` ``(D,)`` and ``freqs`` ``(D, L)``."""
    try:
        cfg = LrdConfig(**state["config"])
    except (KeyError, TypeError, CodecError) as exc:
        raise CodecError(f"lrd state has no valid config ({exc})") from None
    prefix, names = (
        ("hyper.", HYPER_TABLES) if cfg.hyper_classes else ("prior.", ("median", "offset", "sizes", "freqs"))
    )
    try:
        tables = {k: np.asarray(state[f"{prefix}{k}"]) for k in names}
    except KeyError as exc:
        raise CodecError(f"lrd state has no prior table {exc}") from None
    k, d, h = cfg.hyper_classes, cfg.latent_dim, cfg.hyper_hidden
    want = (
        {
            "mean": (k, d),
            "half": (d,),
            "class_freqs": (k,),
            "w1": (h, d),
            "b1": (h,),
            "w2": (1, h),
            "b2": (1,),
        }
        if k
        else {n: (d,) for n in ("median", "offset", "sizes")}
    )
    if any(tables[n].shape != shape for n, shape in want.items()) or tables["freqs"].shape[
        : 2 if k else 1
    ] != ((k, d) if k else (d,)):
        raise CodecError("lrd state: prior tables do not match the config")
    return cfg, tables


# An encoder run elsewhere (ONNX Runtime): activations (N, T, in_dim) float32 -> the latent
# (N, ceil(T / stride), latent_dim) before the rate's gain.
DeviceEncoder = Callable[[np.ndarray], np.ndarray]


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
        self._config, self.tables = lrd_tables_from_state(self.state)
        self._net: LrdNet | None = None
        self._net_lock = threading.Lock()
        self.encoder: DeviceEncoder | None = None
        t = self.tables
        if self.config.hyper_classes:
            sizes = 2 * t["half"].astype(np.int64) + 1
            self.prior = ConditionalPrior(
                t["class_freqs"].astype(np.int64), t["freqs"].astype(np.int64), sizes
            )
        else:
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

    def device_parameters(self) -> int:
        """Weights the device's encoder holds (its gains included; see :meth:`latent`)."""
        return self.net.encoder_parameters()

    @property
    def config(self) -> LrdConfig:
        return self._config

    @property
    def net(self) -> LrdNet:
        """The PyTorch network, built from the state on first use (thread-safe)."""
        with self._net_lock:
            if self._net is None:
                from splitasr.codecs.rd_net import lrd_net_from_state

                self._net = lrd_net_from_state(self.state)
            return self._net

    def with_encoder(self, encoder: DeviceEncoder) -> Lrd:
        """This transform with its device encoder (before the gain) run by ``encoder``
        (e.g. an ONNX Runtime session); the gain of :attr:`rate` is applied here."""
        other = copy.copy(self)
        other.encoder = encoder
        return other

    def gain(self) -> np.ndarray:
        """The encoder's gain ``(latent_dim,)`` float32 at :attr:`rate` (ones with one rate),
        from the state's log-gains as :meth:`LrdNet.gains` computes it."""
        cfg = self.config
        if cfg.rates == 1:
            return np.ones(cfg.latent_dim, np.float32)
        logs = np.asarray(self.state["w.log_gain"], np.float32)
        i = min(int(math.floor(self.rate)), cfg.rates - 2)
        a = np.float32(self.rate - i)
        return np.exp((np.float32(1) - a) * logs[i] + a * logs[i + 1]).astype(np.float32)

    def symbol_prior(self) -> ChannelPrior | ConditionalPrior:
        """The learned prior as integer tables, for the ``ans`` coder."""
        return self.prior

    @property
    def alphabet(self) -> int:
        """Symbol values are below this (with a hyperprior the class column's too)."""
        return max(int(self.prior.sizes.max()), self.config.hyper_classes)

    @property
    def symbol_channels(self) -> int:
        """Symbols per latent frame: the channels, and the class with a hyperprior."""
        return self.config.latent_dim + (1 if self.config.hyper_classes else 0)

    def frame_classes(self, y: np.ndarray) -> np.ndarray:
        """The hyperprior's class of each latent frame ``y`` ``(..., D)`` -> ``(...)`` int64
        in ``0 .. K-1``: ``round((K-1) sigmoid(w2 relu(w1 y + b1) + b2))``. Run on the
        device only; the decoder reads the classes from the payload."""
        t, k = self.tables, self.config.hyper_classes
        h = np.maximum(y.astype(np.float64) @ t["w1"].T.astype(np.float64) + t["b1"], 0.0)
        a = (h @ t["w2"].T.astype(np.float64) + t["b2"])[..., 0]
        a = np.clip(a, -60.0, 60.0)  # no overflow in exp; the sigmoid rounds to 0 or 1 there anyway
        return np.clip(np.round((k - 1) / (1.0 + np.exp(-a))), 0, k - 1).astype(np.int64)

    def check_layout(self, shape, limits):
        if shape[2] != self.config.in_dim:
            raise CodecError(f"lrd decodes to {self.config.in_dim} channels, payload declares {shape[2]}")

    def quantise(self, y: np.ndarray) -> np.ndarray:
        """Continuous latent ``(..., D)`` -> symbols ``(..., D)`` (clamped to each channel's
        range); with a hyperprior ``(..., D + 1)``, the frame's class last and each value
        as ``round(y - mean[class]) + half``."""
        t = self.tables
        if not np.isfinite(y).all():  # a device encoder's overflow: no class, no symbol for it
            raise CodecError("lrd: the latent holds NaN or infinity")
        if not self.config.hyper_classes:
            r = np.round(y.astype(np.float64) - t["median"]) - t["offset"]
            return np.clip(r, 0, t["sizes"] - 1).astype(np.uint8)  # sizes <= 256
        cls = self.frame_classes(y)
        r = np.round(y.astype(np.float64) - t["mean"][cls]) + t["half"]
        r = np.clip(r, 0, 2 * t["half"].astype(np.int64))
        return np.concatenate([r, cls[..., None]], axis=-1).astype(np.uint8)  # 2 half + 1 <= 255

    def dequantise(self, symbols: np.ndarray) -> np.ndarray:
        """Symbols ``(..., D)`` (``(..., D + 1)`` with a hyperprior) -> latent values
        ``q = symbol + lo + median`` (``symbol - half + mean[class]``), float32."""
        t = self.tables
        if not self.config.hyper_classes:
            return (symbols.astype(np.float32) + t["offset"] + t["median"]).astype(np.float32)
        cls = symbols[..., -1].astype(np.int64)
        y = symbols[..., :-1].astype(np.float32) - t["half"].astype(np.float32)
        return (y + t["mean"][cls]).astype(np.float32)

    def latent(self, x: np.ndarray) -> np.ndarray:
        """Encoder output ``(N, T_lat, D)`` float32 for activations ``x`` ``(N, T, in_dim)``."""
        if x.shape[-1] != self.config.in_dim:
            raise CodecError(f"lrd takes {self.config.in_dim} values per frame, got {x.shape[-1]}")
        if not np.isfinite(x).all():
            raise CodecError("lrd: activation contains NaN or infinity")
        if self.encoder is not None:
            y = np.asarray(self.encoder(np.ascontiguousarray(x, np.float32)), np.float32)
            return y * self.gain() if self.config.rates > 1 else y
        import torch

        with torch.inference_mode():
            return self.net.encode(torch.from_numpy(np.ascontiguousarray(x, np.float32)), self.rate).numpy()

    def forward(self, x: np.ndarray) -> Symbols:
        params = {"rate": self.rate} if self.config.rates > 1 else {}
        return Symbols(self.quantise(self.latent(x)), self.alphabet, params)

    def inverse(self, symbols, params, shape):
        sym = np.asarray(symbols)
        d = self.config.latent_dim
        if sym.size and (sym[..., :d].astype(np.int64) >= self.prior.sizes).any():
            raise CodecError("lrd: symbol outside its channel's range")
        if sym.size and self.config.hyper_classes and (sym[..., d:] >= self.config.hyper_classes).any():
            raise CodecError("lrd: frame class outside the hyperprior's range")
        rate = params.get("rate", 0.0)
        import torch

        with torch.inference_mode():
            return self.net.decode(torch.from_numpy(self.dequantise(sym)), shape[1], rate).numpy()

    def symbol_layout(self, params, shape):
        n, t_lat = shape[0], self.config.latent_frames(shape[1])
        return (n, t_lat, self.symbol_channels), self.alphabet


_NET_NAMES = ("FactorizedPrior", "LrdNet", "lrd_to_state", "lrd_from_state", "prior_tables")


def __getattr__(name: str):
    """The torch parts by their old names (``from splitasr.codecs.rd import LrdNet``),
    imported from :mod:`.rd_net` only when asked for."""
    if name in _NET_NAMES:
        from splitasr.codecs import rd_net

        return getattr(rd_net, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
