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
from dataclasses import dataclass, replace
from pathlib import Path

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


def _check_point(model: SplitModel, point: str) -> None:
    if point not in model.split_points:
        raise PipelineError(f"unknown split point {point!r}; choose from {', '.join(model.split_points)}")


def _ms(seconds: float) -> float:
    return round(1000 * seconds, 3)


__all__ = ["AUDIO", "Cloud", "CodecBank", "Decoded", "Edge", "Encoded", "PipelineError", "recognise"]
