"""Learned lossy codecs: a small network on the device, its partner in the cloud.

Three designs, each a :class:`~splitasr.codecs.base.Transform` whose symbols are the
quantised latent (``2**bits`` levels per value, entropy-coded by ``ans`` with a table
learned from training latents), trained by ``splitasr train-codec``
(:mod:`splitasr.training.codec_train`) and shipped as one safetensors state file:

* ``ae`` (paper 000): a symmetric autoencoder on each frame of the activation, two fully
  connected layers to encode and two to decode, trained on reconstruction MSE alone;
* ``deepcod`` (paper 002): a light encoder on the device (one strided 1-D convolution over
  time) and a heavier decoder in the cloud (transposed convolution, two residual
  convolution blocks), trained on reconstruction plus distillation of the frozen tail's
  CTC posteriors;
* ``bnf`` (paper 003): bottleneck features. The device computes QM-features (32 mel bins,
  8-bit) and one separable convolution layer (depthwise over time with stride, pointwise to
  a few channels, batch norm, ReLU) whose output is quantised. In the cloud an adapter
  (1-D convolutions with a 3-frame time kernel) stands in for the recogniser's first
  layers and feeds the rest of it. The codec starts at the ``audio`` point and decodes to
  a later one (``decodes_to``), so its decoder output is not the waveform.

Every latent is bounded by a sigmoid and quantised to integers ``0..2**bits-1``; training
passes gradients straight through the rounding. A payload names the state (weights and
config) it was made with by the codec's state hash (:mod:`splitasr.codecs.base`), so a
decoder with other weights refuses it; a payload declaring another width than the
decoder's ``out_dim`` is refused before the network runs.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import nn

from splitasr.codecs.base import CodecError, Symbols, Transform, register_transform

KINDS = ("ae", "deepcod", "bnf")


@dataclass
class LearnedCodecConfig:
    """Shape of a learned codec; saved in its state file.

    ``point`` is the split point the encoder reads (``audio`` for ``bnf``), ``decodes_to``
    the one whose activation the decoder returns; ``in_dim``/``out_dim`` are the values per
    frame there (``bnf`` reads 32 QM bins). ``stride`` is the time down-sampling of the
    latent relative to the decoder's output frames.
    """

    kind: str = "deepcod"
    point: str = "proj"
    decodes_to: str = "proj"
    in_dim: int = 256
    out_dim: int = 256
    latent_dim: int = 16
    bits: int = 4
    stride: int = 2
    hidden: int = 256

    def __post_init__(self):
        if self.kind not in KINDS:
            raise CodecError(f"unknown learned codec kind {self.kind!r}; choose from {', '.join(KINDS)}")
        if not 1 <= self.bits <= 8 or self.latent_dim < 1 or self.stride < 1:
            raise CodecError("learned codec needs 1..8 bits, latent_dim >= 1 and stride >= 1")
        if self.kind == "ae" and self.stride != 1:
            raise CodecError("the ae codec works frame by frame: stride must be 1")

    @property
    def levels(self) -> int:
        return 1 << self.bits


def ste_round(x: torch.Tensor) -> torch.Tensor:
    """Round in the forward pass, identity gradient in the backward pass."""
    return x + (torch.round(x) - x).detach()


class _ResConv(nn.Module):
    def __init__(self, ch: int, kernel: int = 5):
        super().__init__()
        self.conv1 = nn.Conv1d(ch, ch, kernel, padding=kernel // 2)
        self.conv2 = nn.Conv1d(ch, ch, kernel, padding=kernel // 2)

    def forward(self, x):
        return x + self.conv2(torch.relu(self.conv1(torch.relu(x))))


class LearnedCodecNet(nn.Module):
    """Encoder + decoder of one learned codec. Tensors are ``(N, T, C)`` throughout.

    * :meth:`encode`: input frames ``(N, T_in, in_dim)`` -> continuous latent
      ``(N, T_lat, latent_dim)`` in ``[0, levels - 1]``;
    * :meth:`decode`: integer-valued latent -> ``(N, T_out, out_dim)``, cut to ``T_out``.

    ``T_lat = ceil(T_in / stride)`` and, for ``bnf``, ``T_out = T_lat`` (the adapter keeps
    the latent's rate, which is the recogniser's rate after its own stride 2);
    ``T_out = T_in`` for the others.
    """

    def __init__(self, cfg: LearnedCodecConfig):
        super().__init__()
        self.cfg = cfg
        c, d, h, s = cfg.in_dim, cfg.latent_dim, cfg.hidden, cfg.stride
        self.register_buffer("in_mean", torch.zeros(c))
        self.register_buffer("in_std", torch.ones(c))
        if cfg.kind == "ae":
            self.enc = nn.Sequential(nn.Linear(c, h), nn.ReLU(), nn.Linear(h, d))
            self.dec = nn.Sequential(nn.Linear(d, h), nn.ReLU(), nn.Linear(h, cfg.out_dim))
        elif cfg.kind == "deepcod":
            self.enc = nn.Conv1d(c, d, kernel_size=2 * s, stride=s, padding=s // 2)
            self.up = nn.ConvTranspose1d(d, h, kernel_size=2 * s, stride=s, padding=s // 2)
            self.dec = nn.Sequential(_ResConv(h), _ResConv(h), nn.ReLU(), nn.Conv1d(h, cfg.out_dim, 1))
        else:  # bnf: separable conv on the device, 3-frame conv adapter in the cloud
            k = 2 * s
            self.depthwise = nn.Conv1d(c, c, kernel_size=k, stride=s, padding=(k - s) // 2, groups=c)
            self.pointwise = nn.Conv1d(c, d, kernel_size=1)
            self.bn = nn.BatchNorm1d(d)
            self.dec = nn.Sequential(
                nn.Conv1d(d, h, 3, padding=1),
                _ResConv(h, 3),
                _ResConv(h, 3),
                nn.ReLU(),
                nn.Conv1d(h, cfg.out_dim, 1),
            )

    def latent_frames(self, t_in: int) -> int:
        return math.ceil(t_in / self.cfg.stride)

    def out_frames(self, t_in: int) -> int:
        return self.latent_frames(t_in) if self.cfg.kind == "bnf" else t_in

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` ``(N, T_in, in_dim)`` -> latent ``(N, T_lat, latent_dim)`` in ``[0, L-1]``."""
        cfg = self.cfg
        x = (x - self.in_mean) / self.in_std
        t_lat = self.latent_frames(x.shape[1])
        if cfg.kind == "ae":
            z = self.enc(x)
        elif cfg.kind == "deepcod":
            z = self.enc(x.transpose(1, 2)).transpose(1, 2)
        else:
            z = self.pointwise(self.depthwise(x.transpose(1, 2)))
            # ReLU as in paper 003, then tanh as a soft clip onto the code range.
            z = torch.tanh(torch.relu(self.bn(z))).transpose(1, 2)
        z = z[:, :t_lat]
        if z.shape[1] < t_lat:
            z = nn.functional.pad(z, (0, 0, 0, t_lat - z.shape[1]))
        return (z if cfg.kind == "bnf" else torch.sigmoid(z)) * (cfg.levels - 1)

    def decode(self, q: torch.Tensor, t_out: int) -> torch.Tensor:
        """``q`` ``(N, T_lat, latent_dim)`` (integer-valued) -> ``(N, t_out, out_dim)``."""
        cfg = self.cfg
        u = q / (cfg.levels - 1) * 2 - 1
        if cfg.kind == "ae":
            y = self.dec(u)
        elif cfg.kind == "deepcod":
            y = self.dec(self.up(u.transpose(1, 2))).transpose(1, 2)
        else:
            y = self.dec(u.transpose(1, 2)).transpose(1, 2)
        y = y[:, :t_out]
        if y.shape[1] < t_out:
            y = nn.functional.pad(y, (0, 0, 0, t_out - y.shape[1]))
        return y

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Training pass: ``(reconstruction (N, T_out, out_dim), latent (N, T_lat, D))``."""
        z = self.encode(x)
        q = ste_round(z)
        return self.decode(q, self.out_frames(x.shape[1])), q


# ------------------------------------------------------------------ state files


def net_to_state(net: LearnedCodecNet, extra: dict | None = None, dtype: str = "float32") -> dict:
    """Arrays + JSON-able config, for :func:`splitasr.codecs.state.save_state`.

    ``dtype="float16"`` halves the file (the network still runs in float32, from the
    rounded weights; the codec's state hash is taken over those)."""
    if dtype not in ("float32", "float16"):
        raise CodecError(f"learned codec weights are stored as float32 or float16, not {dtype!r}")
    arrays = {f"w.{k}": v.detach().cpu().float().numpy().astype(dtype) for k, v in net.state_dict().items()}
    arrays = {k: v for k, v in arrays.items() if not k.endswith("num_batches_tracked")}
    return {**arrays, "config": asdict(net.cfg), **(extra or {})}


def net_from_state(state: dict, name: str) -> LearnedCodecNet:
    try:
        cfg = LearnedCodecConfig(**state["config"])
    except (KeyError, TypeError) as exc:
        raise CodecError(f"{name} state has no valid config ({exc})") from None
    net = LearnedCodecNet(cfg)
    weights = {k[2:]: torch.from_numpy(np.asarray(v)) for k, v in state.items() if k.startswith("w.")}
    missing, unexpected = net.load_state_dict(weights, strict=False)
    missing = [m for m in missing if not m.endswith("num_batches_tracked")]
    if missing or unexpected:
        raise CodecError(
            f"{name} state does not match its config (missing {missing[:3]}, unexpected {unexpected[:3]})"
        )
    return net.eval()


class Learned(Transform):
    """A trained :class:`LearnedCodecNet` as a transform; see the module docstring."""

    kind = ""

    def __init__(self, state: dict | None = None):
        super().__init__(state)
        if not self.state:
            raise CodecError(
                f"codec {self.name!r} is learned and has no trained state here: "
                f"train it with `splitasr train-codec --kind {self.kind}`"
            )
        self.net = net_from_state(self.state, self.name)
        if self.net.cfg.kind != self.kind:
            raise CodecError(f"state for {self.name!r} holds a {self.net.cfg.kind!r} codec")

    @property
    def config(self) -> LearnedCodecConfig:
        return self.net.cfg

    @property
    def decodes_to(self) -> str:
        """The split point whose activation :meth:`inverse` returns."""
        return self.config.decodes_to

    def _input_frames(self, x: np.ndarray) -> torch.Tensor:
        """``x`` ``(N, T, C)`` float32 at ``point`` -> encoder input ``(N, T_in, in_dim)``."""
        if not np.isfinite(x).all():
            raise CodecError(f"{self.name}: activation contains NaN or infinity")
        if x.shape[-1] != self.config.in_dim:
            raise CodecError(f"{self.name} takes {self.config.in_dim} values per frame, got {x.shape[-1]}")
        return torch.from_numpy(np.ascontiguousarray(x, np.float32))

    def output_layout(self, shape: tuple[int, ...], lens: tuple[int, ...]):
        """Decoded ``(shape, lens)`` for an input of ``shape`` with valid ``lens``."""
        n, t = shape[0], shape[1]
        return (n, self.net.out_frames(t), self.config.out_dim), tuple(self.net.out_frames(v) for v in lens)

    def forward(self, x: np.ndarray) -> Symbols:
        inp = self._input_frames(x)
        with torch.inference_mode():
            codes = torch.round(self.net.encode(inp)).to(torch.uint8).numpy()
        return Symbols(codes, self.config.levels)

    def check_layout(self, shape, limits):
        if shape[2] != self.config.out_dim:
            raise CodecError(
                f"{self.name} decodes to {self.config.out_dim} channels, payload declares {shape[2]}"
            )

    def inverse(self, symbols, params, shape):
        codes = np.asarray(symbols)
        if codes.size and codes.max() >= self.config.levels:
            raise CodecError(f"{self.name}: code out of range")
        q = torch.from_numpy(codes.astype(np.float32))
        with torch.inference_mode():
            y = self.net.decode(q, shape[1])
        return y.numpy()

    def symbol_layout(self, params, shape):
        n, t = shape[0], shape[1]
        t_lat = t if self.config.kind == "bnf" else self.net.latent_frames(t)
        return (n, t_lat, self.config.latent_dim), self.config.levels


@register_transform("ae", id=24)
class Autoencoder(Learned):
    kind = "ae"


@register_transform("deepcod", id=25)
class DeepCOD(Learned):
    kind = "deepcod"


@register_transform("bnf", id=26)
class BottleneckFeatures(Learned):
    """Reads the waveform ``(N, S, 1)`` at the ``audio`` point; QM-features on the device."""

    kind = "bnf"

    def _input_frames(self, x: np.ndarray) -> torch.Tensor:
        from splitasr.audio import qm_features

        if x.ndim != 3 or x.shape[2] != 1:
            raise CodecError(f"bnf takes waveforms of shape (N, S, 1), got {x.shape}")
        if not np.isfinite(x).all():
            raise CodecError("bnf: waveform contains NaN or infinity")
        return qm_input(qm_features(torch.from_numpy(np.ascontiguousarray(x[:, :, 0], np.float32))))

    def output_layout(self, shape, lens):
        from splitasr.audio import num_frames

        t = self.net.out_frames(int(num_frames(shape[1])))
        return (shape[0], t, self.config.out_dim), tuple(
            self.net.out_frames(int(num_frames(v))) for v in lens
        )


def qm_input(codes: torch.Tensor) -> torch.Tensor:
    """QM codes ``(N, T, 32)`` uint8 -> bnf encoder input in ``[0, 1]`` float32."""
    return codes.float() / 255.0
