"""The edge side of the transport: a gRPC client for the cloud, and the edge client that
runs the head locally, sends the payload and falls back to the whole local model when the
cloud does not answer in time.

* :class:`CloudClient`: one channel to a server; ``transcribe(payload, model, point, codec)``
  with a deadline on every call.
* :class:`EdgeClient`: ``Edge.encode`` -> :class:`CloudClient` -> :class:`EdgeResult` (text,
  bytes up, a per-stage timing breakdown, and ``fallback`` with the reason when the edge
  finished alone).
"""

from __future__ import annotations

import secrets
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import grpc
import torch

from splitasr.decoding import Decoder
from splitasr.errors import SplitASRError
from splitasr.model.stages import SplitModel
from splitasr.pipeline import AUDIO, Edge, recognise
from splitasr.transport import splitasr_pb2 as pb
from splitasr.transport import splitasr_pb2_grpc as pb_grpc
from splitasr.transport.tls import channel_credentials

DEFAULT_TIMEOUT_S = 10.0
MODES = ("split", "cloud", "edge")
CLOUD_CODEC = "pcm16+pack"  # what --mode cloud sends at the audio point unless told
# The request itself is wrong: finishing on the edge would hide a configuration error.
_REFUSED = {
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.UNAUTHENTICATED,
    grpc.StatusCode.PERMISSION_DENIED,
}


class CloudError(SplitASRError):
    """The cloud refused or failed a request; ``code`` is the gRPC status."""

    def __init__(self, code: grpc.StatusCode, details: str):
        super().__init__(f"cloud: {code.name}: {details}")
        self.code, self.details = code, details


class CloudClient:
    """A connection to a ``splitasr serve`` server.

    Args:
        address: ``host:port``.
        token: the server's bearer token, if it has one.
        timeout_s: the deadline of every call, in seconds.
        tls_ca: connect with TLS, trusting the PEM certificate(s) in this file (a
            self-signed server certificate is its own CA).
        tls: connect with TLS, trusting the system's roots (implied by ``tls_ca``).
    """

    def __init__(
        self,
        address: str,
        token: str | None = None,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        tls_ca: str | Path | None = None,
        tls: bool = False,
    ):
        self.address, self.timeout_s = address, timeout_s
        self._metadata = (("authorization", f"Bearer {token}"),) if token else ()
        self.tls = tls or tls_ca is not None
        if self.tls:
            self._channel = grpc.secure_channel(address, channel_credentials(tls_ca))
        else:
            self._channel = grpc.insecure_channel(address)
        self._stub = pb_grpc.CloudStub(self._channel)

    def request(
        self,
        payload: bytes,
        model: str,
        point: str,
        codec: str,
        beam: int | None = None,
        request_id: int | None = None,
    ) -> pb.TranscribeRequest:
        req = pb.TranscribeRequest(
            model=model,
            point=point,
            codec=codec,
            payload=payload,
            request_id=request_id if request_id is not None else secrets.randbits(64),
            sent_unix_ns=time.time_ns(),
        )
        if beam is not None:
            req.beam = beam
        return req

    def call(self, request: pb.TranscribeRequest, timeout_s: float | None = None) -> pb.TranscribeReply:
        """Send one request; raises :class:`CloudError` with the status when it fails."""
        try:
            return self._stub.Transcribe(
                request, timeout=timeout_s or self.timeout_s, metadata=self._metadata
            )
        except grpc.RpcError as exc:
            raise CloudError(exc.code(), exc.details() or "") from None

    def transcribe(
        self,
        payload: bytes,
        model: str,
        point: str,
        codec: str,
        beam: int | None = None,
        request_id: int | None = None,
        timeout_s: float | None = None,
    ) -> pb.TranscribeReply:
        """The transcript of one payload made at ``point`` by ``codec`` (:class:`CloudError`
        when the cloud refuses, fails or misses the deadline)."""
        return self.call(self.request(payload, model, point, codec, beam, request_id), timeout_s)

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> CloudClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


@dataclass
class EdgeResult:
    """One utterance through the edge client.

    ``timings`` (ms): ``head`` and ``encode`` on the device; ``round_trip`` (request sent ->
    reply received); ``network`` = round trip minus the server's total (the link, the
    protocol and gRPC's own queues); the server's ``queue``, ``decode``, ``tail``, ``text``;
    ``edge`` for the whole local model when the edge finished alone; ``total``. Device
    times include the emulated slowdown (``EdgeClient(slowdown=F)``).

    ``bytes_up`` is the payload; ``request_bytes`` / ``reply_bytes`` the protobuf messages
    (payload included; gRPC's HTTP/2 framing and headers come on top, see docs/transport.md).
    """

    text: str
    mode: str  # split, cloud or edge (what was asked)
    model: str
    point: str | None
    codec: str | None
    bytes_up: int = 0
    timings: dict[str, float] = field(default_factory=dict)
    fallback: str | None = None  # why the edge finished alone, when it did
    request_id: int | None = None
    server_load: dict[str, float] | None = None
    request_bytes: int = 0
    reply_bytes: int = 0

    def to_dict(self) -> dict:
        return asdict(self)


class EdgeClient:
    """The device: runs the head and the codec here, the rest in the cloud, or the whole
    model here when the cloud is unreachable or misses its deadline.

    Args:
        model: the local model (the same weights as the cloud's ``model_name``).
        cloud: the server's client; ``None`` runs every utterance on the edge.
        decoder: the decoder of the local fallback (default: the model's convention).
        model_name: the name the server serves the model under (default: ``model.name``).
        slowdown: emulate a device ``slowdown`` times slower than this machine: after each
            local compute step (head + encode, or the whole model) the client waits
            ``slowdown - 1`` times as long as the step took, and reports the stretched time
            (1: this machine as it is). How ``bench e2e`` stands a phone-class CPU in.
    """

    def __init__(
        self,
        model: SplitModel,
        cloud: CloudClient | None,
        decoder: Decoder | None = None,
        model_name: str | None = None,
        slowdown: float = 1.0,
    ):
        if not slowdown >= 1.0:
            raise SplitASRError(f"slowdown {slowdown}: must be >= 1 (1: this machine as it is)")
        self.model, self.cloud, self.slowdown = model, cloud, float(slowdown)
        self.edge = Edge(model)
        self.model_name = model_name or model.name
        self._decoder = decoder

    @property
    def decoder(self) -> Decoder:
        if self._decoder is None:
            self._decoder = self.model.make_decoder()
        return self._decoder

    def transcribe(
        self,
        wave: torch.Tensor,
        point: str | None = None,
        codec: str | None = None,
        mode: str = "split",
        beam: int | None = None,
        timeout_s: float | None = None,
    ) -> EdgeResult:
        """One waveform ``(S,)`` at 16 kHz. ``mode``: ``split`` (head to ``point``, ``codec``,
        tail in the cloud), ``cloud`` (the audio itself, ``codec`` default pcm16+pack), or
        ``edge`` (the whole model here)."""
        if mode not in MODES:
            raise SplitASRError(f"unknown mode {mode!r}; choose from {', '.join(MODES)}")
        t0 = time.perf_counter()
        if mode == "edge" or self.cloud is None:
            reason = None if mode == "edge" else "no cloud configured"
            return self._local(wave, mode, t0, reason, {})
        if mode == "cloud":
            point, codec = AUDIO, codec or CLOUD_CODEC
        if not point or not codec:
            raise SplitASRError("split mode needs a split point and a codec")
        sent = self.edge.encode(wave, point, codec)
        self._stall(sent.head_ms + sent.encode_ms)
        f = self.slowdown
        timings = {"head": round(f * sent.head_ms, 3), "encode": round(f * sent.encode_ms, 3)}
        request = self.cloud.request(sent.payload, self.model_name, point, sent.codec, beam)
        t1 = time.perf_counter()
        try:
            reply = self.cloud.call(request, timeout_s)
        except CloudError as exc:
            if exc.code in _REFUSED:
                raise
            timings["round_trip"] = _ms(time.perf_counter() - t1)
            return self._local(wave, mode, t0, f"{exc.code.name}: {exc.details}", timings)
        rtt = _ms(time.perf_counter() - t1)
        s = reply.timings
        timings.update(
            round_trip=rtt,
            network=round(rtt - s.total_ms, 3),
            queue=s.queue_ms,
            decode=s.decode_ms,
            tail=s.tail_ms,
            text=s.text_ms,
            server=s.total_ms,
            total=_ms(time.perf_counter() - t0),
        )
        return EdgeResult(
            text=reply.text,
            mode=mode,
            model=self.model_name,
            point=point,
            codec=sent.codec,
            bytes_up=len(sent.payload),
            timings=timings,
            request_id=reply.request_id,
            server_load={
                "queue_depth": reply.load.queue_depth,
                "mean_service_ms": reply.load.mean_service_ms,
            },
            request_bytes=request.ByteSize(),
            reply_bytes=reply.ByteSize(),
        )

    def _stall(self, compute_ms: float) -> None:
        """Wait out the rest of an emulated slower device's ``compute_ms``."""
        if self.slowdown > 1.0:
            time.sleep((self.slowdown - 1.0) * compute_ms / 1000)

    def _local(self, wave, mode: str, t0: float, reason: str | None, timings: dict) -> EdgeResult:
        t = time.perf_counter()
        text = recognise(self.model, wave, self.decoder)
        spent = _ms(time.perf_counter() - t)
        self._stall(spent)
        timings = {**timings, "edge": round(self.slowdown * spent, 3), "total": _ms(time.perf_counter() - t0)}
        return EdgeResult(text, mode, self.model_name, None, None, timings=timings, fallback=reason)


def _ms(seconds: float) -> float:
    return round(1000 * seconds, 3)


__all__ = ["CloudClient", "CloudError", "EdgeClient", "EdgeResult", "MODES"]
