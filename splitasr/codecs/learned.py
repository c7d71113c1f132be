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
passes gradients straight through the rounding. The networks themselves live in
:mod:`splitasr.codecs.learned_net` (PyTorch), built on first use; importing this module
needs no torch, and an edge may run the device part elsewhere (:meth:`Learned.with_encoder`,
ONNX Runtime in :mod:`splitasr.onnx.edge`). A payload names the state (weights and
config) it was made with by the codec's state hash (:mod:`splitasr.codecs.base`), so a
decoder with other weights refuses it; a payload declaring another width than the
decoder's ``out_dim`` is refused before the network runs.
"""

from __future__ import annotations

import copy
import math
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from splitasr.codecs.base import CodecError, Symbols, Transform, register_transform

if TYPE_CHECKING:
    import torch

    from splitasr.codecs.learned_net import LearnedCodecNet

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

    def latent_frames(self, t_in: int) -> int:
        """Latent frames for ``t_in`` encoder input frames: ``ceil(t_in / stride)``."""
        return math.ceil(t_in / self.stride)

    def out_frames(self, t_in: int) -> int:
        """Decoded frames for ``t_in`` input frames (``bnf`` keeps the latent's rate)."""
        return self.latent_frames(t_in) if self.kind == "bnf" else t_in


def config_from_state(state: dict, name: str) -> LearnedCodecConfig:
    """The :class:`LearnedCodecConfig` saved in a state; CodecError when it is missing or bad."""
    try:
        return LearnedCodecConfig(**state["config"])
    except (KeyError, TypeError) as exc:
        raise CodecError(f"{name} state has no valid config ({exc})") from None


# An encoder run elsewhere (ONNX Runtime): the transform's input (N, T, C) float32 (the
# waveform (N, S, 1) for bnf) -> continuous latent (N, T_lat, latent_dim) in [0, levels-1].
DeviceEncoder = Callable[[np.ndarray], np.ndarray]


class Learned(Transform):
    """A trained learned codec as a transform; see the module docstring.

    The state's config is read at construction (torch-free); the PyTorch network
    (:attr:`net`) is built the first time one runs. :meth:`with_encoder` gives a copy
    whose device part (:meth:`latent`) runs another implementation of the same encoder.
    """

    kind = ""

    def __init__(self, state: dict | None = None):
        super().__init__(state)
        if not self.state:
            raise CodecError(
                f"codec {self.name!r} is learned and has no trained state here: "
                f"train it with `splitasr train-codec --kind {self.kind}`"
            )
        self._config = config_from_state(self.state, self.name)
        if self._config.kind != self.kind:
            raise CodecError(f"state for {self.name!r} holds a {self._config.kind!r} codec")
        self._net: LearnedCodecNet | None = None
        self._net_lock = threading.Lock()
        self.encoder: DeviceEncoder | None = None

    @property
    def net(self) -> LearnedCodecNet:
        """The PyTorch encoder + decoder, built from the state on first use (thread-safe)."""
        with self._net_lock:
            if self._net is None:
                from splitasr.codecs.learned_net import net_from_state

                self._net = net_from_state(self.state, self.name)
            return self._net

    def with_encoder(self, encoder: DeviceEncoder) -> Learned:
        """This transform with its device part run by ``encoder`` (same weights, e.g. an
        ONNX Runtime session); decoding, the state and its hash are shared."""
        other = copy.copy(self)
        other.encoder = encoder
        return other

    @property
    def config(self) -> LearnedCodecConfig:
        return self._config

    def device_parameters(self) -> int:
        """Weights the device's encoder holds (see :meth:`latent`)."""
        return self.net.encoder_parameters()

    @property
    def decodes_to(self) -> str:
        """The split point whose activation :meth:`inverse` returns."""
        return self.config.decodes_to

    def check_input(self, x: np.ndarray) -> None:
        """Refuse an input ``x`` ``(N, T, C)`` float32 at ``point`` the encoder cannot take."""
        if not np.isfinite(x).all():
            raise CodecError(f"{self.name}: activation contains NaN or infinity")
        if x.shape[-1] != self.config.in_dim:
            raise CodecError(f"{self.name} takes {self.config.in_dim} values per frame, got {x.shape[-1]}")

    def _input_frames(self, x: np.ndarray) -> torch.Tensor:
        """``x`` ``(N, T, C)`` float32 at ``point`` -> encoder input ``(N, T_in, in_dim)``."""
        import torch

        return torch.from_numpy(np.ascontiguousarray(x, np.float32))

    def latent(self, x: np.ndarray) -> np.ndarray:
        """The device part: continuous latent ``(N, T_lat, latent_dim)`` float32 in
        ``[0, levels - 1]`` of the transform's input ``x``."""
        self.check_input(x)
        if self.encoder is not None:
            return np.asarray(self.encoder(np.ascontiguousarray(x, np.float32)), np.float32)
        import torch

        with torch.inference_mode():
            return self.net.encode(self._input_frames(x)).numpy()

    def output_layout(self, shape: tuple[int, ...], lens: tuple[int, ...]):
        """Decoded ``(shape, lens)`` for an input of ``shape`` with valid ``lens``."""
        n, t = shape[0], shape[1]
        cfg = self.config
        return (n, cfg.out_frames(t), cfg.out_dim), tuple(cfg.out_frames(v) for v in lens)

    def forward(self, x: np.ndarray) -> Symbols:
        codes = np.clip(np.round(self.latent(x)), 0, self.config.levels - 1).astype(np.uint8)
        return Symbols(codes, self.config.levels)

    def check_layout(self, shape, limits):
        if shape[2] != self.config.out_dim:
            raise CodecError(
                f"{self.name} decodes to {self.config.out_dim} channels, payload declares {shape[2]}"
            )

    def inverse(self, symbols, params, shape):
        import torch

        codes = np.asarray(symbols)
        if codes.size and codes.max() >= self.config.levels:
            raise CodecError(f"{self.name}: code out of range")
        q = torch.from_numpy(codes.astype(np.float32))
        with torch.inference_mode():
            y = self.net.decode(q, shape[1])
        return y.numpy()

    def symbol_layout(self, params, shape):
        n, t = shape[0], shape[1]
        t_lat = t if self.config.kind == "bnf" else self.config.latent_frames(t)
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

    def check_input(self, x: np.ndarray) -> None:
        if x.ndim != 3 or x.shape[2] != 1:
            raise CodecError(f"bnf takes waveforms of shape (N, S, 1), got {x.shape}")
        if not np.isfinite(x).all():
            raise CodecError("bnf: waveform contains NaN or infinity")

    def _input_frames(self, x: np.ndarray) -> torch.Tensor:
        import torch

        from splitasr.audio import qm_features
        from splitasr.codecs.learned_net import qm_input

        return qm_input(qm_features(torch.from_numpy(np.ascontiguousarray(x[:, :, 0], np.float32))))

    def output_layout(self, shape, lens):
        from splitasr.audio import num_frames

        t = self.config.out_frames(int(num_frames(shape[1])))
        return (shape[0], t, self.config.out_dim), tuple(
            self.config.out_frames(int(num_frames(v))) for v in lens
        )


_NET_NAMES = ("LearnedCodecNet", "net_to_state", "net_from_state", "ste_round", "qm_input")


def __getattr__(name: str):
    """The torch parts by their old names (``from splitasr.codecs.learned import
    LearnedCodecNet``), imported from :mod:`.learned_net` only when asked for."""
    if name in _NET_NAMES:
        from splitasr.codecs import learned_net

        return getattr(learned_net, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
