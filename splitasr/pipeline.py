"""The one split path: audio -> head -> codec -> bytes | bytes -> codec -> tail -> text.

Every caller that splits a model goes through here: ``splitasr transcribe`` and ``eval``
(the whole model, :func:`recognise`), ``bench tradeoff`` and ``bench rtf``, codec
calibration and training, and the edge client and cloud server of the transport layer.

* :class:`Edge`: the device side. A waveform ``(S,)`` goes through the model's head up to
  a split point and a codec; out comes a self-describing payload (:class:`Encoded`).
* :class:`Cloud`: the server side. A payload is decoded (bounded by what the model can
  legitimately produce for ``max_seconds`` of audio), the tail runs from the point the
  codec decodes to, and the model's decoder turns the output into text (:class:`Decoded`).
* Streaming (:meth:`Edge.stream`, :meth:`Cloud.stream`): the device feeds audio as it is
  recorded; :class:`EdgeStream` runs the head chunk by chunk (the model's
  :class:`~splitasr.model.stages.HeadStream`) and makes one ordinary payload (N=1, T = the
  frames that became final, C) per push; :class:`CloudStream` decodes each as it arrives,
  within the frames ``max_seconds`` allows in all, and runs the tail when the utterance
  ends. Only :attr:`SplitModel.streamable_points` stream (docs/pipeline.md, "Streaming").

One tensor convention holds at every split point, ``audio`` included: an activation is
``(N, T, C)`` with valid lengths ``(N,)`` (the waveform is ``(N, S, 1)``), which is what
:meth:`SplitModel.head` returns, :meth:`SplitModel.tail` takes and codecs code.

Both sides hold only what they are built with (the model, the codecs, the decoder), and
every per-call choice (split point, codec, decoder) is an argument, so one :class:`Cloud`
serves many devices from many threads at once.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import NamedTuple

import torch

from splitasr.audio import DEFAULT_MAX_SECONDS
from splitasr.codecs import Codec, get_codec
from splitasr.codecs.base import DecodeLimits, read_header
from splitasr.codecs.state import shipped_state_dir
from splitasr.decoding import Decoder
from splitasr.encoded import Encoded
from splitasr.errors import SplitASRError
from splitasr.model.stages import AUDIO, SplitModel


class PipelineError(SplitASRError):
    """A request the pipeline cannot serve: unknown split point, or a payload for another
    point or codec than the request names."""


@dataclass(frozen=True)
class Decoded:
    """What the cloud makes of one payload."""

    text: str
    decode_ms: float  # codec decompress
    tail_ms: float  # the model's tail
    text_ms: float  # the decoder (CTC search, or Whisper's text decoder)
    batch: int = 1  # items the tail ran with (Cloud.transcribe_batch); 1 when alone


class Activation(NamedTuple):
    """A decoded activation ready for the tail: ``h (1, T, C)``, ``lens (1,)``, the point
    the tail resumes at, and the milliseconds decoding took (what :meth:`CloudStream.end`
    gives, and :meth:`Cloud.transcribe_batch` takes in place of a payload)."""

    h: torch.Tensor
    lens: torch.Tensor
    resume: str
    decode_ms: float


class BatchItem(NamedTuple):
    """One request of :meth:`Cloud.transcribe_batch` (a plain 4-tuple works as well); the
    payload may also be an already decoded :class:`Activation` (a finished stream)."""

    payload: bytes | Activation
    point: str
    codec: str | Codec
    decoder: Decoder | None = None


def recognise(model: SplitModel, wave: torch.Tensor, decoder: Decoder) -> str:
    """The whole model on one machine: waveform ``(S,)`` -> text (edge-only or unsplit)."""
    with torch.inference_mode():
        out, lens = model(wave.unsqueeze(0))
    return decoder.decode(out[0], int(lens[0]))


class CodecBank:
    """The codecs of one model, built once per ``(point, name)`` and then shared.

    State (calibration tables, learned weights) comes from ``state_dirs[point]`` when the
    caller gives one, else from the shipped folder of the model at that point
    (``splitasr/assets/codecs/<model.codec_home(point)>/<point>``). Thread-safe: building
    is locked, and a built codec is only read.
    """

    def __init__(self, model: SplitModel, state_dirs: dict[str, str | Path] | None = None):
        self.model = model
        self.state_dirs = dict(state_dirs or {})
        self._codecs: dict[tuple[str, str], Codec] = {}
        self._lock = threading.Lock()

    def state_dir(self, point: str) -> Path:
        return Path(self.state_dirs.get(point) or shipped_state_dir(self.model.codec_home(point), point))

    def get(self, name: str, point: str) -> Codec:
        """The codec ``name`` for activations at ``point``; raises CodecError for unknown
        names or missing state."""
        key = (point, name)
        with self._lock:
            if key not in self._codecs:
                self._codecs[key] = get_codec(name, self.state_dir(point))
            return self._codecs[key]


class Edge:
    """The device side of the split: waveform -> head -> codec -> payload."""

    def __init__(self, model: SplitModel, codecs: CodecBank | None = None):
        self.model = model
        self.codecs = codecs or CodecBank(model)

    def head(self, wave: torch.Tensor, point: str) -> tuple[torch.Tensor, torch.Tensor]:
        """The activation at ``point`` of one waveform ``(S,)``: ``(h (1, T, C), lens (1,))``
        (``(1, S, 1)`` at ``audio``)."""
        _check_point(self.model, point)
        with torch.inference_mode():
            return self.model.head(wave.unsqueeze(0), None, point)

    def compress(self, h: torch.Tensor, lens: torch.Tensor, point: str, codec: str | Codec) -> bytes:
        """The payload for an activation ``h (N, T, C)`` with lengths ``(N,)`` at ``point``
        (for callers that reuse one head output with several codecs)."""
        codec = self.codecs.get(codec, point) if isinstance(codec, str) else codec
        return codec.compress(h, lens, point=self.model.split_points.index(point))

    def encode(self, wave: torch.Tensor, point: str, codec: str | Codec) -> Encoded:
        """Run the head to ``point`` on ``wave (S,)`` and compress what crosses the split."""
        codec = self.codecs.get(codec, point) if isinstance(codec, str) else codec
        t0 = time.perf_counter()
        h, lens = self.head(wave, point)
        t1 = time.perf_counter()
        payload = self.compress(h, lens, point, codec)
        t2 = time.perf_counter()
        return Encoded(payload, point, codec.name, int(wave.shape[0]), _ms(t1 - t0), _ms(t2 - t1))

    def stream(self, point: str, codec: str | Codec) -> EdgeStream:
        """A stream of one utterance to a streamable ``point`` through ``codec``.

        Raises:
            PipelineError: the point does not stream for this model (see
                :attr:`SplitModel.streamable_points`), or the codec decodes past it.
            CodecError: an unknown codec or missing state.
        """
        _check_stream(self.model, point)
        codec = self.codecs.get(codec, point) if isinstance(codec, str) else codec
        _check_stream_codec(codec, point)
        return EdgeStream(self, point, codec)


class EdgeStream:
    """The device side of one streamed utterance: samples in as they are recorded,
    payloads out for the frames at ``point`` that no later sample can change.

    ``push(samples (S,))`` and ``finish()`` return the payloads to send, in order (none
    while the head still waits for audio; each an ordinary payload of ``(1, k, C)``).
    Concatenating what the payloads hold gives the whole-utterance head output bit for bit
    (with a lossless codec; :class:`~splitasr.model.stages.HeadStream`). After
    :meth:`finish`, :attr:`floor` is what the cloud needs besides the payloads (Whisper at
    ``features``: the utterance's log-mel floor; None for the rest). ``head_ms`` and
    ``encode_ms`` add up the device's work, ``finish_ms`` is what :meth:`finish` took (the
    head's last frames and their payload).
    """

    def __init__(self, edge: Edge, point: str, codec: Codec):
        self.edge, self.point, self.codec = edge, point, codec
        self.head = edge.model.head_stream(point)
        self.samples = 0
        self.frames = 0
        self.head_ms = 0.0
        self.encode_ms = 0.0
        self.finish_ms = 0.0

    def push(self, samples: torch.Tensor) -> list[bytes]:
        """Feed ``samples (S,)`` float32 at the model's rate; the payloads now ready."""
        t0 = time.perf_counter()
        h = self.head.push(samples)
        self.samples = self.head.samples
        return self._encode(h, t0)

    def finish(self) -> list[bytes]:
        """The utterance ended: the payloads of its remaining frames."""
        t0 = time.perf_counter()
        out = self._encode(self.head.finish(), t0)
        self.finish_ms = _ms(time.perf_counter() - t0)
        return out

    @property
    def floor(self) -> float | None:
        return self.head.floor

    def _encode(self, h: torch.Tensor, t0: float) -> list[bytes]:
        t1 = time.perf_counter()
        self.head_ms += _ms(t1 - t0)
        if h.shape[1] == 0:
            return []
        payload = self.edge.compress(h, torch.tensor([h.shape[1]]), self.point, self.codec)
        self.frames += h.shape[1]
        self.encode_ms += _ms(time.perf_counter() - t1)
        return [payload]


class Cloud:
    """The server side of the split: payload -> codec -> tail -> decoder -> text.

    Args:
        model: the recogniser (shared, not modified).
        codecs: where codecs and their state come from (default: the shipped state).
        decoder: the default text decoder (default: the model's own convention).
        max_seconds: longest audio a payload may stand for; every payload is decoded
            within what the model produces for this much audio at the payload's point.
    """

    def __init__(
        self,
        model: SplitModel,
        codecs: CodecBank | None = None,
        decoder: Decoder | None = None,
        max_seconds: float = DEFAULT_MAX_SECONDS,
    ):
        self.model = model
        self.codecs = codecs or CodecBank(model)
        self.decoder = decoder or model.make_decoder()
        self.max_seconds = max_seconds
        info = {p.name: p for p in model.point_info()}
        self._limits = {
            p: DecodeLimits(max_items=1, max_frames=model.max_frames(p, max_seconds), channels=info[p].dim)
            for p in model.split_points
        }

    def limits(self, point: str) -> DecodeLimits:
        """What a payload decoding to ``point`` may declare: one item, the point's width,
        and the frames of ``max_seconds`` of audio there."""
        _check_point(self.model, point)
        return self._limits[point]

    def activation(
        self, payload: bytes, point: str, codec: str | Codec, max_frames: int | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, str]:
        """Decode a payload made at ``point``: ``(h (N, T, C), lens (N,), resume point)``;
        the tail resumes at the point the codec decodes to (a learned codec may decode
        to a later one). ``max_frames`` lowers the limit of frames (a stream's budget left).

        Raises:
            CodecError: a malformed payload, or one larger than the limits allow.
            PipelineError: the payload was made at another point or by another codec, or
                holds no audio.
        """
        _check_point(self.model, point)
        codec = self.codecs.get(codec, point) if isinstance(codec, str) else codec
        resume = codec.decodes_to(point)
        limits = self.limits(resume)
        if max_frames is not None:
            limits = replace(limits, max_frames=min(limits.max_frames, max_frames))
        header = read_header(payload, replace(limits, channels=None))  # route first, then size
        if header.codec != codec.name:
            raise PipelineError(
                f"payload was made by codec {header.codec!r}, the request says {codec.name!r}"
            )
        if header.point != self.model.split_points.index(point):
            raise PipelineError(f"payload was made at another split point than {point!r}")
        if header.shape[0] != 1 or min(header.lens) < 1:
            raise PipelineError("a payload holds one utterance of at least one frame")
        h, lens = codec.decompress(payload, limits)
        if not torch.isfinite(h).all():  # f32 carries any bit pattern; NaN breaks the decoders
            raise PipelineError("payload decodes to non-finite values (NaN or infinity)")
        return h, lens, resume

    def tail(self, h: torch.Tensor, lens: torch.Tensor, point: str) -> tuple[torch.Tensor, torch.Tensor]:
        """The model's tail from ``point``: ``(out (N, T', V), out_lens (N,))``."""
        with torch.inference_mode():
            return self.model.tail(h, lens, point)

    def transcribe(
        self, payload: bytes, point: str, codec: str | Codec, decoder: Decoder | None = None
    ) -> Decoded:
        """Text of one payload made at ``point`` by ``codec``, with the time of each step."""
        t0 = time.perf_counter()
        h, lens, resume = self.activation(payload, point, codec)
        t1 = time.perf_counter()
        out, out_lens = self.tail(h, lens, resume)
        t2 = time.perf_counter()
        _check_finite(out[0], int(out_lens[0]))
        with torch.inference_mode():
            text = (decoder or self.decoder).decode(out[0], int(out_lens[0]))
        t3 = time.perf_counter()
        return Decoded(text, _ms(t1 - t0), _ms(t2 - t1), _ms(t3 - t2))

    def stream(self, point: str, codec: str | Codec) -> CloudStream:
        """The cloud side of one streamed utterance made at ``point`` by ``codec``
        (:class:`CloudStream`); raises PipelineError when the point does not stream."""
        _check_stream(self.model, point)
        codec = self.codecs.get(codec, point) if isinstance(codec, str) else codec
        _check_stream_codec(codec, point)
        return CloudStream(self, point, codec)

    def transcribe_batch(self, items: Sequence[BatchItem | tuple]) -> list[Decoded | Exception]:
        """Texts of several payloads, one result per item, in order: a :class:`Decoded`, or
        the exception that item raised (a bad payload fails only its own item).

        Each item ``(payload, point, codec, decoder)`` is decoded and checked on its own, as
        :meth:`activation` does. Items that resume at the same point are padded with zeros
        into one batch ``(B, T_max, C)`` with their lengths, and the tail runs once for the
        group. The group's rows then go to their decoders, one
        :meth:`~splitasr.decoding.Decoder.decode_batch` call per decoder (items name theirs,
        e.g. another beam width; ``None`` is the Cloud's default), each row within its own
        length. ``Decoded.tail_ms`` is the group's tail time, ``Decoded.text_ms`` the time
        of its decoder's batch (shared by the items decoded together: a request's text
        is ready when its batch's is), and ``Decoded.batch`` the size of the tail group.

        Whisper's decoder steps the rows of all its items through the text decoder as one
        batch, each item leaving when its text ends (``WhisperDecoder.decode_batch``; the
        same token ids as one by one, tested). The CTC decoders decode item by item.

        The tails are length-aware, so a batched row equals the item's single run:

        * DS2: the convolutions mask each item's padding and the GRUs pack the sequences;
          rows agree with single-item runs within 3e-6 (not bit for bit: the matrix
          products block differently) and the texts are identical
          (``tests/transport/test_batching.py``).
        * Whisper (padded ``whisper-tiny.en`` and ``whisper-tiny.en-dyn``): measured on
          utterances of ``test_sentences_seen_voices`` (``-dyn``: 8 at ``stem`` with
          ``deepcod+ans``; the padded model: 4 at ``stem``, 8 at ``features`` with
          ``f32+pack``), batched rows equal single runs bit for bit with identical texts
          (the padded model completes every item to its own 30-s window; the trimmed one
          masks by length), so Whisper tails batch too. It buys
          no speed there (1 thread, 4 items: padded 1.85 s batched vs 1.64 s one by one, the
          encoder costs the same per item; ``-dyn`` 0.17 s either way); the text decoder
          is where Whisper gains (see above).
        """
        results: list[Decoded | Exception | None] = [None] * len(items)
        groups: dict[str, list[tuple[int, torch.Tensor, torch.Tensor, Decoder | None, float]]] = {}
        for i, item in enumerate(items):
            payload, point, codec, decoder = BatchItem(*item)
            t0 = time.perf_counter()
            if isinstance(payload, Activation):  # decoded already: a finished stream
                groups.setdefault(payload.resume, []).append(
                    (i, payload.h, payload.lens, decoder, payload.decode_ms)
                )
                continue
            try:
                h, lens, resume = self.activation(payload, point, codec)
            except Exception as exc:  # this item only
                results[i] = exc
                continue
            groups.setdefault(resume, []).append((i, h, lens, decoder, _ms(time.perf_counter() - t0)))
        for resume, group in groups.items():
            t0 = time.perf_counter()
            try:
                h, lens = _pad([g[1] for g in group], [g[2] for g in group])
                out, out_lens = self.tail(h, lens, resume)
            except Exception as exc:  # noqa: BLE001 - the group's items report it
                for g in group:
                    results[g[0]] = exc
                continue
            tail_ms = _ms(time.perf_counter() - t0)
            by_decoder: dict[int, tuple[Decoder, list[int]]] = {}  # one text batch per decoder
            for row, g in enumerate(group):
                try:  # a row the tail turned non-finite fails alone, before any decoding
                    _check_finite(out[row], int(out_lens[row]))
                except Exception as exc:  # noqa: BLE001
                    results[g[0]] = exc
                    continue
                decoder = g[3] or self.decoder
                by_decoder.setdefault(id(decoder), (decoder, []))[1].append(row)
            for decoder, rows in by_decoder.values():
                t1 = time.perf_counter()
                try:
                    index = torch.tensor(rows)
                    with torch.inference_mode():
                        texts = decoder.decode_batch(
                            out.index_select(0, index), out_lens.index_select(0, index)
                        )
                except Exception as exc:  # noqa: BLE001 - the decoder group's items report it
                    for row in rows:
                        results[group[row][0]] = exc
                    continue
                text_ms = _ms(time.perf_counter() - t1)
                for row, text in zip(rows, texts, strict=True):
                    i, decode_ms = group[row][0], group[row][4]
                    results[i] = Decoded(text, decode_ms, tail_ms, text_ms, batch=len(group))
        return results  # type: ignore[return-value]


class CloudStream:
    """The cloud side of one streamed utterance: each chunk's payload is decoded as it
    arrives (:meth:`add`), the tail runs once the utterance has ended (:meth:`finish`, or
    :meth:`end` for a caller that batches tails).

    Every payload is checked as a unary one is (codec, point, one utterance, the point's
    channels), and the frames of all of them together are bounded by
    ``model.max_frames(point, cloud.max_seconds)``: a payload that would pass the budget
    is refused before it is decoded. Holds one utterance's frames; not shared.
    """

    def __init__(self, cloud: Cloud, point: str, codec: Codec):
        self.cloud, self.point, self.codec = cloud, point, codec
        self.max_frames = cloud.limits(point).max_frames
        self.frames = 0
        self.chunks = 0
        self.decode_ms = 0.0
        self._parts: list[torch.Tensor] = []

    def add(self, payload: bytes) -> int:
        """Decode one chunk's payload; returns its frames.

        Raises:
            CodecError: a malformed payload.
            PipelineError: another codec or point, more than one utterance, or more frames
                in all than ``max_seconds`` of audio gives.
        """
        left = self.max_frames - self.frames
        t0 = time.perf_counter()
        header = read_header(payload, replace(self.cloud.limits(self.point), channels=None))
        if max(header.lens, default=0) > left:
            raise PipelineError(
                f"the stream passed {self.max_frames} frames ({self.cloud.max_seconds:g} s of audio)"
            )
        h, lens, _ = self.cloud.activation(payload, self.point, self.codec, max_frames=left)
        n = int(lens[0])
        self._parts.append(h[:, :n])
        self.frames += n
        self.chunks += 1
        self.decode_ms += _ms(time.perf_counter() - t0)
        return n

    def end(self, floor: float | None = None) -> Activation:
        """The utterance's activation for the tail, after the model's end-of-stream step
        (:meth:`SplitModel.stream_end` with the device's ``floor``).

        Raises:
            PipelineError: no frames arrived, or a floor the model does not take (or not
                a finite number).
        """
        if not self._parts:
            raise PipelineError("the stream holds no audio")
        if floor is not None and not math.isfinite(floor):
            raise PipelineError(f"floor {floor!r} is not a finite number")
        t0 = time.perf_counter()
        h = self._parts[0] if len(self._parts) == 1 else torch.cat(self._parts, dim=1)
        try:
            with torch.inference_mode():
                h = self.cloud.model.stream_end(h, self.point, floor)
        except ValueError as exc:
            raise PipelineError(str(exc)) from None
        self._parts = []
        return Activation(
            h, torch.tensor([h.shape[1]]), self.point, self.decode_ms + _ms(time.perf_counter() - t0)
        )

    def finish(self, decoder: Decoder | None = None, floor: float | None = None) -> Decoded:
        """The text of the utterance: :meth:`end`, the tail, the decoder."""
        act = self.end(floor)
        t0 = time.perf_counter()
        out, out_lens = self.cloud.tail(act.h, act.lens, act.resume)
        t1 = time.perf_counter()
        with torch.inference_mode():
            text = (decoder or self.cloud.decoder).decode(out[0], int(out_lens[0]))
        return Decoded(text, act.decode_ms, _ms(t1 - t0), _ms(time.perf_counter() - t1))


def _check_stream(model: SplitModel, point: str) -> None:
    _check_point(model, point)
    if point not in model.streamable_points:
        raise PipelineError(
            f"split point {point!r} of {model.name} does not stream; "
            f"streamable: {', '.join(model.streamable_points)}"
        )


def _check_stream_codec(codec: Codec, point: str) -> None:
    if codec.decodes_to(point) != point:
        raise PipelineError(
            f"codec {codec.name!r} decodes {point!r} payloads to {codec.decodes_to(point)!r}: "
            "its decoder needs the whole utterance, so it does not stream"
        )


def _pad(hs: list[torch.Tensor], lens: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """One batch ``(B, T_max, C)`` of single-item activations ``(1, T, C)``, zero-padded."""
    if len(hs) == 1:
        return hs[0], lens[0]
    t_max = max(h.shape[1] for h in hs)
    batch = hs[0].new_zeros((len(hs), t_max, hs[0].shape[2]))
    for row, h in enumerate(hs):
        batch[row, : h.shape[1]] = h[0]
    return batch, torch.cat([x.reshape(1) for x in lens])


def _check_finite(out: torch.Tensor, length: int) -> None:
    """Refuse a tail output ``(T', V)`` with NaN or infinity in its first ``length`` frames.

    Finite but extreme activations (a crafted payload of 1e38s) overflow inside the tail;
    on NaN, DS2's beam search fails (an empty beam) and Whisper's text decoder runs to its
    token limit on every beam (tens of seconds): refused here, as a bad payload."""
    if not torch.isfinite(out[:length]).all():
        raise PipelineError("payload values drive the model's output to NaN or infinity")


def _check_point(model: SplitModel, point: str) -> None:
    if point not in model.split_points:
        raise PipelineError(f"unknown split point {point!r}; choose from {', '.join(model.split_points)}")


def _ms(seconds: float) -> float:
    return round(1000 * seconds, 3)


__all__ = [
    "AUDIO",
    "Activation",
    "BatchItem",
    "Cloud",
    "CloudStream",
    "CodecBank",
    "Decoded",
    "Edge",
    "EdgeStream",
    "Encoded",
    "PipelineError",
    "recognise",
]
