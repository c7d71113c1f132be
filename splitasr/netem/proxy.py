"""A user-space link emulator: a TCP proxy that delays and rate-limits what it forwards.

Kernel netem is not available where this project runs, so the edge talks to the cloud
through this proxy instead::

    client --TCP--> LinkEmulator(listen) ==[uplink: rate, delay]==> target (the server)
           <-------                      <=[downlink: rate, delay]==

Each accepted connection gets its own connection to ``target``; "up" is what the client
sends (edge -> cloud), "down" what the target answers.

**The model.** Each direction is one bottleneck shared by every connection of the
emulator (one radio link carries all of a phone's connections): what is read from a socket
is cut into segments of at most ``max(1448 B, 2 ms at the rate)`` bytes, and each segment
leaves the bottleneck when the link has serialised everything queued before it (a token
bucket one segment deep, so no bursts above the rate), ``len * 8 / rate`` seconds after the
link became free. It is delivered ``one_way_ms`` (+ jitter, + a retransmission timeout if
"lost", held past an outage; see :mod:`splitasr.netem.profiles`) after it left, and never
before the segment ahead of it on the same connection (no reordering). A new connection
waits one round trip before its first byte is read (TCP's handshake). Time is the event
loop's clock: a segment waits in ``asyncio.sleep``, never in a busy loop.

The profile in force is read when a segment enters the link: ``set_profile`` (or the
``trace``, evaluated at the time since :meth:`LinkEmulator.start`) changes the delay and the
rates for what arrives from then on; what is already queued keeps the times it was given.

**What is counted** (:class:`LinkStats`): TCP payload bytes delivered in each direction
(the HTTP/2 and gRPC bytes, no TCP/IP headers), per emulator and per connection.

Each pipe holds at most :data:`MAX_QUEUED_BYTES` not yet delivered; beyond that it stops
reading, and TCP's flow control slows the sender down.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import random
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from splitasr.errors import ConfigError
from splitasr.netem.profiles import PROFILES, LinkProfile
from splitasr.netem.trace import Trace

log = logging.getLogger("splitasr.netem")

READ_BYTES = 64 * 1024
MSS = 1448  # a TCP segment's payload on a 1500-byte Ethernet MTU with timestamps
SEGMENT_S = 0.002  # segments of at most 2 ms of serialisation when that is more than an MSS
MAX_QUEUED_BYTES = 4 * 1024 * 1024  # per pipe; > the bandwidth-delay product of every profile
MAX_TRACKED_CONNECTIONS = 1024  # per-connection counters kept (the oldest closed ones go first)
CONNECT_TIMEOUT_S = 10.0
DIRECTIONS = ("up", "down")

Tap = Callable[[str, int, bytes], None]


@dataclass
class ConnectionStats:
    """One proxied connection: TCP payload bytes delivered each way, and when it lived
    (seconds since the emulator started)."""

    id: int
    peer: str
    opened_s: float
    bytes_up: int = 0
    bytes_down: int = 0
    closed_s: float | None = None


@dataclass
class LinkStats:
    """TCP payload bytes delivered by one emulator: ``bytes_up`` (client -> target),
    ``bytes_down``, ``connections`` accepted, and the counters of the last
    :data:`MAX_TRACKED_CONNECTIONS` connections by id."""

    bytes_up: int = 0
    bytes_down: int = 0
    connections: int = 0
    per_connection: dict[int, ConnectionStats] = field(default_factory=dict)

    def snapshot(self) -> LinkStats:
        """A copy that the emulator will not change (read it from any thread)."""
        per = {k: ConnectionStats(**vars(v)) for k, v in list(self.per_connection.items())}
        return LinkStats(self.bytes_up, self.bytes_down, self.connections, per)


class _Bottleneck:
    """One direction's serialiser, shared by every connection: the time the link is free."""

    def __init__(self) -> None:
        self.free_at = 0.0

    def depart(self, now: float, nbytes: int, rate_bps: float | None) -> float:
        """When a segment of ``nbytes`` entering at ``now`` has been serialised."""
        if rate_bps is None:
            return now
        self.free_at = max(now, self.free_at) + 8 * nbytes / rate_bps
        return self.free_at


class _Pipe:
    """One direction of one connection: read, schedule each segment, deliver in order."""

    def __init__(self, em: LinkEmulator, conn: ConnectionStats, direction: str, reader, writer):
        self.em, self.conn, self.direction = em, conn, direction
        self.reader, self.writer = reader, writer
        self.queue: collections.deque[tuple[float, bytes]] = collections.deque()
        self.queued = 0
        self.last_at = 0.0
        self.eof = False
        self.changed = asyncio.Event()  # something queued, delivered, or the end

    async def read_loop(self) -> None:
        while True:
            while self.queued >= MAX_QUEUED_BYTES:
                self.changed.clear()
                await self.changed.wait()
            data = await self.reader.read(READ_BYTES)
            if not data:
                break
            self._schedule(data)
        self.eof = True
        self.changed.set()

    def _schedule(self, data: bytes) -> None:
        em = self.em
        now = em.loop.time()
        profile, since = em.profile_at(now)
        rate = profile.rate_bps(self.direction)
        seg = len(data) if rate is None else max(MSS, int(rate * SEGMENT_S / 8))
        link = em.links[self.direction]
        for i in range(0, len(data), seg):
            chunk = data[i : i + seg]
            at = link.depart(now, len(chunk), rate) + em.delay_s(profile)
            at = _after_outages(max(at, self.last_at), profile, since)
            self.last_at = at
            self.queue.append((at, chunk))
            self.queued += len(chunk)
        self.changed.set()

    async def write_loop(self) -> None:
        loop = self.em.loop
        while True:
            if not self.queue:
                if self.eof:
                    break
                self.changed.clear()
                await self.changed.wait()
                continue
            at, chunk = self.queue[0]
            wait = at - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            self.queue.popleft()
            self.queued -= len(chunk)
            self.changed.set()
            self.em.count(self.conn, self.direction, chunk)  # first: a reader may wake at write
            self.writer.write(chunk)
            await self.writer.drain()
        if self.writer.can_write_eof():
            self.writer.write_eof()  # half-close: the other direction may still be talking
        else:
            self.writer.close()


def _after_outages(at: float, profile: LinkProfile, since: float) -> float:
    """``at`` moved to the end of any outage window it falls in (windows since ``since``)."""
    for start, end in profile.outages:
        if since + start <= at < since + end:
            at = since + end
    return at


class LinkEmulator:
    """A TCP proxy on ``listen`` to ``target`` with a :class:`LinkProfile` or a
    :class:`Trace` (module docstring). ``await start()`` in a running loop; ``port`` is then
    the bound port; ``await stop()`` closes every connection.

    Args:
        target: ``(host, port)`` every connection is forwarded to.
        profile: the link (default: ``loopback``, no shaping); not with ``trace``.
        trace: a link that changes over time, evaluated at the time since ``start``.
        listen: ``(host, port)``; port 0 picks a free one.
        seed: seeds the jitter and loss draws (reproducible runs).
        tap: called with ``(direction, connection id, bytes)`` for each delivered segment
            (byte-level analysis, e.g. :mod:`splitasr.bench.overhead`); runs on the loop.
    """

    def __init__(
        self,
        target: tuple[str, int],
        profile: LinkProfile | None = None,
        trace: Trace | None = None,
        listen: tuple[str, int] = ("127.0.0.1", 0),
        seed: int | None = None,
        tap: Tap | None = None,
    ):
        if profile is not None and trace is not None:
            raise ConfigError("give a link profile or a trace, not both")
        self.target, self.listen, self.tap = target, listen, tap
        self._profile = profile if profile is not None or trace is not None else PROFILES["loopback"]
        self._trace = trace
        self._profile_since = 0.0
        self.stats = LinkStats()
        self.links = {d: _Bottleneck() for d in DIRECTIONS}
        self.rng = random.Random(seed)
        self.port = 0
        self.loop: asyncio.AbstractEventLoop | None = None
        self.started_at = 0.0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task] = set()
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> LinkEmulator:
        self.loop = asyncio.get_running_loop()
        self.started_at = self._profile_since = self.loop.time()
        try:
            self._server = await asyncio.start_server(self._accept, self.listen[0], self.listen[1])
        except OSError as exc:
            host, port = self.listen
            raise ConfigError(f"netem: cannot listen on {host}:{port}: {exc.strerror}") from None
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        """Stop accepting, close every connection, and wait for their tasks to end."""
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        for writer in list(self._writers):
            writer.close()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None

    @property
    def profile(self) -> LinkProfile:
        """The link in force now."""
        return self.profile_at(self.loop.time() if self.loop else 0.0)[0]

    def set_profile(self, profile: LinkProfile) -> None:
        """Switch to ``profile`` now (it replaces any trace); its outage windows count from
        now. Call it on the emulator's loop (:class:`EmulatorThread` does)."""
        self._profile, self._trace = profile, None
        self._profile_since = self.loop.time() if self.loop else 0.0

    def profile_at(self, now: float) -> tuple[LinkProfile, float]:
        """The profile in force at loop time ``now`` and the loop time its outages count from."""
        if self._trace is not None:
            return self._trace.at(now - self.started_at), self.started_at
        return self._profile, self._profile_since

    def delay_s(self, profile: LinkProfile) -> float:
        """One segment's propagation delay: one way, jitter, and an RTO if it is "lost"."""
        ms = profile.one_way_ms
        if profile.jitter_ms:
            ms = max(0.0, ms + self.rng.uniform(-profile.jitter_ms, profile.jitter_ms))
        extra = profile.rto_s if profile.loss and self.rng.random() < profile.loss else 0.0
        return ms / 1000 + extra

    def count(self, conn: ConnectionStats, direction: str, chunk: bytes) -> None:
        if direction == "up":
            self.stats.bytes_up += len(chunk)
            conn.bytes_up += len(chunk)
        else:
            self.stats.bytes_down += len(chunk)
            conn.bytes_down += len(chunk)
        if self.tap is not None:
            self.tap(direction, conn.id, chunk)

    async def _accept(self, client_reader, client_writer) -> None:
        # The work runs in its own task, which stop() cancels: cancelling the task asyncio
        # made for this callback would make Python 3.11's streams log a spurious error.
        task = asyncio.ensure_future(self._connection(client_reader, client_writer))
        self._tasks.add(task)
        try:
            await asyncio.wait([task])
        finally:
            self._tasks.discard(task)

    async def _connection(self, client_reader, client_writer) -> None:
        self._writers.add(client_writer)
        conn = self._register(client_writer)
        target_writer = None
        try:
            # The handshake: a real client sends its first byte one round trip after connect.
            await asyncio.sleep(2 * self.profile.one_way_ms / 1000)
            target_reader, target_writer = await asyncio.wait_for(
                asyncio.open_connection(*self.target), CONNECT_TIMEOUT_S
            )
            self._writers.add(target_writer)
            up = _Pipe(self, conn, "up", client_reader, target_writer)
            down = _Pipe(self, conn, "down", target_reader, client_writer)
            await _run_all(up.read_loop(), up.write_loop(), down.read_loop(), down.write_loop())
        except (OSError, TimeoutError) as exc:
            log.debug("netem: connection %d: %s", conn.id, exc)
        finally:
            for writer in (client_writer, target_writer):
                if writer is not None:
                    writer.close()
                    self._writers.discard(writer)
            conn.closed_s = round(self.loop.time() - self.started_at, 6)

    def _register(self, writer: asyncio.StreamWriter) -> ConnectionStats:
        self.stats.connections += 1
        peer = writer.get_extra_info("peername")
        conn = ConnectionStats(
            self.stats.connections,
            f"{peer[0]}:{peer[1]}" if peer else "?",
            round(self.loop.time() - self.started_at, 6),
        )
        per = self.stats.per_connection
        per[conn.id] = conn
        if len(per) > MAX_TRACKED_CONNECTIONS:
            oldest = next((k for k, v in per.items() if v.closed_s is not None), next(iter(per)))
            del per[oldest]
        return conn


class EmulatorThread:
    """A :class:`LinkEmulator` on its own event loop in a background thread (tests, demos,
    benchmarks in one process): ``with EmulatorThread(target, profile=p) as em:`` then
    connect to ``127.0.0.1:em.port``; ``em.stats``; ``em.set_profile(q)``."""

    def __init__(self, target: tuple[str, int], **kwargs):
        self.emulator = LinkEmulator(target, **kwargs)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="splitasr-netem", daemon=True)
        self.port = 0

    def start(self) -> EmulatorThread:
        self._thread.start()
        try:
            asyncio.run_coroutine_threadsafe(self.emulator.start(), self._loop).result(timeout=30)
        except BaseException:
            self._close_loop()
            raise
        self.port = self.emulator.port
        return self

    @property
    def stats(self) -> LinkStats:
        """The live counters (ints read from another thread; :meth:`LinkStats.snapshot` for
        a consistent copy)."""
        return self.emulator.stats

    def set_profile(self, profile: LinkProfile) -> None:
        """Switch the link now (on the emulator's loop; returns when it is in force)."""
        asyncio.run_coroutine_threadsafe(_call(self.emulator.set_profile, profile), self._loop).result(10)

    def stop(self) -> None:
        if self._thread.is_alive():
            with contextlib.suppress(RuntimeError):
                asyncio.run_coroutine_threadsafe(self.emulator.stop(), self._loop).result(timeout=30)
        self._close_loop()

    def _close_loop(self) -> None:
        if self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=10)
        if not self._loop.is_running() and not self._loop.is_closed():
            self._loop.close()

    def __enter__(self) -> EmulatorThread:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


async def _run_all(*coros) -> None:
    """Run the four loops of a connection; the first error cancels the others and is raised."""
    tasks = [asyncio.ensure_future(c) for c in coros]
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
        for task in done:
            if task.exception() is not None:
                raise task.exception()
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def _call(fn, *args):
    return fn(*args)


async def run_forever(emulator: LinkEmulator, stop: asyncio.Event) -> None:
    """Start ``emulator``, wait for ``stop``, then close every connection (the CLI)."""
    await emulator.start()
    try:
        await stop.wait()
    finally:
        await emulator.stop()


__all__ = ["ConnectionStats", "EmulatorThread", "LinkEmulator", "LinkStats", "run_forever"]
