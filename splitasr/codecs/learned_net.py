"""The PyTorch networks of the learned codecs (:mod:`splitasr.codecs.learned`).

Kept apart from the transforms so that ``import splitasr.codecs`` needs no torch: a
transform builds its network from its state the first time it runs one
(:attr:`splitasr.codecs.learned.Learned.net`), and an edge running the device part on
ONNX Runtime (:mod:`splitasr.onnx.edge`) never does. Training and export import this
module directly.
"""

from __future__ import annotations

from dataclasses import asdict

import numpy as np
import torch
from torch import nn

from splitasr.codecs.base import CodecError
from splitasr.codecs.learned import LearnedCodecConfig, config_from_state


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
        return self.cfg.latent_frames(t_in)

    def out_frames(self, t_in: int) -> int:
        return self.cfg.out_frames(t_in)

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

    def encoder_parameters(self) -> int:
        """Parameters that run on the device (the input normalisation included): everything
        but the cloud's ``up`` and ``dec``."""
        named = [*self.named_parameters(), *self.named_buffers()]
        cloud = ("up", "dec")
        return sum(v.numel() for k, v in named if k.split(".")[0] not in cloud and v.is_floating_point())

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
    """The network of a saved state in eval mode; CodecError when the weights do not fit
    the config."""
    net = LearnedCodecNet(config_from_state(state, name))
    weights = {k[2:]: torch.from_numpy(np.asarray(v)) for k, v in state.items() if k.startswith("w.")}
    try:
        missing, unexpected = net.load_state_dict(weights, strict=False)
    except RuntimeError as exc:  # a weight of the wrong shape
        raise CodecError(f"{name} state does not match its config ({exc})") from None
    missing = [m for m in missing if not m.endswith("num_batches_tracked")]
    if missing or unexpected:
        raise CodecError(
            f"{name} state does not match its config (missing {missing[:3]}, unexpected {unexpected[:3]})"
        )
    return net.eval()


def qm_input(codes: torch.Tensor) -> torch.Tensor:
    """QM codes ``(N, T, 32)`` uint8 -> bnf encoder input in ``[0, 1]`` float32."""
    return codes.float() / 255.0
