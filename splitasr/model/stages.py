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
    # How far in time an output frame sees, for the streaming head: ``(stride, radius)``,
    # output frame ``j`` depends only on input frames ``stride * j - radius ..
    # stride * j + radius`` (for the front end, input frames are samples). None: it sees
    # the whole utterance (a recurrent layer, self-attention), so the stage cannot stream.
    stream_field: tuple[int, int] | None = None

    def forward(self, x: torch.Tensor, x_lens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError


@dataclass(frozen=True)
class StreamGeometry:
    """Where the frames at a streamable point come from: frame ``k`` depends only on the
    samples ``hop * k - context .. hop * k + context - 1`` (zeros outside the utterance)."""

    hop: int  # samples per frame
    context: int  # samples each side of a frame's centre that it depends on

    def final_frames(self, samples: int) -> int:
        """Frames that no later sample can change once ``samples`` have arrived."""
        return 0 if samples < self.context else (samples - self.context) // self.hop + 1

    def align(self, sample: int) -> int:
        """The latest frame boundary at or before ``sample`` (at least 0): where a window
        of audio may start so that its frames fall on the utterance's frame grid."""
        return max(sample, 0) // self.hop * self.hop


class HeadStream:
    """The head to a streamable point run on audio that arrives in pieces.

    Each :meth:`push` appends samples and returns the frames that are now final: the head
    runs on a window of the audio that starts ``context`` samples before the first new
    frame (aligned to the frame grid) and ends at the last sample received, and only the
    frames whose whole receptive field lies inside the window are kept; the rest wait for
    more audio, or for :meth:`finish`, where the window ends at the utterance's real end.
    Every frame is thus computed from exactly the samples the whole-utterance head gives
    it, by the same operations, so the concatenated outputs equal ``model.head(wave)`` bit
    for bit (``tests/test_streaming.py`` checks it for every streamable point of both
    models and chunks from 1 sample to longer than the utterance).

    Same operations on the same samples are not yet the same bits: MKL's matrix product
    and oneDNN's convolutions pick their kernels by shape, and on windows under ~25
    frames the mel projection and the residual convolutions round differently from the
    whole utterance's (measured here: windows of 0.25 s differ by ~1e-7, windows of
    0.4 s and more are exact at every point). So every window is at least
    ``min_window`` samples (default 1 s) long: a stream emits nothing before it has that
    much audio, then recomputes the last ``min_window`` samples (or ``2 * context``
    more than the new ones, if more) on each push, and an utterance shorter than that is
    computed whole at :meth:`finish`. What is kept between pushes is one window.
    """

    def __init__(self, model: SplitModel, point: str, min_window: int | None = None):
        self.model, self.point = model, point
        self.min_window = model.sample_rate if min_window is None else min_window
        self.geometry = model.stream_geometry(point)
        self.dim = {p.name: p.dim for p in model.point_info()}[point]
        self._buf = torch.zeros(0)  # samples from self._start on
        self._start = 0  # sample index of self._buf[0]
        self.samples = 0  # samples received
        self.frames = 0  # frames returned
        self.done = False

    def push(self, samples: torch.Tensor) -> torch.Tensor:
        """Append ``samples (S,)`` float32; returns the frames now final ``(1, k, C)``
        (``k`` may be 0)."""
        if self.done:
            raise ValueError("the stream has finished")
        samples = samples.reshape(-1).float()
        self.samples += samples.shape[0]
        if self.point == AUDIO:  # the samples are the frames
            self.frames += samples.shape[0]
            return samples.reshape(1, -1, 1).clone()
        self._buf = torch.cat([self._buf, samples])
        stop = self.geometry.final_frames(self.samples)
        if stop <= self.frames or self.samples < self.min_window:
            return self._empty()
        return self._emit(stop, end=False)

    def finish(self) -> torch.Tensor:
        """The utterance ended: the remaining frames ``(1, k, C)``."""
        if self.done:
            raise ValueError("the stream has finished")
        self.done = True
        if self.samples == 0 or self.point == AUDIO:
            return self._empty()
        return self._emit(None, end=True)

    def _empty(self) -> torch.Tensor:
        return torch.zeros(1, 0, self.dim)

    def _emit(self, stop: int | None, end: bool) -> torch.Tensor:
        g = self.geometry
        a = min(g.align(g.hop * self.frames - g.context), self._earliest())
        a = max(a, self._start)
        window = self._buf[a - self._start :]
        # frame i of the window is frame i + a // hop of the utterance
        h = self.window(window, end, self.frames - a // g.hop, None if stop is None else stop - a // g.hop)
        self.frames += h.shape[1]
        keep = min(g.align(g.hop * self.frames - g.context), self._earliest())
        if keep > self._start:
            self._buf = self._buf[keep - self._start :].clone()
            self._start = keep
        return h

    def _earliest(self) -> int:
        """The latest start a window may have: ``min_window`` samples before the last one
        (and ``2 * context``, so that the front end's own padding at the end has room)."""
        return self.geometry.align(self.samples - max(self.min_window, 2 * self.geometry.context))

    def window(self, wave: torch.Tensor, end: bool, first: int, stop: int | None) -> torch.Tensor:
        """Frames ``first .. stop - 1`` (``stop=None``: to the end) of the head on one
        window of audio ``(S_w,)``, as ``(1, k, C)``; ``end``: the window ends where the
        utterance does."""
        with torch.inference_mode():
            h, _ = self.model.head(wave.unsqueeze(0), None, self.point)
        return h[:, first:stop]

    @property
    def floor(self) -> float | None:
        """What the cloud raises every streamed value to before the tail
        (:meth:`SplitModel.stream_end`), known at :meth:`finish`; None: nothing to do."""
        return None


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

    @property
    def streamable_points(self) -> list[str]:
        """Split points whose head runs chunk by chunk, bit for bit as on the whole
        utterance (:class:`HeadStream`): ``audio``, and every point up to the first stage
        that sees the whole utterance."""
        out = [AUDIO]
        for name, stage in self.stages.items():
            if stage.stream_field is None:
                break
            out.append(name)
        return out

    def stream_geometry(self, point: str) -> StreamGeometry:
        """Frame hop and receptive field (in samples) at a streamable ``point``.

        Raises:
            ValueError: ``point`` is unknown or does not stream.
        """
        if point not in self.streamable_points:
            self._index(point)
            raise ValueError(
                f"split point {point!r} of {self.name} does not stream; "
                f"streamable: {', '.join(self.streamable_points)}"
            )
        hop, context = 1, 0
        for stage in list(self.stages.values())[: self._index(point)]:
            stride, radius = stage.stream_field
            context += radius * hop
            hop *= stride
        return StreamGeometry(hop, context)

    def head_stream(self, point: str) -> HeadStream:
        """A :class:`HeadStream` to ``point`` (one per utterance; not shared)."""
        return HeadStream(self, point)

    def stream_end(self, h: torch.Tensor, point: str, floor: float | None) -> torch.Tensor:
        """What the cloud does with the concatenated streamed frames ``h (1, T, C)`` before
        the tail, given the ``floor`` the head stream reported at its end: nothing, unless
        the model's head ends with an utterance-wide step (Whisper's log-mel floor)."""
        if floor is not None:
            raise ValueError(f"{self.name} streams no floor at {point!r}")
        return h

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
