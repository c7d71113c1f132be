"""What the device sends for one utterance (:class:`Encoded`), in a module without torch so
that an edge running its head on ONNX Runtime (:mod:`splitasr.onnx.edge`) returns the same
record as :meth:`splitasr.pipeline.Edge.encode` (which re-exports it)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Encoded:
    """What the device sends for one utterance."""

    payload: bytes
    point: str
    codec: str
    samples: int  # audio samples the payload stands for
    head_ms: float  # the model's head (the front end included)
    encode_ms: float  # codec compress
