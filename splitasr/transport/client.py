"""The edge side of the transport: a gRPC client for the cloud, and the edge client that
runs the head locally, sends the payload and falls back to the whole local model when the
cloud does not answer in time.

* :class:`CloudClient`: one channel to a server; ``transcribe(payload, model, point, codec)``
  with a deadline on every call.
* :class:`EdgeClient`: ``Edge.encode`` -> :class:`CloudClient` -> :class:`EdgeResult` (text,
  bytes up, a per-stage timing breakdown, and ``fallback`` with the reason when the edge
  finished alone). :meth:`EdgeClient.transcribe_stream` feeds audio in chunks as a
  microphone would (``realtime=True`` paces a file at 1x; :func:`microphone` records one)
  through ``Edge.stream`` and the ``TranscribeStream`` call, and reports the latency after
  the end of speech.
* ``mode="auto"`` (``EdgeClient(planner=...)``): the planner (:mod:`splitasr.planner`)
  picks edge-only, cloud-only with an audio codec, or a split point and codec for each
  utterance from its length, the :class:`~splitasr.planner.estimator.NetworkEstimator`'s
  estimate and the server's load in the last reply; every reply (and every failure) is fed
  back into the estimator, and a probe (the gRPC health check) runs when the estimate is
  stale. docs/planner.md, "Live".
* Two edge runtimes: the PyTorch model (``EdgeClient(model, cloud)``: every mode, the local
  fallback included) or a head-only runtime such as
  :class:`~splitasr.onnx.edge.OnnxEdge` (``EdgeClient(None, cloud, edge=OnnxEdge(...))``:
  split and cloud modes; with no whole model here a cloud failure is raised as
  :class:`CloudError`, not finished locally). This module imports torch, the model and the
  pipeline only where the PyTorch runtime uses them, so that the edge install
  (``pip install splitasr[edge]``, no torch) can import it. docs/edge.md.
"""

from __future__ import annotations

import queue
import secrets
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field, fields, is_dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import grpc
import numpy as np
from grpc_health.v1 import health_pb2, health_pb2_grpc

from splitasr.encoded import Encoded
from splitasr.errors import SplitASRError
from splitasr.planner.estimator import NetworkEstimator, RequestTiming, ServerLoad
from splitasr.planner.policy import AUDIO, NO_BUDGET, Budget, Decision, Planner
from splitasr.transport import splitasr_pb2 as pb
from splitasr.transport import splitasr_pb2_grpc as pb_grpc
from splitasr.transport.tls import channel_credentials

if TYPE_CHECKING:  # torch, the model and the pipeline: only with the PyTorch runtime
    import torch

    from splitasr.decoding import Decoder
    from splitasr.model.stages import SplitModel

DEFAULT_TIMEOUT_S = 10.0
DEFAULT_PROBE_TIMEOUT_S = 2.0  # a probe's deadline (connecting included)
HEALTH_SERVICE = "splitasr.v1.Cloud"  # what the probe asks the server's health service about
DEFAULT_CHUNK_MS = 200.0  # audio per streamed chunk, as a microphone delivers it
MODES = ("split", "cloud", "edge", "auto")
CLOUD_CODEC = "pcm16+pack"  # what --mode cloud sends at the audio point unless told
# The request itself is wrong: finishing on the edge would hide a configuration error.
_REFUSED = {
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.UNAUTHENTICATED,
    grpc.StatusCode.PERMISSION_DENIED,
}


class HeadRuntime(Protocol):
    """The device side of the split as :class:`EdgeClient` uses it: what
    :class:`splitasr.pipeline.Edge` (PyTorch) and :class:`splitasr.onnx.edge.OnnxEdge`
    (ONNX Runtime, no torch) both are: ``encode(wave (S,) float32 at 16 kHz, point, codec)``
    -> the payload and its device timings."""

    def encode(self, wave, point: str, codec: str) -> Encoded: ...


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
        self._health: health_pb2_grpc.HealthStub | None = None

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

    def stream_future(self, chunks: Iterable[pb.AudioChunk], timeout_s: float | None = None):
        """Start a ``TranscribeStream`` call fed from ``chunks`` (consumed on gRPC's thread
        as they come); returns gRPC's future (``.result()``, ``.cancel()``)."""
        return self._stub.TranscribeStream.future(
            iter(chunks), timeout=timeout_s or self.timeout_s, metadata=self._metadata
        )

    def transcribe_stream(
        self, chunks: Iterable[pb.AudioChunk], timeout_s: float | None = None
    ) -> pb.TranscribeReply:
        """One streamed utterance; raises :class:`CloudError` with the status when it fails."""
        try:
            return self.stream_future(chunks, timeout_s).result()
        except grpc.RpcError as exc:
            raise CloudError(exc.code(), exc.details() or "") from None

    def wait_ready(self, timeout_s: float) -> None:
        """Connect now (TCP, TLS, HTTP/2), or :class:`CloudError` ``UNAVAILABLE`` after
        ``timeout_s``."""
        try:
            grpc.channel_ready_future(self._channel).result(timeout=timeout_s)
        except grpc.FutureTimeoutError:
            raise CloudError(grpc.StatusCode.UNAVAILABLE, f"not connected within {timeout_s:g} s") from None

    def probe(self, timeout_s: float = DEFAULT_PROBE_TIMEOUT_S) -> float:
        """A ping: the round trip (ms) of one gRPC health check (``grpc.health.v1``, about
        40 bytes each way, no model work), after the channel is connected (connecting, a
        TCP and HTTP/2 handshake, is not part of the round trip; the caller's wall clock
        sees it). Raises :class:`CloudError` (``UNAVAILABLE``, ``DEADLINE_EXCEEDED``) when
        the server cannot be reached within ``timeout_s``."""
        start = time.perf_counter()
        self.wait_ready(timeout_s)
        left = max(timeout_s - (time.perf_counter() - start), 0.001)
        if self._health is None:
            self._health = health_pb2_grpc.HealthStub(self._channel)
        t = time.perf_counter()
        try:
            self._health.Check(
                health_pb2.HealthCheckRequest(service=HEALTH_SERVICE), timeout=left, metadata=self._metadata
            )
        except grpc.RpcError as exc:
            raise CloudError(exc.code(), exc.details() or "") from None
        return _ms(time.perf_counter() - t)

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
    ``edge`` for the whole local model when the edge finished alone; ``probe`` (``mode="auto"``:
    a probe ran first, connecting included); ``total`` (probe included). Device times
    include the emulated slowdown (``EdgeClient(slowdown=F)``).

    ``bytes_up`` is the payload; ``request_bytes`` / ``reply_bytes`` the protobuf messages
    (payload included; gRPC's HTTP/2 framing and headers come on top, see docs/transport.md).

    With ``mode="auto"``: ``decision`` is the planner's option (``edge``, ``cloud audio
    opus12+pack``, ``split proj q8+ans``, ...), ``predicted_ms`` its predicted total (to
    compare with ``timings["total"]``), ``plan`` the whole :class:`Decision`
    (:meth:`explain`); ``mode`` is what ran (``edge``, ``cloud``, ``split`` or ``stream``).
    ``request_timing``: the stamps an offloaded request gave the estimator.
    """

    text: str
    mode: str  # split, cloud or edge (what ran), or stream
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
    decision: str | None = None
    predicted_ms: float | None = None
    request_timing: RequestTiming | None = None
    plan: Decision | None = field(default=None, repr=False, compare=False)

    def explain(self) -> str | None:
        """The planner's table for this utterance and why the winner won (``None``: not
        ``mode="auto"``)."""
        return None if self.plan is None else self.plan.explain()

    def to_dict(self) -> dict:
        """JSON-able fields (``plan`` left out: :meth:`explain` is its text)."""
        out = {}
        for f in fields(self):
            if f.name == "plan":
                continue
            v = getattr(self, f.name)
            out[f.name] = asdict(v) if is_dataclass(v) else (dict(v) if isinstance(v, dict) else v)
        return out


class EdgeClient:
    """The device: runs the head and the codec here, the rest in the cloud, or the whole
    model here when the cloud is unreachable or misses its deadline.

    Args:
        model: the local PyTorch model (the same weights as the cloud's ``model_name``), or
            ``None`` with ``edge``: a head-only runtime (ONNX), which cannot run the whole
            model: ``mode="edge"``, the local fallback, ``mode="auto"`` and streaming need
            ``model`` (without it a cloud failure raises :class:`CloudError`).
        cloud: the server's client; ``None`` runs every utterance on the edge.
        decoder: the decoder of the local fallback (default: the model's convention).
        model_name: the name the server serves the model under (default: ``model.name``, or
            ``edge.name``).
        slowdown: emulate a device ``slowdown`` times slower than this machine: after each
            local compute step (head + encode, or the whole model) the client waits
            ``slowdown - 1`` times as long as the step took, and reports the stretched time
            (1: this machine as it is). How ``bench e2e`` stands a phone-class CPU in.
        planner: decides each utterance of ``mode="auto"`` (profiles of this device and of
            the server, for this model; :class:`~splitasr.planner.policy.Planner`).
        estimator: the network as this client has seen it (default: a fresh
            :class:`NetworkEstimator`, prior 100 ms and 1000 kbit/s). Its clock is
            ``clock`` (``time.monotonic``): ``now`` of every call is ``clock()``.
        budget: the WER (and energy) budget of every decision.
        workers: the server's ``--workers`` (the planner's queue term divides by it).
        probe_timeout_s: a probe's deadline.
        edge: the head and codec runtime (default: :class:`splitasr.pipeline.Edge` of
            ``model``); required when ``model`` is ``None``.
    """

    def __init__(
        self,
        model: SplitModel | None,
        cloud: CloudClient | None,
        decoder: Decoder | None = None,
        model_name: str | None = None,
        slowdown: float = 1.0,
        planner: Planner | None = None,
        estimator: NetworkEstimator | None = None,
        budget: Budget = NO_BUDGET,
        workers: int = 1,
        probe_timeout_s: float = DEFAULT_PROBE_TIMEOUT_S,
        clock: Callable[[], float] = time.monotonic,
        edge: HeadRuntime | None = None,
    ):
        if not slowdown >= 1.0:
            raise SplitASRError(f"slowdown {slowdown}: must be >= 1 (1: this machine as it is)")
        if workers < 1 or not probe_timeout_s > 0:
            raise SplitASRError("workers must be >= 1 and probe_timeout_s > 0")
        self.model, self.cloud, self.slowdown = model, cloud, float(slowdown)
        if model is not None:
            from splitasr.pipeline import Edge

            self.edge: HeadRuntime = edge if edge is not None else Edge(model)
            self.model_name = model_name or model.name
        elif edge is None:
            raise SplitASRError("EdgeClient needs a model (PyTorch) or an edge runtime (edge=OnnxEdge(...))")
        else:
            self.edge, self.model_name = edge, model_name or edge.name
        self._decoder = decoder
        if planner is not None:
            _check_planner(planner, self._whole_model("mode auto"))
        self.planner, self.budget, self.workers = planner, budget, workers
        self.estimator = estimator if estimator is not None or planner is None else NetworkEstimator()
        self.probe_timeout_s, self.clock = probe_timeout_s, clock
        self._stream_planner: Planner | None = None
        self._est_lock = threading.Lock()  # the estimator is fed by replies and background probes
        self._probing: threading.Thread | None = None
        if self.planner is not None and self.cloud is not None:
            self._probe({})  # on connecting: the first decision reads a measured link

    @property
    def decoder(self) -> Decoder:
        if self._decoder is None:
            self._decoder = self._whole_model("the local decoder").make_decoder()
        return self._decoder

    def _whole_model(self, what: str) -> SplitModel:
        """The local PyTorch model, or one line saying that ``what`` needs it."""
        if self.model is None:
            raise SplitASRError(
                f"{what} needs the whole model on this device (--runtime torch); "
                "the ONNX edge runs the head only: use split or cloud mode"
            )
        return self.model

    def transcribe(
        self,
        wave: torch.Tensor | np.ndarray,
        point: str | None = None,
        codec: str | None = None,
        mode: str = "split",
        beam: int | None = None,
        timeout_s: float | None = None,
    ) -> EdgeResult:
        """One waveform ``(S,)`` float32 at 16 kHz (a tensor for the PyTorch runtime, an array
        for ONNX). ``mode``: ``split`` (head to ``point``, ``codec``,
        tail in the cloud), ``cloud`` (the audio itself, ``codec`` default pcm16+pack),
        ``edge`` (the whole model here), or ``auto`` (the planner chooses; needs
        ``EdgeClient(planner=...)``; no ``point`` or ``codec``)."""
        if mode not in MODES:
            raise SplitASRError(f"unknown mode {mode!r}; choose from {', '.join(MODES)}")
        if mode == "auto":
            if point or codec:
                raise SplitASRError("mode auto chooses the split point and codec: give neither")
            return self._auto(wave, beam, timeout_s)
        t0 = time.perf_counter()
        if mode == "edge" or self.cloud is None:
            reason = None if mode == "edge" else "no cloud configured"
            self._whole_model("mode edge" if mode == "edge" else "running without a cloud")
            return self._local(wave, mode, t0, reason, {})
        if mode == "cloud":
            point, codec = AUDIO, codec or CLOUD_CODEC
        if not point or not codec:
            raise SplitASRError("split mode needs a split point and a codec")
        return self._offload(wave, point, codec, mode, beam, timeout_s, t0, {})

    def _offload(
        self,
        wave: torch.Tensor,
        point: str,
        codec: str,
        mode: str,
        beam: int | None,
        timeout_s: float | None,
        t0: float,
        timings: dict[str, float],
    ) -> EdgeResult:
        """Head and codec here, the rest in the cloud; the edge finishes alone when the
        cloud fails (``fallback``), and re-raises when it refuses the request itself."""
        sent = self.edge.encode(wave, point, codec)
        self._stall(sent.head_ms + sent.encode_ms)
        f = self.slowdown
        timings = {**timings, "head": round(f * sent.head_ms, 3), "encode": round(f * sent.encode_ms, 3)}
        request = self.cloud.request(sent.payload, self.model_name, point, sent.codec, beam)  # type: ignore[union-attr]
        t1 = time.perf_counter()
        try:
            reply = self.cloud.call(request, timeout_s)  # type: ignore[union-attr]
        except CloudError as exc:
            if exc.code in _REFUSED:
                raise
            if self.model is None:  # nothing here can finish the utterance: the cloud's reason
                why = f"{exc.details} (no local fallback: the edge runs the head only)"
                raise CloudError(exc.code, why) from None
            timings["round_trip"] = _ms(time.perf_counter() - t1)
            return self._local(wave, mode, t0, f"{exc.code.name}: {exc.details}", timings)
        replied_ns = time.time_ns()
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
            request_timing=RequestTiming(
                sent_s=request.sent_unix_ns / 1e9,
                replied_s=replied_ns / 1e9,
                server_total_ms=s.total_ms,
                bytes_up=request.ByteSize(),
                server_received_s=reply.received_unix_ns / 1e9 if reply.received_unix_ns else None,
            ),
        )

    # ------------------------------------------------------------------ mode auto

    def _probe_if_due(self, timings: dict[str, float]) -> None:
        """Probe (:meth:`CloudClient.probe`) when the estimator says the estimate is stale
        or an outage is due a retry. The utterance does not wait: the probe runs on a
        background thread (one at a time) and its answer reaches the estimator for a later
        decision. Only when the link was never measured does the utterance wait for it (its
        wall time goes to ``timings["probe"]``)."""
        est = self.estimator
        if self.cloud is None or est is None:
            return
        with self._est_lock:
            due = est.probe_due(self.clock())
            never = est.measured_at is None and est.failures == 0
        if not due or (self._probing is not None and self._probing.is_alive()):
            return
        if never:
            self._probe(timings)
            return
        self._probing = threading.Thread(target=self._probe, args=({},), name="splitasr-probe", daemon=True)
        self._probing.start()

    def _probe(self, timings: dict[str, float]) -> None:
        """One probe; its round trip (or failure) goes to the estimator."""
        t = time.perf_counter()
        try:
            rtt = self.cloud.probe(self.probe_timeout_s)  # type: ignore[union-attr]
        except CloudError:
            with self._est_lock:
                self.estimator.observe_failure(self.clock())  # type: ignore[union-attr]
        else:
            with self._est_lock:
                self.estimator.observe_probe(self.clock(), rtt)  # type: ignore[union-attr]
        timings["probe"] = _ms(time.perf_counter() - t)

    def wait_for_probe(self, timeout_s: float | None = None) -> None:
        """Wait for a background probe in flight (tests, and before closing the cloud client)."""
        if self._probing is not None:
            self._probing.join(timeout_s)

    def _load(self) -> ServerLoad:
        """The server's load from the last reply, with this client's idea of its workers."""
        last = self.estimator.load  # type: ignore[union-attr]
        return ServerLoad(last.queue_depth, last.mean_service_ms, self.workers)

    def _decide(self, planner: Planner, seconds: float) -> Decision:
        with self._est_lock:
            est, load = self.estimator.estimate(), self._load()  # type: ignore[union-attr]
        if self.cloud is None and not est.outage:  # no cloud: as an outage, edge-only alone
            est = replace(est, outage=True)
        return planner.decide(seconds, est, load, self.budget)

    def _observe(self, r: EdgeResult) -> None:
        """Feed one offloaded utterance's outcome back into the estimator."""
        est = self.estimator
        if est is None:
            return
        load = r.server_load or {}
        with self._est_lock:
            if r.fallback:
                est.observe_failure(self.clock())
            elif r.request_timing is not None:
                est.observe_request(
                    self.clock(),
                    r.request_timing,
                    ServerLoad(
                        int(load.get("queue_depth", 0)), float(load.get("mean_service_ms", 0.0)), self.workers
                    ),
                )

    def _auto(self, wave: torch.Tensor, beam: int | None, timeout_s: float | None) -> EdgeResult:
        if self.planner is None:
            raise SplitASRError("mode auto needs a planner: EdgeClient(planner=Planner(edge, cloud))")
        t0 = time.perf_counter()
        timings: dict[str, float] = {}
        self._probe_if_due(timings)
        d = self._decide(self.planner, wave.shape[-1] / self._whole_model("mode auto").sample_rate)
        o = d.option
        if o.kind == "edge":
            r = self._local(wave, "edge", t0, None, timings)
        else:
            mode = "cloud" if o.kind == "cloud" else "split"
            r = self._offload(wave, o.point, o.codec, mode, beam, timeout_s, t0, timings)  # type: ignore[arg-type]
            self._observe(r)
        r.decision, r.predicted_ms, r.plan = o.label, round(d.predicted_ms, 3), d
        return r

    def streaming_planner(self) -> Planner:
        """The planner restricted to what streams: edge-only, and the options whose point
        streams for this model with a codec that decodes at that point (built once)."""
        if self.planner is None:
            raise SplitASRError("mode auto needs a planner: EdgeClient(planner=Planner(edge, cloud))")
        if self._stream_planner is None:
            keep = []
            for o in self.planner.options:
                if o.kind != "edge":
                    try:
                        self.edge.stream(o.point, o.codec)  # type: ignore[arg-type]
                    except SplitASRError:
                        continue
                keep.append(o.label)
            p = self.planner
            self._stream_planner = Planner(p.edge, p.cloud, p.wer, p.power, options=keep)
        return self._stream_planner

    def _stall(self, compute_ms: float) -> None:
        """Wait out the rest of an emulated slower device's ``compute_ms``."""
        if self.slowdown > 1.0:
            time.sleep((self.slowdown - 1.0) * compute_ms / 1000)

    def transcribe_stream(
        self,
        audio: torch.Tensor | Iterable[torch.Tensor],
        point: str | None = None,
        codec: str | None = None,
        chunk_ms: float = DEFAULT_CHUNK_MS,
        realtime: bool = False,
        beam: int | None = None,
        timeout_s: float | None = None,
        max_seconds: float = 120.0,
        mode: str = "split",
    ) -> EdgeResult:
        """One utterance streamed as it is recorded: the head runs chunk by chunk here
        (``Edge.stream``), each chunk's payload goes up as soon as it is made, and the
        cloud runs the tail when the utterance ends.

        Args:
            audio: a waveform ``(S,)`` at 16 kHz, cut into ``chunk_ms`` chunks (paced at 1x
                with ``realtime``), or an iterable of chunks ``(s,)`` that arrive as they
                are recorded (:func:`microphone`).
            point, codec: a streamable split point (``model.streamable_points``; ``audio``
                with ``pcm16+pack`` is cloud-only streaming) and its codec.
            timeout_s: the deadline after the audio ends (the call's gRPC deadline is this
                plus the audio's length, ``max_seconds`` for an iterable).
            mode: ``split`` (``point`` and ``codec``), ``cloud`` (``audio``, ``codec`` default
                pcm16+pack) or ``auto``: the planner decides once for this utterance, before
                its first chunk, among edge-only and the options that stream
                (:meth:`streaming_planner`), from the utterance's length (``max_seconds``
                for an iterable); the plan never changes within an utterance, only between
                them. Edge-only collects the audio and runs the whole model after it ends.

        Returns:
            :class:`EdgeResult` whose timings (ms) add to the unary call's: ``after_speech``
            (the last sample available -> the transcript here: what a user waits),
            ``edge_finish`` (the device's work after the last sample: the head on the last
            chunk, its last frames and their encoding), ``server`` (the server's compute after the last chunk
            arrived: queue, tail, text), ``network`` (``after_speech - edge_finish -
            server``: the link and the protocol's share), ``head`` and ``encode`` (device
            work over the whole stream, mostly during speech), ``total`` (first sample ->
            transcript), and ``chunks``. On a cloud failure the edge finishes the whole
            utterance locally (``fallback``), as :meth:`transcribe` does.
        """
        if self.cloud is None:
            raise SplitASRError("streaming needs a cloud (CloudClient)")
        model = self._whole_model("streaming")
        if chunk_ms <= 0:
            raise SplitASRError(f"chunk_ms {chunk_ms}: must be positive")
        if mode not in ("split", "cloud", "auto"):
            raise SplitASRError(f"unknown streaming mode {mode!r}; choose from split, cloud, auto")
        rate = model.sample_rate
        if hasattr(audio, "shape"):  # one waveform (a tensor or an array), not an iterable
            seconds = audio.shape[-1] / rate
            source = _paced(audio.reshape(-1), max(1, round(chunk_ms * rate / 1000)), rate, realtime)
        else:
            seconds, source = max_seconds, iter(audio)
        t0 = time.perf_counter()
        timings: dict[str, float] = {}
        if mode == "auto":
            if point or codec:
                raise SplitASRError("mode auto chooses the split point and codec: give neither")
            planner = self.streaming_planner()
            self._probe_if_due(timings)
            d = self._decide(planner, seconds)
            o = d.option
            if o.kind == "edge":
                r = self._stream_local(source, max_seconds, t0, timings)
            else:
                r = self._stream(source, seconds, o.point, o.codec, beam, timeout_s, max_seconds, t0, timings)  # type: ignore[arg-type]
                self._observe(r)
            r.decision, r.predicted_ms, r.plan = o.label, round(d.predicted_ms, 3), d
            return r
        if mode == "cloud":
            point, codec = AUDIO, codec or CLOUD_CODEC
        if not point or not codec:
            raise SplitASRError("streaming needs a split point and a codec (or mode cloud or auto)")
        return self._stream(source, seconds, point, codec, beam, timeout_s, max_seconds, t0, timings)

    def _stream_local(
        self, source: Iterator[torch.Tensor], max_seconds: float, t0: float, timings: dict[str, float]
    ) -> EdgeResult:
        """Edge-only for a streamed utterance: collect it as it comes, then the whole model."""
        import torch

        kept: list[torch.Tensor] = []
        received = 0
        for samples in source:
            samples = torch.as_tensor(samples, dtype=torch.float32).reshape(-1)
            kept.append(samples)
            received += samples.shape[0]
            if received > max_seconds * self.model.sample_rate:
                raise SplitASRError(f"the audio is longer than {max_seconds:g} s")
        speech_end = time.perf_counter()
        r = self._local(torch.cat(kept) if kept else torch.zeros(0), "edge", t0, None, timings)
        r.timings["after_speech"] = _ms(time.perf_counter() - speech_end)
        return r

    def _stream(
        self,
        source: Iterator[torch.Tensor],
        seconds: float,
        point: str,
        codec: str,
        beam: int | None,
        timeout_s: float | None,
        max_seconds: float,
        t0: float,
        timings: dict[str, float],
    ) -> EdgeResult:
        """One utterance through ``Edge.stream`` and ``TranscribeStream`` (see
        :meth:`transcribe_stream`)."""
        import torch

        rate = self.model.sample_rate
        stream = self.edge.stream(point, codec)  # PipelineError for a point that does not stream
        feed = _StreamFeed(stream, self.model_name, point, beam)
        call = self.cloud.stream_future(feed.requests(), (timeout_s or self.cloud.timeout_s) + seconds)  # type: ignore[union-attr]
        kept: list[torch.Tensor] = []  # the edge's fallback needs the whole utterance
        received = 0
        speech_end = sent_end = t0
        try:
            for samples in source:
                speech_end = time.perf_counter()  # when this chunk's last sample is available
                samples = torch.as_tensor(samples, dtype=torch.float32).reshape(-1)
                kept.append(samples)
                received += samples.shape[0]
                if received > max_seconds * rate:
                    raise SplitASRError(f"the audio is longer than {max_seconds:g} s")
                if not call.done():  # once the cloud has failed, only collect the audio
                    spent = stream.head_ms + stream.encode_ms
                    payloads = stream.push(samples)
                    self._stall(stream.head_ms + stream.encode_ms - spent)
                    feed.send(payloads)
            if not call.done():
                spent = stream.head_ms + stream.encode_ms
                payloads = stream.finish()
                self._stall(stream.head_ms + stream.encode_ms - spent)
                feed.send(payloads, last=True, floor=stream.floor)
            sent_end = time.perf_counter()
        except BaseException:
            call.cancel()
            raise
        finally:
            feed.close()
        try:
            reply = call.result()
        except grpc.RpcError as exc:
            code, details = exc.code(), exc.details() or ""
            if code in _REFUSED:
                raise CloudError(code, details) from None
            wave = torch.cat(kept) if kept else torch.zeros(0)
            return self._local(wave, "stream", t0, f"{code.name}: {details}", timings)
        done = time.perf_counter()
        s = reply.timings
        after = _ms(done - speech_end)
        edge_finish = _ms(sent_end - speech_end)
        timings = {
            **timings,
            "head": round(self.slowdown * stream.head_ms, 3),
            "encode": round(self.slowdown * stream.encode_ms, 3),
            "edge_finish": edge_finish,
            "after_speech": after,
            "network": round(after - edge_finish - s.total_ms, 3),
            "queue": s.queue_ms,
            "decode": s.decode_ms,
            "tail": s.tail_ms,
            "text": s.text_ms,
            "server": s.total_ms,
            "total": _ms(done - t0),
            "chunks": feed.seq,
        }
        return EdgeResult(
            text=reply.text,
            mode="stream",
            model=self.model_name,
            point=point,
            codec=stream.codec.name,
            bytes_up=feed.bytes_up,
            timings=timings,
            request_id=reply.request_id,
            server_load={
                "queue_depth": reply.load.queue_depth,
                "mean_service_ms": reply.load.mean_service_ms,
                "open_streams": reply.load.open_streams,
            },
            # what the estimator can use: the network time after the last chunk (an RTT
            # sample; the upload is spread over the speech, so no bandwidth sample)
            request_timing=RequestTiming(sent_end, done, s.total_ms, 0),
        )

    def _local(self, wave, mode: str, t0: float, reason: str | None, timings: dict) -> EdgeResult:
        from splitasr.pipeline import recognise

        t = time.perf_counter()
        text = recognise(self._whole_model("edge-only"), wave, self.decoder)
        spent = _ms(time.perf_counter() - t)
        self._stall(spent)
        timings = {**timings, "edge": round(self.slowdown * spent, 3), "total": _ms(time.perf_counter() - t0)}
        return EdgeResult(text, mode, self.model_name, None, None, timings=timings, fallback=reason)


class _StreamFeed:
    """The request side of one ``TranscribeStream`` call: chunks are queued by the caller
    as payloads are made and handed to gRPC (on its thread) in order; the first names the
    model, point, codec and beam, the last is marked (with the head's floor, if any)."""

    def __init__(self, stream, model: str, point: str, beam: int | None):
        self.first = pb.AudioChunk(model=model, point=point, codec=stream.codec.name)
        self.first.request_id = secrets.randbits(64)
        if beam is not None:
            self.first.beam = beam
        self.seq = self.bytes_up = 0
        self._queue: queue.SimpleQueue[pb.AudioChunk | None] = queue.SimpleQueue()

    def send(self, payloads: list[bytes], last: bool = False, floor: float | None = None) -> None:
        """Queue one chunk per payload; with ``last``, the final one ends the utterance
        (an empty chunk when there is nothing left to send)."""
        if last and not payloads:
            payloads = [b""]
        for i, payload in enumerate(payloads):
            chunk = pb.AudioChunk() if self.seq else pb.AudioChunk.FromString(self.first.SerializeToString())
            chunk.seq, chunk.payload, chunk.sent_unix_ns = self.seq, payload, time.time_ns()
            if last and i == len(payloads) - 1:
                chunk.last = True
                if floor is not None:
                    chunk.floor = floor
            self._queue.put(chunk)
            self.seq += 1
            self.bytes_up += len(payload)

    def close(self) -> None:
        """No more chunks: the request stream ends (without ``last`` only on an error)."""
        self._queue.put(None)

    def requests(self) -> Iterator[pb.AudioChunk]:
        while (chunk := self._queue.get()) is not None:
            yield chunk


def _paced(wave: torch.Tensor, size: int, rate: int, realtime: bool) -> Iterator[torch.Tensor]:
    """``wave`` in chunks of ``size`` samples; with ``realtime``, each when its last sample
    would have been recorded (1x from the first call)."""
    start = time.perf_counter()
    for i in range(0, max(wave.shape[0], 1), size):
        chunk = wave[i : i + size]
        if realtime:
            wait = start + (i + chunk.shape[0]) / rate - time.perf_counter()
            if wait > 0:
                time.sleep(wait)
        yield chunk


def microphone(seconds: float, chunk_ms: float = DEFAULT_CHUNK_MS, rate: int = 16000) -> Iterator[np.ndarray]:
    """Record ``seconds`` from the default input device in ``chunk_ms`` chunks ``(s,)``
    float32 (NumPy arrays), each yielded as soon as it is recorded (``sounddevice``, an optional package,
    imported here so that nothing else needs it).

    Raises:
        SplitASRError: sounddevice is not installed (at once), or there is no input device
            (when the first chunk is asked for).
    """
    try:
        import sounddevice
    except ImportError:
        raise SplitASRError("--mic needs the sounddevice package: pip install sounddevice") from None
    return _record(sounddevice, round(seconds * rate), max(1, round(chunk_ms * rate / 1000)), rate)


def _record(sounddevice, total: int, size: int, rate: int) -> Iterator[np.ndarray]:
    blocks: queue.SimpleQueue = queue.SimpleQueue()

    def callback(indata, frames, _time, _status):
        blocks.put(indata[:, 0].copy())

    try:
        stream = sounddevice.InputStream(
            samplerate=rate, channels=1, dtype="float32", blocksize=size, callback=callback
        )
    except Exception as exc:  # PortAudioError and friends: no device
        raise SplitASRError(f"cannot open the microphone: {_one_line(exc)}") from None
    with stream:
        got = 0
        while got < total:
            block = blocks.get()
            got += block.shape[0]
            yield block.astype(np.float32, copy=False)


def _check_planner(planner: Planner, model: SplitModel) -> None:
    """The planner's profiles are for ``model``, and every option it may pick runs here."""
    if planner.edge.model != model.name:
        raise SplitASRError(
            f"the planner's profiles are for {planner.edge.model!r}, the model is {model.name!r}"
        )
    for o in planner.options:
        for p in (o.point, o.resume):
            if p is not None and p not in model.split_points:
                raise SplitASRError(f"planner option {o.label!r}: {model.name} has no split point {p!r}")


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def _ms(seconds: float) -> float:
    return round(1000 * seconds, 3)


__all__ = [
    "CloudClient",
    "CloudError",
    "EdgeClient",
    "EdgeResult",
    "HEALTH_SERVICE",
    "HeadRuntime",
    "MODES",
    "microphone",
]
