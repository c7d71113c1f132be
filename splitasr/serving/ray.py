"""The cloud tier on Ray Serve: the tails as a deployment of replicas, the embedded
server's gRPC service in front (``splitasr serve --backend ray``, docs/serving.md).

Architecture::

    devices --gRPC--> ingress process (CloudService: auth, limits, checks, logs, streams)
                      RayTails --DeploymentHandle--> TailReplica x N (Ray actors)
                                                     @serve.batch -> Cloud.transcribe_batch

* :class:`TailReplica` (one Ray actor per replica) loads a :class:`~splitasr.pipeline.Cloud`
  per model once, sets its PyTorch threads, and runs tails on one worker thread of its
  own, so its event loop keeps gathering the next batch while one runs. Requests reach it
  as bytes and short strings; what comes back is a :class:`ReplicaReply`, whose result is
  a :class:`~splitasr.pipeline.Decoded` or a :class:`TailError` (a bad payload fails only
  its own request: errors are values, never an exception that would fail the batch).
* Batching is Serve's ``@serve.batch`` (``max_batch``, ``max_wait_ms``). As in the embedded
  server, a request that is the only call in the ingress skips the batching wait
  (``alone``: it runs at once on the replica's worker).
* :class:`RayTails` is the ingress's :class:`~splitasr.transport.server.TailRunner`: it
  awaits the handle's responses on the server's event loop (no thread per request). A
  stream's chunks are checked by the ingress as they arrive and their payloads kept
  (at most ``max_stream_bytes``); at the chunk marked ``last`` they go to a replica
  together, which decodes them as :class:`~splitasr.pipeline.CloudStream` does and runs
  the tail through the same batch queue.
* :func:`serve_ray` starts Ray (a local instance, or joins ``address``), deploys, serves gRPC
  until SIGTERM/SIGINT, and then removes the deployment and stops what it started.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import signal
import socket
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import NamedTuple

import ray
import ray._private.utils as ray_utils
import torch
from ray import serve
from ray.exceptions import TaskCancelledError

from splitasr.audio import DEFAULT_MAX_SECONDS
from splitasr.decoding import Decoder
from splitasr.errors import ConfigError, SplitASRError
from splitasr.pipeline import Activation, Cloud, Decoded
from splitasr.transport.server import (
    DEFAULT_MAX_MESSAGE_BYTES,
    DEFAULT_MAX_WAIT_MS,
    TailOutcome,
    TailUnavailable,
    load_clouds,
    serve_forever,
)

log = logging.getLogger("splitasr.serving.ray")

APP_NAME = "splitasr"  # the Serve application (one ingress per application)
DEPLOYMENT_NAME = "TailReplica"
LOCAL_OBJECT_STORE_BYTES = 256 * 1024 * 1024  # requests go inline or as a few MB: a small store
STARTUP_POLL_S = 0.5
PROBE_TIMEOUT_S = 5.0
# Handle calls by value over Serve's direct gRPC channel to the replica, not through Ray
# object references: 1.4-1.8 ms a call instead of 2.5-3.5 ms (a trivial method, Ray
# 2.60, this 2-core machine under load). The same transport Serve's own gRPC proxy uses.
BY_REFERENCE = False
QUIET_LOGS = {"log_level": "WARNING", "enable_access_log": False}  # no log line per request


@dataclass(frozen=True)
class RaySettings:
    """How ``splitasr serve --backend ray`` deploys the tails.

    Args:
        models: the model names every replica loads.
        replicas: replicas to run (the initial count with ``autoscale``).
        threads: PyTorch threads per replica (and the CPUs each replica asks Ray for).
        max_batch: most requests one replica's tail runs as one batch (1: no batching).
        max_wait_ms: how long a batch waits for more requests after its first one.
        max_seconds: longest audio a payload may stand for.
        decoder_precision: Whisper's text decoder in every replica (None: the default).
        autoscale: ``(min, max)`` replicas for Serve's autoscaler; None: a fixed count.
        target_ongoing: with ``autoscale``: requests per replica the autoscaler aims at.
        address: an existing Ray cluster (``auto``, ``HOST:PORT`` of its head, or
            ``ray://HOST:PORT``); None starts a local Ray instance and stops it at the end.
        num_cpus: the local instance's CPUs (default: the cores, or replicas x threads
            when that is more, so that every replica is placed).
        max_stream_bytes: most payload bytes one stream may send (kept by the ingress).
        startup_timeout_s: how long the replicas may take to come up.
    """

    models: tuple[str, ...]
    replicas: int = 1
    threads: int = 1
    max_batch: int = 8
    max_wait_ms: float = DEFAULT_MAX_WAIT_MS
    max_seconds: float = DEFAULT_MAX_SECONDS
    decoder_precision: str | None = None
    autoscale: tuple[int, int] | None = None
    target_ongoing: float | None = None
    address: str | None = None
    num_cpus: int | None = None
    max_stream_bytes: int = 2 * DEFAULT_MAX_MESSAGE_BYTES
    startup_timeout_s: float = 300.0

    def check(self) -> None:
        """Raise :class:`ConfigError` (one line) for settings Serve would refuse or hang on."""
        if not self.models:
            raise ConfigError("no models to serve")
        if self.replicas < 1 or self.threads < 1:
            raise ConfigError(f"--replicas {self.replicas} and --threads {self.threads} must be at least 1")
        if self.max_batch < 1 or self.max_wait_ms < 0:
            raise ConfigError("--max-batch must be at least 1 and --max-wait-ms not negative")
        if self.autoscale is not None:
            low, high = self.autoscale
            if not 0 <= low <= high or high < 1:
                raise ConfigError(f"--autoscale {low}:{high}: need 0 <= MIN <= MAX and MAX >= 1")
        if self.target_ongoing is not None and self.target_ongoing <= 0:
            raise ConfigError(f"--target-ongoing {self.target_ongoing}: must be positive")
        if self.num_cpus is not None and self.num_cpus < 1:
            raise ConfigError(f"--ray-cpus {self.num_cpus}: must be at least 1")
        if self.max_stream_bytes < 1 or self.startup_timeout_s <= 0:
            raise ConfigError("the stream byte limit and the startup timeout must be positive")

    @property
    def most_replicas(self) -> int:
        return max(self.replicas, self.autoscale[1]) if self.autoscale else self.replicas

    def deployment_options(self) -> dict:
        """:meth:`ray.serve.Deployment.options` for the tail deployment."""
        opts = {
            "ray_actor_options": {"num_cpus": self.threads},
            # one batch running and one gathering: a replica never holds more than that
            "max_ongoing_requests": 2 * self.max_batch,
            "max_constructor_retry_count": 2,  # a model that does not load fails the start
            "logging_config": QUIET_LOGS,
        }
        if self.autoscale is None:
            opts["num_replicas"] = self.replicas
        else:
            low, high = self.autoscale
            opts["autoscaling_config"] = {
                "min_replicas": low,
                "max_replicas": high,
                "initial_replicas": min(max(self.replicas, low), high),
                "target_ongoing_requests": self.target_ongoing or float(self.max_batch),
            }
        return opts


@dataclass(frozen=True)
class TailError:
    """A request the replica could not serve, as a value: ``code`` is the gRPC status
    name (``INVALID_ARGUMENT``: the payload, point or codec; ``INTERNAL``: a bug, e.g. a
    model the ingress serves and the replica does not) and ``message`` one line."""

    code: str
    message: str


@dataclass(frozen=True)
class ReplicaReply:
    """A replica's answer to one request: the text and timings, or the error; ``run_ms``
    is the time from the start of its batch's work to its result (the ingress counts the
    rest as queueing); ``frames`` are a stream's decoded frames (0 for unary calls)."""

    result: Decoded | TailError
    run_ms: float
    frames: int = 0


class _Item(NamedTuple):
    """One request in a replica's batch; a stream's payload is its decoded
    :class:`~splitasr.pipeline.Activation` (``h (1, T, C)`` at the stream's point)."""

    model: str
    payload: bytes | Activation
    point: str
    codec: str
    beam: int | None


class RemoteTailError(Exception):
    """A replica's ``INTERNAL`` error, re-raised in the ingress (logged there, answered
    ``INTERNAL``)."""


@serve.deployment(name=DEPLOYMENT_NAME)
class TailReplica:
    """One replica of the tail tier: the models, loaded once, and one worker thread.

    Args:
        models: model names to load (each a :class:`Cloud`; read-only after load).
        max_seconds: longest audio a payload may stand for.
        threads: PyTorch intra-op threads of this replica.
        max_batch / max_wait_ms: the ``@serve.batch`` settings of :meth:`_batch`.
        decoder_precision: Whisper's text decoder (None: the default).
    """

    def __init__(
        self,
        models: Sequence[str],
        max_seconds: float,
        threads: int,
        max_batch: int,
        max_wait_ms: float,
        decoder_precision: str | None = None,
    ):
        torch.set_num_threads(threads)
        self.clouds: dict[str, Cloud] = load_clouds(
            models, max_seconds=max_seconds, decoder_precision=decoder_precision
        )
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tail")
        self._decoders: dict[tuple[str, int], Decoder] = {}  # built on the worker, on first use
        self._batch.set_max_batch_size(max_batch)
        self._batch.set_batch_wait_timeout_s(max_wait_ms / 1000)

    async def transcribe(
        self, model: str, payload: bytes, point: str, codec: str, beam: int | None, alone: bool
    ) -> ReplicaReply:
        """One payload's text; ``alone``: no other call is in the ingress, skip the wait."""
        return await self._one(_Item(model, payload, point, codec, beam), alone)

    async def transcribe_stream(
        self,
        model: str,
        payloads: list[bytes],
        point: str,
        codec: str,
        beam: int | None,
        floor: float | None,
        alone: bool,
    ) -> ReplicaReply:
        """One streamed utterance's text from its chunks' payloads, in order."""
        loop = asyncio.get_running_loop()
        try:
            act = await loop.run_in_executor(
                self._worker, self._decode_stream, model, payloads, point, codec, floor
            )
        except Exception as exc:  # noqa: BLE001 - this request only
            return ReplicaReply(_tail_error(exc), 0.0)
        reply = await self._one(_Item(model, act, point, codec, beam), alone)
        return replace(reply, frames=int(act.lens[0]))

    async def _one(self, item: _Item, alone: bool) -> ReplicaReply:
        if alone:
            return (await self._run([item]))[0]
        return await self._batch(item)

    @serve.batch(max_batch_size=8, batch_wait_timeout_s=DEFAULT_MAX_WAIT_MS / 1000)
    async def _batch(self, items: list[_Item]) -> list[ReplicaReply]:
        return await self._run(items)

    async def _run(self, items: list[_Item]) -> list[ReplicaReply]:
        return await asyncio.get_running_loop().run_in_executor(self._worker, self._work, items)

    def _decode_stream(
        self, model: str, payloads: list[bytes], point: str, codec: str, floor: float | None
    ) -> Activation:
        cloud = self._cloud(model)
        stream = cloud.stream(point, codec)
        for payload in payloads:
            stream.add(payload)
        return stream.end(floor)

    def _cloud(self, model: str) -> Cloud:
        if model not in self.clouds:
            raise RuntimeError(_not_loaded(model, self.clouds))
        return self.clouds[model]

    def _decoder(self, model: str, beam: int | None) -> Decoder | None:
        if beam is None:
            return None  # the Cloud's default: the model's convention
        key = (model, beam)
        if key not in self._decoders:  # only the worker thread builds and reads them
            self._decoders[key] = self.clouds[model].model.make_decoder(beam=beam)
        return self._decoders[key]

    def _work(self, items: list[_Item]) -> list[ReplicaReply]:
        """The tails of a batch, one :meth:`Cloud.transcribe_batch` per model (on the worker)."""
        t0 = time.perf_counter()
        results: list[Decoded | TailError | None] = [None] * len(items)
        by_model: dict[str, list[int]] = {}
        for i, item in enumerate(items):
            if item.model in self.clouds:
                by_model.setdefault(item.model, []).append(i)
            else:
                results[i] = _tail_error(RuntimeError(_not_loaded(item.model, self.clouds)))
        for model, rows in by_model.items():
            try:
                batch = [
                    (items[i].payload, items[i].point, items[i].codec, self._decoder(model, items[i].beam))
                    for i in rows
                ]
                got = self.clouds[model].transcribe_batch(batch)
            except Exception as exc:  # noqa: BLE001 - a bug in the group: its requests report it
                got = [exc] * len(rows)
            for i, g in zip(rows, got, strict=True):
                results[i] = g if isinstance(g, Decoded) else _tail_error(g)
        run_ms = round(1000 * (time.perf_counter() - t0), 3)
        return [ReplicaReply(r, run_ms) for r in results]  # type: ignore[arg-type]


def _not_loaded(model: str, clouds: dict[str, Cloud]) -> str:
    """The ingress checked the name against the same list: a replica without the model
    means the two disagree (a bug, or a replica of another deployment)."""
    return f"replica has no model {model!r} (it loaded {', '.join(sorted(clouds))})"


def _tail_error(exc: BaseException) -> TailError:
    text = str(exc).strip().splitlines()
    line = text[0] if text else type(exc).__name__
    if isinstance(exc, SplitASRError):
        return TailError("INVALID_ARGUMENT", line)
    log.error("tail failed", exc_info=exc)
    return TailError("INTERNAL", f"{type(exc).__name__}: {line}")


class RayTails:
    """The ingress side: a :class:`~splitasr.transport.server.TailRunner` over the
    deployment's handle (``serve.run``'s :class:`~ray.serve.handle.DeploymentHandle`)."""

    def __init__(self, handle, settings: RaySettings):
        self.models = tuple(settings.models)
        self.settings = settings
        self._unary = handle.options(method_name="transcribe", _by_reference=BY_REFERENCE)
        self._stream = handle.options(method_name="transcribe_stream", _by_reference=BY_REFERENCE)
        self._busy = lambda: 0

    def max_seconds(self, model: str) -> float:
        return self.settings.max_seconds

    def attach(self, busy) -> None:
        self._busy = busy

    def _alone(self, own: int) -> bool:
        """No call but this one in the ingress (``own``: how many times it counts there)."""
        return self.settings.max_batch == 1 or self._busy() <= own

    async def run(self, model: str, payload: bytes, point: str, codec: str, beam: int | None) -> TailOutcome:
        reply = await _await(self._unary.remote(model, payload, point, codec, beam, self._alone(1)))
        return _outcome(reply)

    async def stream(self, model: str, point: str, codec: str, beam: int | None) -> _RayStream:
        return _RayStream(self, model, point, codec, beam)

    async def close(self) -> None:
        """Nothing runs in the ingress; :func:`serve_ray` removes the deployment."""


class _RayStream:
    """A stream's payloads, kept by the ingress until its last chunk (bounded by
    ``max_stream_bytes``), then sent to a replica together."""

    def __init__(self, tails: RayTails, model: str, point: str, codec: str, beam: int | None):
        self.tails, self.model, self.point, self.codec, self.beam = tails, model, point, codec, beam
        self.payloads: list[bytes] = []
        self.bytes = 0

    async def add(self, payload: bytes) -> None:
        limit = self.tails.settings.max_stream_bytes
        if self.bytes + len(payload) > limit:
            raise SplitASRError(f"the stream's payloads passed {limit} bytes")
        self.bytes += len(payload)
        self.payloads.append(payload)

    async def finish(self, floor: float | None) -> TailOutcome:
        payloads, self.payloads = self.payloads, []
        # the stream counts twice in the ingress now: an open stream and a pending tail
        call = self.tails._stream.remote(
            self.model, payloads, self.point, self.codec, self.beam, floor, self.tails._alone(2)
        )
        return _outcome(await _await(call))


async def _await(response) -> ReplicaReply:
    """A handle response's value. Replicas answer every request, errors included, with a
    :class:`ReplicaReply`, so an exception here is Ray's (a replica or the cluster gone,
    Serve refusing more, the transport): :class:`TailUnavailable`."""
    try:
        return await response
    except (TaskCancelledError, asyncio.CancelledError):
        response.cancel()
        raise asyncio.CancelledError() from None
    except Exception as exc:  # noqa: BLE001 - RayError, RayServeException, a transport error
        log.warning("Ray Serve call failed: %s: %s", type(exc).__name__, _first_line(str(exc)))
        raise TailUnavailable(f"the Ray Serve tails failed: {type(exc).__name__}") from None


def _outcome(reply: ReplicaReply) -> TailOutcome:
    started = time.perf_counter() - reply.run_ms / 1000
    result = reply.result
    if isinstance(result, Decoded):
        return TailOutcome(result, started, reply.frames)
    if result.code == "INVALID_ARGUMENT":
        return TailOutcome(SplitASRError(result.message), started, reply.frames)
    return TailOutcome(RemoteTailError(f"{result.code}: {result.message}"), started, reply.frames)


def _probe(address: str) -> None:
    """Refuse, in one line and within seconds, a ``HOST:PORT`` or ``ray://HOST:PORT`` that
    nothing listens on (``ray.init`` would retry for minutes)."""
    if address == "auto":
        return
    hostport = address.removeprefix("ray://")
    host, sep, port = hostport.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ConfigError(f"--address {address}: expected auto, HOST:PORT or ray://HOST:PORT")
    try:
        socket.create_connection((host, int(port)), timeout=PROBE_TIMEOUT_S).close()
    except OSError as exc:
        raise ConfigError(
            f"--address {address}: no Ray cluster reachable there ({exc.strerror or exc})"
        ) from None


def connect(settings: RaySettings) -> bool:
    """Start a local Ray instance, or join ``settings.address``; True when local (ours to stop)."""
    logging.getLogger("ray").setLevel(logging.WARNING)
    logging.getLogger("ray.serve").setLevel(logging.WARNING)
    if settings.address:
        _probe(settings.address)
        try:
            ray.init(address=settings.address, logging_level=logging.WARNING, log_to_driver=True)
        except (ConnectionError, ValueError, RuntimeError) as exc:
            raise ConfigError(
                f"--address {settings.address}: cannot join the Ray cluster ({_first_line(str(exc))}); "
                "a cluster with token authentication also needs RAY_AUTH_MODE=token and its token "
                "(docs/serving.md)"
            ) from None
        return False
    cpus = settings.num_cpus or max(os.cpu_count() or 1, settings.most_replicas * settings.threads)
    ray.init(
        address="local",
        num_cpus=cpus,
        include_dashboard=False,
        object_store_memory=LOCAL_OBJECT_STORE_BYTES,
        logging_level=logging.WARNING,
        log_to_driver=True,
    )
    return True


def deploy(settings: RaySettings, check: Callable[[], None] = lambda: None):
    """Deploy the tails (Serve without its HTTP proxy) and wait until every replica is up;
    the :class:`~ray.serve.handle.DeploymentHandle`. Raises :class:`ConfigError` when the
    application fails or does not come up within ``startup_timeout_s``; ``check`` is called
    while waiting (it raises to give up)."""
    serve.start(proxy_location="Disabled", logging_config=QUIET_LOGS)
    app = TailReplica.options(**settings.deployment_options()).bind(
        list(settings.models),
        settings.max_seconds,
        settings.threads,
        settings.max_batch,
        settings.max_wait_ms,
        settings.decoder_precision,
    )
    # serve.run waits for RUNNING without a time limit (forever, when the cluster lacks the
    # CPUs): deploy without waiting and watch the status here.
    handle = serve._run(app, _blocking=False, name=APP_NAME, route_prefix=None)
    deadline = time.monotonic() + settings.startup_timeout_s
    while True:
        status = serve.status().applications.get(APP_NAME)
        state = status.status if status else "NOT_STARTED"
        if state == "RUNNING":
            return handle
        if state in ("DEPLOY_FAILED", "UNHEALTHY"):
            messages = [status.message, *(d.message for d in status.deployments.values())]
            raise ConfigError(f"the Ray Serve deployment failed: {_reason(messages) or state}")
        if time.monotonic() > deadline:
            raise ConfigError(
                f"the Ray Serve replicas did not come up within {settings.startup_timeout_s:g} s "
                f"({settings.most_replicas} x {settings.threads} CPUs asked; see `ray status`)"
            )
        check()  # a signal to stop (StartupSignals)
        time.sleep(STARTUP_POLL_S)


def _first_line(text: str | None) -> str:
    lines = (text or "").strip().splitlines()
    return lines[0][:300] if lines else ""


def _reason(messages: list[str | None]) -> str:
    """The line of Serve's status messages that names the error (``ModuleNotFoundError:
    No module named ...`` from a replica's traceback), else the first line there is."""
    lines = [line.strip() for m in messages for line in (m or "").splitlines() if line.strip()]
    errors = [line for line in lines if re.match(r"^[\w.]*(Error|Exception): ", line)]
    return (errors or lines or [""])[-1 if errors else 0][:300]


def undeploy(local: bool) -> None:
    """Remove what :func:`deploy` made: on a local instance all of Serve and Ray itself; on
    a shared cluster only this application (other applications keep running)."""
    try:
        if ray.is_initialized():
            if local:
                serve.shutdown()
            else:
                serve.delete(APP_NAME)
    except Exception as exc:  # noqa: BLE001 - stopping goes on; the reason we stop is what matters
        log.warning("removing the Serve application failed: %s", _first_line(str(exc)) or type(exc).__name__)
    finally:
        ray.shutdown()


class StartupSignals:
    """SIGTERM and SIGINT while Ray starts and the replicas load: remembered, and acted on
    at a safe point (:meth:`check` raises KeyboardInterrupt), so that what has started is
    stopped. Interrupting ``ray.init`` half-way (Ray's own SIGTERM handler exits at once)
    leaves Ray's agent processes running with nobody to stop them; so while this is
    installed, ``ray.init`` does not install that handler (Ray 2.60 sets it through
    ``ray._private.utils.set_sigterm_handler``)."""

    def __init__(self):
        self.received: int | None = None

    def __enter__(self) -> StartupSignals:
        self._old = {sig: signal.signal(sig, self._remember) for sig in (signal.SIGTERM, signal.SIGINT)}
        self._ray_setter = ray_utils.set_sigterm_handler
        ray_utils.set_sigterm_handler = lambda handler: None
        return self

    def __exit__(self, *exc) -> None:
        ray_utils.set_sigterm_handler = self._ray_setter
        for sig, old in self._old.items():
            signal.signal(sig, old)

    def _remember(self, signum, frame) -> None:
        self.received = signum

    def check(self) -> None:
        if self.received is not None:
            raise KeyboardInterrupt


def serve_ray(settings: RaySettings, grace_s: float = 10.0, **server_kwargs) -> None:
    """What ``splitasr serve --backend ray`` runs: Ray up, the tails deployed, the gRPC
    ingress until SIGTERM/SIGINT, then everything stopped (a signal during the start
    stops what has started). ``server_kwargs`` are
    :func:`~splitasr.transport.server.serve_forever`'s (host, port, token, limits, TLS)."""
    settings.check()
    local = settings.address is None
    try:
        with StartupSignals() as signals:
            local = connect(settings)
            signals.check()
            handle = deploy(settings, signals.check)
            signals.check()
        asyncio.run(serve_forever(None, grace_s=grace_s, tails=RayTails(handle, settings), **server_kwargs))
    finally:
        undeploy(local)


__all__ = [
    "APP_NAME",
    "RaySettings",
    "RayTails",
    "RemoteTailError",
    "ReplicaReply",
    "TailError",
    "TailReplica",
    "connect",
    "deploy",
    "serve_ray",
    "undeploy",
]
