"""The one split path: audio -> head -> codec -> bytes | bytes -> codec -> tail -> text.

Every caller that splits a model goes through here: ``splitasr transcribe`` and ``eval``
(the whole model, :func:`recognise`), ``bench tradeoff`` and ``bench rtf``, codec
calibration and training, and the edge client and cloud server of the transport layer.

* :class:`Edge`: the device side. A waveform ``(S,)`` goes through the model's head up to
  a split point and a codec; out comes a self-describing payload (:class:`Encoded`).
* :class:`Cloud`: the server side. A payload is decoded (bounded by what the model can
  legitimately produce for ``max_seconds`` of audio), the tail runs from the point the
  codec decodes to, and the model's decoder turns the output into text (:class:`Decoded`).

One tensor convention holds at every split point, ``audio`` included: an activation is
``(N, T, C)`` with valid lengths ``(N,)`` (the waveform is ``(N, S, 1)``), which is what
:meth:`SplitModel.head` returns, :meth:`SplitModel.tail` takes and codecs code.

Both sides hold only what they are built with (the model, the codecs, the decoder), and
every per-call choice (split point, codec, decoder) is an argument, so one :class:`Cloud`
serves many devices from many threads at once.
"""

from __future__ import annotations

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
from splitasr.errors import SplitASRError
from splitasr.model.stages import AUDIO, SplitModel


class PipelineError(SplitASRError):
    """A request the pipeline cannot serve: unknown split point, or a payload for another
    point or codec than the request names."""


@dataclass(frozen=True)
class Encoded:
    """What the device sends for one utterance."""

    payload: bytes
    point: str
    codec: str
    samples: int  # audio samples the payload stands for
    head_ms: float  # the model's head (the front end included)
    encode_ms: float  # codec compress


@dataclass(frozen=True)
class Decoded:
    """What the cloud makes of one payload."""

    text: str
    decode_ms: float  # codec decompress
    tail_ms: float  # the model's tail
    text_ms: float  # the decoder (CTC search, or Whisper's text decoder)
    batch: int = 1  # items the tail ran with (Cloud.transcribe_batch); 1 when alone


class BatchItem(NamedTuple):
    """One request of :meth:`Cloud.transcribe_batch` (a plain 4-tuple works as well)."""

    payload: bytes
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
        self, payload: bytes, point: str, codec: str | Codec
    ) -> tuple[torch.Tensor, torch.Tensor, str]:
        """Decode a payload made at ``point``: ``(h (N, T, C), lens (N,), resume point)``;
        the tail resumes at the point the codec decodes to (a learned codec may decode
        to a later one).

        Raises:
            CodecError: a malformed payload, or one larger than the limits allow.
            PipelineError: the payload was made at another point or by another codec, or
                holds no audio.
        """
        _check_point(self.model, point)
        codec = self.codecs.get(codec, point) if isinstance(codec, str) else codec
        resume = codec.decodes_to(point)
        limits = self.limits(resume)
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
        with torch.inference_mode():
            text = (decoder or self.decoder).decode(out[0], int(out_lens[0]))
        t3 = time.perf_counter()
        return Decoded(text, _ms(t1 - t0), _ms(t2 - t1), _ms(t3 - t2))

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


def _pad(hs: list[torch.Tensor], lens: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """One batch ``(B, T_max, C)`` of single-item activations ``(1, T, C)``, zero-padded."""
    if len(hs) == 1:
        return hs[0], lens[0]
    t_max = max(h.shape[1] for h in hs)
    batch = hs[0].new_zeros((len(hs), t_max, hs[0].shape[2]))
    for row, h in enumerate(hs):
        batch[row, : h.shape[1]] = h[0]
    return batch, torch.cat([x.reshape(1) for x in lens])


def _check_point(model: SplitModel, point: str) -> None:
    if point not in model.split_points:
        raise PipelineError(f"unknown split point {point!r}; choose from {', '.join(model.split_points)}")


def _ms(seconds: float) -> float:
    return round(1000 * seconds, 3)


__all__ = [
    "AUDIO",
    "BatchItem",
    "Cloud",
    "CodecBank",
    "Decoded",
    "Edge",
    "Encoded",
    "PipelineError",
    "recognise",
]
