"""The cloud server: a gRPC (asyncio) front for :class:`splitasr.pipeline.Cloud`.

One :class:`Cloud` per model, loaded once at start and shared by every request; the split
point, codec and beam are fields of each request. ``cloud.transcribe`` is CPU-bound and
runs in a thread pool, so the event loop keeps accepting and answering while tails run.

Errors map to gRPC status codes with a one-line message, and the server keeps serving:

* unknown model -> ``NOT_FOUND``
* unknown split point or codec, malformed or oversized payload, a payload for another
  point or codec (any :class:`SplitASRError`) -> ``INVALID_ARGUMENT``
* a message over ``max_message_bytes`` -> ``RESOURCE_EXHAUSTED`` (gRPC refuses it)
* a token is set and the call's ``authorization: Bearer <token>`` differs -> ``UNAUTHENTICATED``
* anything else -> ``INTERNAL`` (logged with its traceback)

**Dynamic batching** (``max_batch > 1``): requests for one model go into an asyncio queue;
that model's batcher waits for a free worker, takes the first request, waits at most
``max_wait_ms`` for up to ``max_batch - 1`` more (not at all when no other call is in the
server: a lone device does not pay the batching wait), and runs :meth:`Cloud.transcribe_batch`
on the thread pool; each request gets its own result or status (a bad payload fails only
its own request). A request cancelled while queued is dropped from its batch; one cancelled
while its batch runs is simply not answered. ``queue_ms`` includes the batching wait and
``timings.batch_size`` says how many requests the tail ran with. ``max_batch = 1`` runs each
request alone on a worker thread, as before batching existed.

**Streaming** (``TranscribeStream``, docs/transport.md "Streaming"): the first chunk names
the model, point, codec and beam (later chunks may leave them empty or repeat them, never
change them); ``seq`` counts 0, 1, 2, ...; each chunk's payload is decoded on the thread
pool as it arrives (:class:`splitasr.pipeline.CloudStream`, all chunks together bounded by
``max_seconds`` of audio); the chunk with ``last`` ends the utterance and its tail goes
through the same batching queue as unary requests. A gap in ``seq``, a contradicting
field, a stream that ends without ``last`` or passes its frames -> ``INVALID_ARGUMENT``;
more than ``max_streams`` open at once -> ``RESOURCE_EXHAUSTED`` at once; a client that
goes away mid-stream -> its frames are dropped and it is logged as ``CANCELLED``.

Each request and each stream logs one JSON line to the ``splitasr.server`` logger.

**Tail runners**: everything above except where tails run is the service's; the tails are a
:class:`TailRunner`'s. :class:`LocalTails` runs them here (the models loaded in this process,
the thread pool and batching above); :class:`splitasr.serving.ray.RayTails` sends them to a
Ray Serve deployment (``splitasr serve --backend ray``, docs/serving.md).
"""

from __future__ import annotations

import asyncio
import collections
import hmac
import json
import logging
import math
import signal
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import NamedTuple, Protocol

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from splitasr.decoding import Decoder
from splitasr.errors import SplitASRError
from splitasr.pipeline import Cloud, Decoded
from splitasr.transport import splitasr_pb2 as pb
from splitasr.transport import splitasr_pb2_grpc as pb_grpc

log = logging.getLogger("splitasr.server")

SERVICE_NAME = "splitasr.v1.Cloud"
DEFAULT_MAX_MESSAGE_BYTES = 4 * 1024 * 1024  # 2 min of 16-bit PCM is 3.84 MB
MAX_BEAM = 128
RECENT = 64  # requests in the mean service time
DEFAULT_MAX_BATCH = 8
DEFAULT_MAX_WAIT_MS = 5.0
DEFAULT_MAX_STREAMS = 64
CHUNKS_PER_SECOND = 100  # most chunks a stream may send per second of audio it may hold (10 ms each)
CANCEL_GRACE_S = 0.1  # how long a stream that ends without "last" waits to see if it was cancelled


class _StreamRefused(Exception):
    """A stream the server ends with ``code`` and a one-line ``message``."""

    def __init__(self, code: grpc.StatusCode, message: str):
        super().__init__(message)
        self.code, self.message = code, message


class TailOutcome(NamedTuple):
    """What a tail runner gives for one request.

    ``result`` is a :class:`~splitasr.pipeline.Decoded`, or the exception that fails this
    request alone (a :class:`SplitASRError` for a bad payload); ``started`` is when its
    tail began, in this process's ``time.perf_counter()`` (for a remote tail, the arrival
    of the reply less the replica's run time: the queue, the batching wait and the trip
    there count as queueing); ``frames`` are a stream's decoded frames (0 for unary calls).
    """

    result: Decoded | Exception
    started: float
    frames: int = 0


class TailUnavailable(Exception):
    """The tails cannot be reached (a replica or the cluster went away): ``UNAVAILABLE``."""


class TailStream(Protocol):
    """One streamed utterance inside a tail runner: chunk payloads as they arrive (after
    the service checked the chunk), then the tail once the chunk marked ``last`` came."""

    async def add(self, payload: bytes) -> None: ...

    async def finish(self, floor: float | None) -> TailOutcome: ...


class TailRunner(Protocol):
    """Where a :class:`CloudService` runs its tails: :class:`LocalTails` (this process's
    threads, the embedded server) or :class:`splitasr.serving.ray.RayTails` (a Ray Serve
    deployment). The service does the rest (auth, checks, status codes, logs, load), so
    every backend speaks the same protocol with the same replies.

    ``model`` is always one of :attr:`models` and ``beam`` None or within ``1..MAX_BEAM``
    (the service checked both); errors of the payload, point or codec are the runner's
    (returned as ``TailOutcome.result`` or raised, a :class:`SplitASRError` either way).
    """

    models: tuple[str, ...]

    def max_seconds(self, model: str) -> float: ...

    def attach(self, busy: Callable[[], int]) -> None: ...

    async def run(
        self, model: str, payload: bytes, point: str, codec: str, beam: int | None
    ) -> TailOutcome: ...

    async def stream(self, model: str, point: str, codec: str, beam: int | None) -> TailStream: ...

    async def close(self) -> None: ...


class _Queued:
    """A request waiting for its batch: what to run (a payload, or a finished stream's
    :class:`~splitasr.pipeline.Activation`), and the future its handler awaits."""

    __slots__ = ("payload", "point", "codec", "decoder", "future", "started")

    def __init__(self, payload, point, codec, decoder, future):
        self.payload, self.point, self.codec = payload, point, codec
        self.decoder, self.future, self.started = decoder, future, None


class LocalTails:
    """The embedded server's tails: the models loaded in this process, run on a thread
    pool, with the dynamic batching of the module docstring.

    Args:
        clouds: model name -> its :class:`Cloud` (shared, read-only).
        executor: where tails run (default: a pool of ``workers`` threads).
        max_batch: most requests of one model whose tails run as one batch (1: no batching).
        max_wait_ms: how long a batch waits for more requests after its first one.
    """

    def __init__(
        self,
        clouds: Mapping[str, Cloud],
        executor: ThreadPoolExecutor | None = None,
        workers: int = 2,
        max_batch: int = 1,
        max_wait_ms: float = DEFAULT_MAX_WAIT_MS,
    ):
        if max_batch < 1 or max_wait_ms < 0:
            raise SplitASRError(f"max_batch {max_batch} must be >= 1 and max_wait_ms {max_wait_ms} >= 0")
        self.clouds = dict(clouds)
        self.models = tuple(self.clouds)
        self.max_batch, self.max_wait_s = max_batch, max_wait_ms / 1000
        self.workers = executor._max_workers if executor is not None else workers
        self.executor = executor or ThreadPoolExecutor(max_workers=workers, thread_name_prefix="cloud")
        self._decoders: dict[tuple[str, int], Decoder] = {}
        self._decoders_lock = threading.Lock()
        self._busy: Callable[[], int] = lambda: 0
        # Batching machinery, made in the serving loop on first use (one queue and batcher
        # per model, one semaphore of free workers); the models themselves stay read-only.
        self._queues: dict[str, asyncio.Queue[_Queued]] = {}
        self._tasks: set[asyncio.Task] = set()
        self._free: asyncio.Semaphore | None = None

    def max_seconds(self, model: str) -> float:
        return self.clouds[model].max_seconds

    def attach(self, busy: Callable[[], int]) -> None:
        """``busy()``: the calls in the server now (a batch does not wait for more when
        the ones it holds are all there are)."""
        self._busy = busy

    def _decoder(self, name: str, beam: int | None) -> Decoder | None:
        if beam is None:
            return None  # the Cloud's default: the model's convention
        with self._decoders_lock:
            key = (name, beam)
            if key not in self._decoders:
                self._decoders[key] = self.clouds[name].model.make_decoder(beam=beam)
            return self._decoders[key]

    async def _decoder_off_loop(self, name: str, beam: int | None) -> Decoder | None:
        """:meth:`_decoder`, building a missing one on a helper thread: a new beam width can
        load a language model or a tokenizer (0.2-1 s), which must not stall the event loop
        and every other call with it."""
        if beam is None or (name, beam) in self._decoders:
            return self._decoder(name, beam)
        return await asyncio.get_running_loop().run_in_executor(None, self._decoder, name, beam)

    async def run(self, model: str, payload: bytes, point: str, codec: str, beam: int | None) -> TailOutcome:
        cloud = self.clouds[model]
        decoder = await self._decoder_off_loop(model, beam)
        if self.max_batch > 1:
            got, started = await self._batched(model, payload, point, codec, decoder)
            return TailOutcome(got, started)
        started = [time.perf_counter()]

        def work():
            started[0] = time.perf_counter()
            return cloud.transcribe(payload, point, codec, decoder)

        try:
            got = await asyncio.get_running_loop().run_in_executor(self.executor, work)
        except Exception as exc:  # noqa: BLE001 - the service maps it to a status
            got = exc
        return TailOutcome(got, started[0])

    async def stream(self, model: str, point: str, codec: str, beam: int | None) -> _LocalStream:
        cloud = self.clouds[model]
        decoder = await self._decoder_off_loop(model, beam)
        # building a codec may read its state from disk: on the pool
        stream = await asyncio.get_running_loop().run_in_executor(self.executor, cloud.stream, point, codec)
        return _LocalStream(self, model, stream, decoder)

    async def _batched(self, model: str, payload, point: str, codec: str, decoder: Decoder | None):
        """Queue one request (a payload, or a stream's Activation) for its model's
        batcher; ``(Decoded | Exception, started)``."""
        queue = self._queues.get(model)
        if queue is None:
            if self._free is None:
                self._free = asyncio.Semaphore(self.workers)
            queue = self._queues[model] = asyncio.Queue()
            self._spawn(self._batcher(self.clouds[model], queue))
        item = _Queued(payload, point, codec, decoder, asyncio.get_running_loop().create_future())
        queue.put_nowait(item)
        got = await item.future  # cancelling the call cancels the future: the batcher skips it
        return got, item.started

    def _spawn(self, coro) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _batcher(self, cloud: Cloud, queue: asyncio.Queue[_Queued]) -> None:
        """Forever: wait for a free worker and a first request, gather up to ``max_batch``
        within ``max_wait_ms`` of it, and start the batch on the worker."""
        loop = asyncio.get_running_loop()
        while True:
            await self._free.acquire()
            try:
                batch = [await queue.get()]
                deadline = loop.time() + self.max_wait_s
                while len(batch) < self.max_batch:
                    if queue.empty():
                        left = deadline - loop.time()
                        if left <= 0 or self._busy() <= len(batch):
                            break  # time is up, or no other call is in the server to wait for
                        # not wait_for: on Python 3.11 it can drop an item that arrives
                        # just as the time runs out
                        getter = asyncio.ensure_future(queue.get())
                        await asyncio.wait({getter}, timeout=left)
                        if not getter.done():
                            getter.cancel()
                            await asyncio.wait({getter})
                        if getter.cancelled():
                            break
                        batch.append(getter.result())
                    else:
                        batch.append(queue.get_nowait())
                batch = [b for b in batch if not b.future.done()]  # cancelled while queued
            except BaseException:
                self._free.release()
                raise
            if not batch:
                self._free.release()
                continue
            self._spawn(self._run_batch(cloud, batch))

    async def _run_batch(self, cloud: Cloud, batch: list[_Queued]) -> None:
        def work():
            started = time.perf_counter()
            for b in batch:
                b.started = started
            return cloud.transcribe_batch([(b.payload, b.point, b.codec, b.decoder) for b in batch])

        try:
            results = await asyncio.get_running_loop().run_in_executor(self.executor, work)
        except Exception as exc:  # a bug in the batch as a whole: every request reports it
            results = [exc] * len(batch)
        finally:
            self._free.release()
        for b, got in zip(batch, results, strict=True):
            if not b.future.done():  # a request cancelled while its batch ran is not answered
                b.future.set_result(got)

    async def close(self) -> None:
        """Stop the batchers (after the server stopped taking calls)."""
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            try:
                await task
            except (asyncio.CancelledError, Exception):
                pass


class _LocalStream:
    """A stream of the embedded server: each payload decoded on the pool as it arrives
    (:class:`~splitasr.pipeline.CloudStream`), the tail through the batching queue."""

    def __init__(self, tails: LocalTails, model: str, stream, decoder: Decoder | None):
        self.tails, self.model, self.stream, self.decoder = tails, model, stream, decoder

    async def add(self, payload: bytes) -> None:
        await asyncio.get_running_loop().run_in_executor(self.tails.executor, self.stream.add, payload)

    async def finish(self, floor: float | None) -> TailOutcome:
        act = self.stream.end(floor)
        frames = int(act.lens[0])
        point, codec = self.stream.point, self.stream.codec
        if self.tails.max_batch > 1:
            got, started = await self.tails._batched(self.model, act, point, codec, self.decoder)
            return TailOutcome(got, started, frames)
        cloud, started = self.tails.clouds[self.model], [time.perf_counter()]

        def work():
            started[0] = time.perf_counter()
            return cloud.transcribe_batch([(act, point, codec, self.decoder)])[0]

        got = await asyncio.get_running_loop().run_in_executor(self.tails.executor, work)
        return TailOutcome(got, started[0], frames)


class CloudService(pb_grpc.CloudServicer):
    """The ``splitasr.v1.Cloud`` service over a set of loaded models, or any tail runner.

    Args:
        clouds: model name -> its :class:`Cloud` (shared, read-only), run by a
            :class:`LocalTails` made of the next four arguments; None when ``tails`` is given.
        token: when set, every call must carry ``authorization: Bearer <token>``.
        executor: where tails run (default: a pool of ``workers`` threads).
        max_batch: most requests of one model whose tails run as one batch (1: no batching).
        max_wait_ms: how long a batch waits for more requests after its first one.
        max_streams: most streams open at once; one more is refused (RESOURCE_EXHAUSTED).
        tails: where the tails run instead (:class:`TailRunner`, e.g. a Ray Serve deployment).
    """

    def __init__(
        self,
        clouds: Mapping[str, Cloud] | None = None,
        token: str | None = None,
        executor: ThreadPoolExecutor | None = None,
        workers: int = 2,
        max_batch: int = 1,
        max_wait_ms: float = DEFAULT_MAX_WAIT_MS,
        max_streams: int = DEFAULT_MAX_STREAMS,
        tails: TailRunner | None = None,
    ):
        if max_streams < 0:
            raise SplitASRError(f"max_streams {max_streams} must be >= 0")
        if (clouds is None) == (tails is None):
            raise SplitASRError("give the models (clouds) or a tail runner (tails), one of the two")
        self.tails: TailRunner = tails or LocalTails(clouds, executor, workers, max_batch, max_wait_ms)
        self.tails.attach(lambda: self._pending + self._streams)
        self.models = tuple(self.tails.models)
        self.max_streams = max_streams
        self._streams = 0  # streams open now
        self._token = f"Bearer {token}".encode() if token else None
        self._pending = 0
        self._recent: collections.deque[float] = collections.deque(maxlen=RECENT)

    @property
    def executor(self) -> ThreadPoolExecutor | None:
        """The embedded tails' thread pool (None for another runner)."""
        return getattr(self.tails, "executor", None)

    def _authorised(self, context) -> bool:
        if self._token is None:
            return True
        got = dict(context.invocation_metadata() or ()).get("authorization", "")
        got = got.encode() if isinstance(got, str) else bytes(got)
        return hmac.compare_digest(got, self._token)

    def _unknown(self, model: str) -> str:
        return f"unknown model {model!r}; served: {', '.join(sorted(self.models))}"

    def load(self) -> pb.ServerLoad:
        recent = list(self._recent)
        mean = sum(recent) / len(recent) if recent else 0.0
        return pb.ServerLoad(
            queue_depth=self._pending, mean_service_ms=round(mean, 3), open_streams=self._streams
        )

    async def Transcribe(self, request: pb.TranscribeRequest, context) -> pb.TranscribeReply:
        received, received_ns = time.perf_counter(), time.time_ns()
        self._pending += 1
        code, message, reply, started, batch = grpc.StatusCode.OK, "", None, [received], [0]
        try:
            if not self._authorised(context):
                code, message = grpc.StatusCode.UNAUTHENTICATED, "missing or wrong bearer token"
            elif request.model not in self.models:
                code, message = grpc.StatusCode.NOT_FOUND, self._unknown(request.model)
            else:
                beam = _checked_beam(request.beam if request.HasField("beam") else None)
                out = await self.tails.run(request.model, request.payload, request.point, request.codec, beam)
                started[0] = out.started
                if isinstance(out.result, Exception):
                    raise out.result
                got = out.result
                batch[0] = got.batch
                total = _ms(time.perf_counter() - received)
                self._recent.append(total)
                timings = pb.ServerTimings(
                    queue_ms=_ms(started[0] - received),
                    decode_ms=got.decode_ms,
                    tail_ms=got.tail_ms,
                    text_ms=got.text_ms,
                    total_ms=total,
                    batch_size=got.batch,
                )
                reply = pb.TranscribeReply(
                    request_id=request.request_id,
                    text=got.text,
                    timings=timings,
                    received_unix_ns=received_ns,
                )
        except asyncio.CancelledError:  # the client went away or its deadline passed
            self._log(
                request,
                context,
                grpc.StatusCode.CANCELLED,
                "cancelled by the client",
                received,
                started[0],
                batch[0],
            )
            raise
        except SplitASRError as exc:
            code, message = grpc.StatusCode.INVALID_ARGUMENT, _one_line(exc)
        except TailUnavailable as exc:
            code, message = grpc.StatusCode.UNAVAILABLE, _one_line(exc)
        except Exception as exc:  # a bug: answer, log, keep serving
            log.exception("request %016x failed", request.request_id)
            code, message = grpc.StatusCode.INTERNAL, f"internal error: {type(exc).__name__}"
        finally:
            self._pending -= 1
        self._log(request, context, code, message, received, started[0], batch[0])
        if reply is None:
            await context.abort(code, message)
        reply.load.CopyFrom(self.load())
        return reply

    async def close(self) -> None:
        """Stop the tail runner's background work (after the server stopped taking calls)."""
        await self.tails.close()

    async def TranscribeStream(self, request_iterator, context) -> pb.TranscribeReply:
        """One utterance in chunks (module docstring); the reply is the unary call's, with
        ``total_ms`` and ``queue_ms`` counted from the arrival of the last chunk."""
        opened, received_ns = time.perf_counter(), time.time_ns()
        info = _StreamInfo()
        if self._streams >= self.max_streams:
            info.code = grpc.StatusCode.RESOURCE_EXHAUSTED
            info.message = f"too many streams open (max {self.max_streams}); try again later"
            self._log_stream(info, context, opened)
            await context.abort(info.code, info.message)
        self._streams += 1
        reply = None
        try:
            if not self._authorised(context):
                raise _StreamRefused(grpc.StatusCode.UNAUTHENTICATED, "missing or wrong bearer token")
            reply = await self._stream(request_iterator, info, context)
            reply.received_unix_ns = received_ns
        except asyncio.CancelledError:  # the client went away or its deadline passed
            info.code, info.message = grpc.StatusCode.CANCELLED, "cancelled by the client"
            self._log_stream(info, context, opened)
            raise
        except _StreamRefused as exc:
            info.code, info.message = exc.code, exc.message
        except SplitASRError as exc:
            info.code, info.message = grpc.StatusCode.INVALID_ARGUMENT, _one_line(exc)
        except TailUnavailable as exc:
            info.code, info.message = grpc.StatusCode.UNAVAILABLE, _one_line(exc)
        except Exception as exc:  # a bug: answer, log, keep serving
            log.exception("stream %016x failed", info.request_id)
            info.code, info.message = grpc.StatusCode.INTERNAL, f"internal error: {type(exc).__name__}"
        finally:
            self._streams -= 1
            info.stream = None  # the frames go with the stream
        self._log_stream(info, context, opened)
        if reply is None:
            await context.abort(info.code, info.message)
        reply.load.CopyFrom(self.load())
        return reply

    async def _stream(self, chunks, info: _StreamInfo, context) -> pb.TranscribeReply:
        """Read and check the chunks of one stream, hand their payloads to the tail runner
        as they come (the embedded one decodes them at once), then run its tail."""
        floor = None
        max_chunks = 1
        async for chunk in chunks:
            if chunk.seq != info.chunks:
                raise _StreamRefused(
                    grpc.StatusCode.INVALID_ARGUMENT, f"chunk seq {chunk.seq}, expected {info.chunks}"
                )
            if info.chunks == 0:
                info.model, info.point, info.codec = chunk.model, chunk.point, chunk.codec
                info.request_id = chunk.request_id
                info.beam = chunk.beam if chunk.HasField("beam") else None
                if chunk.model not in self.models:
                    raise _StreamRefused(grpc.StatusCode.NOT_FOUND, self._unknown(chunk.model))
                beam = _checked_beam(info.beam)
                info.stream = await self.tails.stream(chunk.model, chunk.point, chunk.codec, beam)
                max_chunks = max(1000, math.ceil(self.tails.max_seconds(chunk.model) * CHUNKS_PER_SECOND))
            else:
                _check_same(chunk, info)
            if info.chunks >= max_chunks:
                raise _StreamRefused(
                    grpc.StatusCode.INVALID_ARGUMENT, f"the stream passed {max_chunks} chunks"
                )
            info.chunks += 1
            if chunk.payload:
                info.payload_bytes += len(chunk.payload)
                await info.stream.add(chunk.payload)
            if chunk.last:
                floor = chunk.floor if chunk.HasField("floor") else None
                info.last = True
                break
        if not info.last:
            # A client that goes away ends its requests too, and gRPC cancels this handler
            # a moment later: wait for that moment before calling the stream malformed.
            await asyncio.sleep(CANCEL_GRACE_S)
            if context.cancelled():
                raise asyncio.CancelledError()
            raise _StreamRefused(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"the stream ended after {info.chunks} chunks without one marked last",
            )
        info.ended = time.perf_counter()
        self._pending += 1
        try:
            out = await info.stream.finish(floor)
            info.frames = out.frames
            if isinstance(out.result, Exception):
                raise out.result
            got = out.result
        finally:
            self._pending -= 1
        info.batch = got.batch
        total = _ms(time.perf_counter() - info.ended)
        self._recent.append(total)
        timings = pb.ServerTimings(
            queue_ms=_ms(max(out.started, info.ended) - info.ended),
            decode_ms=got.decode_ms,
            tail_ms=got.tail_ms,
            text_ms=got.text_ms,
            total_ms=total,
            batch_size=got.batch,
        )
        return pb.TranscribeReply(request_id=info.request_id, text=got.text, timings=timings)

    def _log_stream(self, info: _StreamInfo, context, opened: float) -> None:
        if not log.isEnabledFor(logging.INFO):
            return
        now = time.perf_counter()
        line = {
            "event": "transcribe_stream",
            "request_id": f"{info.request_id:016x}",
            "peer": context.peer(),
            "model": info.model,
            "point": info.point,
            "codec": info.codec,
            "chunks": info.chunks,
            "payload_bytes": info.payload_bytes,
            "frames": info.frames,
            "status": info.code.name,
            "stream_ms": _ms(now - opened),
            "total_ms": _ms(now - info.ended) if info.ended else 0.0,
            "pending": self._pending,
            "open_streams": self._streams,
            "batch": info.batch,
        }
        if info.message:
            line["error"] = info.message
        log.info(json.dumps(line))

    def _log(self, request, context, code, message, received, started, batch=0) -> None:
        if not log.isEnabledFor(logging.INFO):
            return
        now = time.perf_counter()
        line = {
            "event": "transcribe",
            "request_id": f"{request.request_id:016x}",
            "peer": context.peer(),
            "model": request.model,
            "point": request.point,
            "codec": request.codec,
            "payload_bytes": len(request.payload),
            "status": code.name,
            "queue_ms": _ms(started - received),
            "total_ms": _ms(now - received),
            "pending": self._pending,
            "batch": batch,
        }
        if message:
            line["error"] = message
        log.info(json.dumps(line))


class _StreamInfo:
    """What one stream has said and done so far (for its checks, its reply and its log)."""

    __slots__ = (
        "model", "point", "codec", "request_id", "beam", "chunks", "payload_bytes", "frames",
        "last", "ended", "batch", "stream", "code", "message",
    )  # fmt: skip

    def __init__(self):
        self.model = self.point = self.codec = ""
        self.request_id, self.beam = 0, None
        self.chunks = self.payload_bytes = self.frames = self.batch = 0
        self.last, self.ended, self.stream = False, 0.0, None
        self.code, self.message = grpc.StatusCode.OK, ""


def _checked_beam(beam: int | None) -> int | None:
    """The request's beam width, None for the model's default; 1..MAX_BEAM or refused."""
    if beam is not None and not 1 <= beam <= MAX_BEAM:
        raise SplitASRError(f"beam {beam}: must be 1..{MAX_BEAM}")
    return beam


def _check_same(chunk: pb.AudioChunk, info: _StreamInfo) -> None:
    """A later chunk may leave the first chunk's fields empty or repeat them, not change them."""
    for name, value in (("model", chunk.model), ("point", chunk.point), ("codec", chunk.codec)):
        if value and value != getattr(info, name):
            raise _StreamRefused(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"chunk {chunk.seq} names {name} {value!r}, the stream's first chunk {getattr(info, name)!r}",
            )
    if chunk.request_id and chunk.request_id != info.request_id:
        raise _StreamRefused(grpc.StatusCode.INVALID_ARGUMENT, f"chunk {chunk.seq} names another request id")
    if chunk.HasField("beam") and chunk.beam != info.beam:
        raise _StreamRefused(grpc.StatusCode.INVALID_ARGUMENT, f"chunk {chunk.seq} names another beam")


def load_clouds(
    names: Iterable[str], max_seconds: float | None = None, decoder_precision: str | None = None
) -> dict[str, Cloud]:
    """One :class:`Cloud` per model name, each loaded once (codec state included on use);
    ``decoder_precision`` applies to the models with a text decoder (Whisper's)."""
    from splitasr.model.registry import has_text_decoder, load_model

    clouds = {}
    for name in names:
        kwargs = {} if max_seconds is None else {"max_seconds": max_seconds}
        precision = decoder_precision if has_text_decoder(name) else None
        clouds[name] = Cloud(load_model(name, decoder_precision=precision), **kwargs)
    return clouds


async def start(
    clouds: Mapping[str, Cloud] | None,
    host: str = "127.0.0.1",
    port: int = 0,
    token: str | None = None,
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
    workers: int = 2,
    service: CloudService | None = None,
    max_batch: int = 1,
    max_wait_ms: float = DEFAULT_MAX_WAIT_MS,
    credentials: grpc.ServerCredentials | None = None,
    max_streams: int = DEFAULT_MAX_STREAMS,
) -> tuple[grpc.aio.Server, int]:
    """Start a server on ``host:port`` (port 0: an ephemeral one) in the running loop; returns
    the server and the bound port. ``credentials`` (:func:`splitasr.transport.tls.server_credentials`)
    serve TLS; without them the port is plaintext. Stop it with ``await server.stop(grace)``
    (and shut down ``service.executor`` when you passed the service)."""
    server = grpc.aio.server(
        options=[
            ("grpc.max_receive_message_length", max_message_bytes),
            ("grpc.max_send_message_length", max_message_bytes),
        ]
    )
    service = service or CloudService(
        clouds,
        token=token,
        workers=workers,
        max_batch=max_batch,
        max_wait_ms=max_wait_ms,
        max_streams=max_streams,
    )
    pb_grpc.add_CloudServicer_to_server(service, server)
    checker = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(checker, server)
    address = f"{host}:{port}"
    bound = server.add_secure_port(address, credentials) if credentials else server.add_insecure_port(address)
    if not bound:
        raise SplitASRError(f"cannot listen on {host}:{port}")
    await server.start()
    for service in ("", SERVICE_NAME):
        await checker.set(service, health_pb2.HealthCheckResponse.SERVING)
    return server, bound


async def serve_forever(
    clouds: Mapping[str, Cloud] | None, grace_s: float = 10.0, tails: TailRunner | None = None, **kwargs
) -> None:
    """Serve until SIGTERM or SIGINT, then stop taking calls and drain in-flight ones for up
    to ``grace_s`` seconds (what ``splitasr serve`` runs). The tails run in this process
    (``clouds``) or wherever ``tails`` runs them (``splitasr serve --backend ray``)."""
    service = CloudService(
        clouds,
        token=kwargs.pop("token", None),
        workers=kwargs.pop("workers", 2),
        max_batch=kwargs.pop("max_batch", 1),
        max_wait_ms=kwargs.pop("max_wait_ms", DEFAULT_MAX_WAIT_MS),
        max_streams=kwargs.pop("max_streams", DEFAULT_MAX_STREAMS),
        tails=tails,
    )
    server, port = await start(clouds, service=service, **kwargs)
    tls = kwargs.get("credentials") is not None
    log.info(json.dumps({"event": "listening", "port": port, "models": sorted(service.models), "tls": tls}))
    print(
        f"splitasr serve: listening{' (TLS)' if tls else ''} on {kwargs.get('host', '127.0.0.1')}:{port}",
        flush=True,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info(json.dumps({"event": "stopping", "grace_s": grace_s}))
    await server.stop(grace_s)
    await service.close()
    if service.executor is not None:
        service.executor.shutdown(wait=False, cancel_futures=True)


class ServerThread:
    """A server on its own event loop in a background thread (tests, demos, in-process
    use): ``with ServerThread(clouds) as s: CloudClient(f"127.0.0.1:{s.port}")``."""

    def __init__(
        self,
        clouds: Mapping[str, Cloud],
        token: str | None = None,
        workers: int = 2,
        max_batch: int = 1,
        max_wait_ms: float = DEFAULT_MAX_WAIT_MS,
        max_streams: int = DEFAULT_MAX_STREAMS,
        **kwargs,
    ):
        self.service = CloudService(
            clouds,
            token=token,
            workers=workers,
            max_batch=max_batch,
            max_wait_ms=max_wait_ms,
            max_streams=max_streams,
        )
        self._clouds, self._kwargs = clouds, {**kwargs, "service": self.service}
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="splitasr-server", daemon=True)
        self.server: grpc.aio.Server | None = None
        self.port = 0

    def start(self) -> ServerThread:
        self._thread.start()
        fut = asyncio.run_coroutine_threadsafe(start(self._clouds, **self._kwargs), self._loop)
        self.server, self.port = fut.result(timeout=30)
        return self

    def stop(self, grace_s: float | None = 0) -> None:
        if self.server is not None:
            asyncio.run_coroutine_threadsafe(self.server.stop(grace_s), self._loop).result(timeout=30)
            asyncio.run_coroutine_threadsafe(self.service.close(), self._loop).result(timeout=30)
            self.server = None
        self.service.executor.shutdown(wait=True, cancel_futures=True)
        if self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=10)

    def __enter__(self) -> ServerThread:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def _ms(seconds: float) -> float:
    return round(1000 * seconds, 3)


__all__ = ["CloudService", "ServerThread", "load_clouds", "serve_forever", "start"]
