"""Split-able models: an ordered list of named stages.

A :class:`SplitModel` is the full recogniser as a pipeline ``audio -> stage_1 -> ... ->
stage_K -> logits``. Every boundary is a *split point*, named after the stage it follows
(``audio`` is the point before the first stage, which is always the feature front end, so
``features`` is the next point). ``head(x, x_lens, point)`` runs the stages up to and
including ``point`` on the device; ``tail(h, h_lens, point)`` runs the rest in the cloud.

One tensor convention at every point: what crosses a split point is ``(N, T, C)`` with
valid lengths ``(N,)``; at ``audio`` it is the waveform as ``(N, S, 1)``. ``head`` takes
the waveform as ``(N, S)`` (or ``(N, S, 1)``).
Because both walk the same modules in the same order, ``tail(*head(x, p), p)`` equals the
full model's output bit for bit in eval mode, at every point.

Nothing here knows which architecture it holds: planners, codecs and transport use only
``split_points``, ``point_info`` and ``head``/``tail``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

AUDIO = "audio"


class Stage(nn.Module):
    """One step of the pipeline: ``(x, x_lens) -> (y, y_lens)``.

    Subclasses set ``out_dim`` (values per frame of the output) and ``out_rate`` (output
    frames per second of audio).
    """

    out_dim: int = 0
    out_rate: float = 0.0  # output frames per second of audio

    def forward(self, x: torch.Tensor, x_lens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError


@dataclass(frozen=True)
class SplitPointInfo:
    """What crosses the wire at a split point."""

    name: str
    index: int  # number of stages run on the device
    dim: int  # values per frame (1 for audio samples)
    frames_per_second: float
    params_head: int  # parameters the device needs

    @property
    def floats_per_second(self) -> float:
        return self.dim * self.frames_per_second

    @property
    def raw_kbps(self) -> float:
        """Raw float32 bit rate in kbit per second of audio (16-bit PCM at ``audio``)."""
        bits = 16 if self.name == AUDIO else 32
        return self.floats_per_second * bits / 1000.0


class SplitModel(nn.Module):
    """An ordered pipeline of named :class:`Stage` modules, the first being the front end.

    Subclasses also say how their output becomes text (:meth:`make_decoder`), so callers
    never need to know which architecture they hold.
    """

    name: str = "model"
    default_beam: int = 1  # beam width of make_decoder(); 1 is greedy
    # What the last stage emits: "logits" (per-frame class scores, CTC-decodable) or
    # "encoder" (features a separate decoder attends to). Learned codecs distil on it.
    output_kind: str = "logits"

    def __init__(self, stages: list[tuple[str, Stage]], sample_rate: int):
        super().__init__()
        names = [name for name, _ in stages]
        if AUDIO in names or len(set(names)) != len(names):
            raise ValueError(f"stage names must be unique and not {AUDIO!r}: {names}")
        self.stages = nn.ModuleDict(stages)
        self.sample_rate = sample_rate

    @property
    def split_points(self) -> list[str]:
        """Names of every split point, device-first: ``["audio", "features", ...]``."""
        return [AUDIO, *self.stages.keys()]

    def _index(self, point: str) -> int:
        points = self.split_points
        if point not in points:
            raise ValueError(f"unknown split point {point!r}; choose from {', '.join(points)}")
        return points.index(point)

    def point_info(self) -> list[SplitPointInfo]:
        """Size and cost of what crosses the wire at each split point."""
        infos = [SplitPointInfo(AUDIO, 0, 1, float(self.sample_rate), 0)]
        params = 0
        for i, (name, stage) in enumerate(self.stages.items(), start=1):
            params += sum(p.numel() for p in stage.parameters())
            infos.append(SplitPointInfo(name, i, stage.out_dim, stage.out_rate, params))
        return infos

    def codec_home(self, point: str) -> str:
        """The model whose codec state folder serves ``point`` (this model's own, unless a
        model shares its first stages with another: see Whisper's dyn model)."""
        return self.name

    def max_frames(self, point: str, seconds: float) -> int:
        """Most frames the activation at ``point`` can have for ``seconds`` of audio: what
        a decoder may allocate for a payload made there (samples at ``audio``)."""
        rate = {p.name: p.frames_per_second for p in self.point_info()}[self.split_points[self._index(point)]]
        return math.ceil(seconds * rate) + 1

    def _run(self, x, x_lens, start: int, stop: int):
        for stage in list(self.stages.values())[start:stop]:
            x, x_lens = stage(x, x_lens)
        return x, x_lens

    @staticmethod
    def _wave(x: torch.Tensor, x_lens: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """A waveform ``(N, S)`` or ``(N, S, 1)`` as ``(N, S)`` with lengths ``(N,)``."""
        if x.dim() == 3:
            if x.shape[2] != 1:
                raise ValueError(f"a waveform is (N, S) or (N, S, 1), got {tuple(x.shape)}")
            x = x[..., 0]
        if x.dim() != 2:
            raise ValueError(f"a waveform is (N, S) or (N, S, 1), got {tuple(x.shape)}")
        if x_lens is None:
            x_lens = torch.full((x.shape[0],), x.shape[1], dtype=torch.long)
        return x, x_lens

    def head(
        self, x: torch.Tensor, x_lens: torch.Tensor | None, point: str
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Run the device part.

        Args:
            x: waveform ``(N, S)`` (or ``(N, S, 1)``) float32 at ``sample_rate``.
            x_lens: ``(N,)`` valid samples per item (``None``: all of ``S``).
            point: split point name.

        Returns:
            ``(h, h_lens)``: the activation at ``point``, ``(N, T, C)`` (``(N, S, 1)`` at
            ``audio``), and its valid lengths ``(N,)``.
        """
        x, x_lens = self._wave(x, x_lens)
        if point == AUDIO:
            return x.unsqueeze(-1), x_lens
        return self._run(x, x_lens, 0, self._index(point))

    def tail(self, h: torch.Tensor, h_lens: torch.Tensor, point: str) -> tuple[torch.Tensor, torch.Tensor]:
        """Run the cloud part from the activation ``h (N, T, C)`` at ``point`` (``(N, S, 1)``
        at ``audio``) with valid lengths ``h_lens (N,)``.

        Returns:
            ``(out, out_lens)``: the last stage's output ``(N, T', V)`` (class scores, or
            encoder features for a model with a separate text decoder) and ``(N,)`` lengths.
        """
        start = self._index(point)
        if point == AUDIO:
            h, h_lens = self._wave(h, h_lens)
        return self._run(h, h_lens, start, len(self.stages))

    def distilling(self) -> SplitModel:
        """The model a learned codec trains through (``splitasr train-codec``).

        The student's gradient flows through the tail at every step, so a model may return
        a cheaper equivalent that shares its weights: Whisper computes only the frames that
        hold audio. Most models return themselves.
        """
        return self

    def make_decoder(self, beam: int | None = None, lm: str | Path | bool = True):
        """A :class:`splitasr.decoding.Decoder` for this model's output.

        Args:
            beam: beam width; ``None`` is the model's own convention (:attr:`default_beam`),
                0 or 1 means greedy.
            lm: for models that use one, True for the shipped language model, False for
                none, or a path to another.
        """
        raise NotImplementedError

    def forward(
        self, x: torch.Tensor, x_lens: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The whole model: waveform ``(N, S)`` -> ``(out (N, T, V), out_lens (N,))``."""
        x, x_lens = self._wave(x, x_lens)
        return self._run(x, x_lens, 0, len(self.stages))


def length_mask(lens: torch.Tensor, max_len: int) -> torch.Tensor:
    """Boolean ``(N, max_len)`` mask, True on valid frames."""
    return torch.arange(max_len, device=lens.device)[None, :] < lens[:, None]
