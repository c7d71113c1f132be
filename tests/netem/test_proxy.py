"""The link emulator on loopback, in one event loop with a small echo / sink / source server:
delay and throughput within 10 % of the profile, a trace step, an outage, exact bytes in
order under jitter and loss, the byte counters, and a clean stop."""

from __future__ import annotations

import asyncio
import os
import socket
import socketserver
import statistics
import threading
import time

import pytest

from splitasr.errors import ConfigError
from splitasr.netem import PROFILES, EmulatorThread, LinkEmulator, LinkProfile, parse_trace

TOL = 0.10


async def _echo(reader, writer):
    while data := await reader.read(65536):
        writer.write(data)
        await writer.drain()
    writer.close()


class _Servers:
    """An echo server, a sink (records when bytes arrive) and a source (sends the number of
    bytes the 8-byte request asks for) on ephemeral loopback ports."""

    def __init__(self):
        self.arrivals: list[tuple[float, int]] = []

    async def __aenter__(self):
        self._echo = await asyncio.start_server(_echo, "127.0.0.1", 0)
        self._sink = await asyncio.start_server(self._sink_conn, "127.0.0.1", 0)
        self._source = await asyncio.start_server(self._source_conn, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc):
        for s in (self._echo, self._sink, self._source):
            s.close()

    def addr(self, which: str) -> tuple[str, int]:
        return ("127.0.0.1", getattr(self, f"_{which}").sockets[0].getsockname()[1])

    async def _sink_conn(self, reader, writer):
        while data := await reader.read(65536):
            self.arrivals.append((time.perf_counter(), len(data)))
        writer.close()

    async def _source_conn(self, reader, writer):
        n = int.from_bytes(await reader.readexactly(8), "big")
        writer.write(os.urandom(n))
        await writer.drain()
        writer.close()


async def _rtts(port: int, count: int = 8, size: int = 16) -> list[float]:
    """Round trips (s) of tiny messages through the echo server, after one warm-up (which
    also pays the connection's handshake)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    out = []
    for _ in range(count + 1):
        t = time.perf_counter()
        writer.write(b"x" * size)
        await writer.drain()
        await reader.readexactly(size)
        out.append(time.perf_counter() - t)
    writer.close()
    return out[1:]


def _rate_bps(arrivals: list[tuple[float, int]]) -> float:
    """Bits per second between the first and the last arrival (the first read's bytes were
    serialised before the first arrival, so they do not count)."""
    total = sum(n for _, n in arrivals) - arrivals[0][1]
    return 8 * total / (arrivals[-1][0] - arrivals[0][0])


@pytest.mark.parametrize("name", ["lte", "3g"])
def test_one_way_delay_is_within_10_percent_of_the_profile(name):
    profile = PROFILES[name]

    async def run():
        async with _Servers() as s:
            em = await LinkEmulator(s.addr("echo"), profile=profile).start()
            try:
                return await _rtts(em.port)
            finally:
                await em.stop()

    one_way_ms = 1000 * statistics.median(asyncio.run(run())) / 2
    assert one_way_ms == pytest.approx(profile.one_way_ms, rel=TOL)


def test_uplink_and_downlink_throughput_are_within_10_percent_of_3g():
    profile = PROFILES["3g"]  # 200 kbit/s up, 1 Mbit/s down
    up_bytes, down_bytes = 40_000, 200_000  # ~1.6 s each

    async def run():
        async with _Servers() as s:
            em = await LinkEmulator(s.addr("sink"), profile=profile).start()
            _, writer = await asyncio.open_connection("127.0.0.1", em.port)
            writer.write(os.urandom(up_bytes))
            await writer.drain()
            writer.close()
            while sum(n for _, n in s.arrivals) < up_bytes:
                await asyncio.sleep(0.05)
            up = _rate_bps(s.arrivals)
            assert em.stats.bytes_up == up_bytes and em.stats.bytes_down == 0
            await em.stop()

            em = await LinkEmulator(s.addr("source"), profile=profile).start()
            reader, writer = await asyncio.open_connection("127.0.0.1", em.port)
            writer.write(down_bytes.to_bytes(8, "big"))
            arrivals = []
            while data := await reader.read(65536):
                arrivals.append((time.perf_counter(), len(data)))
            writer.close()
            assert sum(n for _, n in arrivals) == down_bytes
            assert (em.stats.bytes_up, em.stats.bytes_down) == (8, down_bytes)
            await em.stop()
            return up, _rate_bps(arrivals)

    up, down = asyncio.run(run())
    assert up == pytest.approx(1000 * profile.up_kbps, rel=TOL)
    assert down == pytest.approx(1000 * profile.down_kbps, rel=TOL)


def test_a_trace_step_changes_the_delay_when_its_time_comes():
    trace = parse_trace("t_seconds,one_way_ms,up_kbps,down_kbps\n0,10,100000,100000\n1.0,60,100000,100000\n")

    async def run():
        async with _Servers() as s:
            em = await LinkEmulator(s.addr("echo"), trace=trace).start()
            try:
                before = await _rtts(em.port, count=4)
                await asyncio.sleep(max(0.0, 1.05 - (em.loop.time() - em.started_at)))
                after = await _rtts(em.port, count=4)
                return before, after
            finally:
                await em.stop()

    before, after = asyncio.run(run())
    assert 1000 * statistics.median(before) / 2 == pytest.approx(10, rel=TOL, abs=1.5)
    assert 1000 * statistics.median(after) / 2 == pytest.approx(60, rel=TOL)


def test_an_outage_holds_data_and_releases_it_after():
    async def run():
        async with _Servers() as s:
            em = await LinkEmulator(s.addr("echo"), profile=LinkProfile("fast", one_way_ms=5)).start()
            try:
                reader, writer = await asyncio.open_connection("127.0.0.1", em.port)
                writer.write(b"warm")
                await reader.readexactly(4)
                em.set_profile(LinkProfile("tunnel", one_way_ms=5, outages=((0.2, 0.7),)))
                t0 = time.perf_counter()
                await asyncio.sleep(0.3)  # inside the outage
                writer.write(b"held")
                await reader.readexactly(4)
                held = time.perf_counter() - t0
                t1 = time.perf_counter()
                writer.write(b"free")
                assert await reader.readexactly(4) == b"free"
                writer.close()
                return held, time.perf_counter() - t1
            finally:
                await em.stop()

    held, after = asyncio.run(run())
    assert 0.7 <= held < 0.8  # released when the window ends (+ the 5 ms back)
    assert after < 0.05


def test_bytes_arrive_exactly_and_in_order_under_jitter_and_loss():
    profile = LinkProfile("rough", one_way_ms=5, jitter_ms=4, up_kbps=40_000, down_kbps=40_000, loss=0.01)
    blob = os.urandom(400_000)

    async def run():
        async with _Servers() as s:
            em = await LinkEmulator(s.addr("echo"), profile=profile, seed=1).start()
            try:
                reader, writer = await asyncio.open_connection("127.0.0.1", em.port)

                async def send():
                    for i in range(0, len(blob), 10_000):
                        writer.write(blob[i : i + 10_000])
                        await writer.drain()
                    writer.write_eof()

                sender = asyncio.ensure_future(send())
                got = await reader.read(-1)  # until the echo server closes after our EOF
                await sender
                writer.close()
                await em.stop()  # closes the target side too: the connection's end is recorded
                return got, em.stats.snapshot()
            finally:
                await em.stop()

    got, stats = asyncio.run(run())
    assert got == blob
    assert (stats.bytes_up, stats.bytes_down, stats.connections) == (len(blob), len(blob), 1)
    conn = stats.per_connection[1]
    assert (conn.bytes_up, conn.bytes_down) == (len(blob), len(blob)) and conn.closed_s is not None


def test_stop_closes_open_connections_and_the_thread_runs_one_in_process():
    async def run():
        async with _Servers() as s:
            em = await LinkEmulator(s.addr("echo")).start()
            reader, writer = await asyncio.open_connection("127.0.0.1", em.port)
            writer.write(b"ping")
            assert await reader.readexactly(4) == b"ping"
            await asyncio.wait_for(em.stop(), 5)
            assert await asyncio.wait_for(reader.read(), 5) == b""  # closed by the emulator
            writer.close()

    asyncio.run(run())

    with socketserver.ThreadingTCPServer(("127.0.0.1", 0), _EchoHandler) as echo:
        threading.Thread(target=echo.serve_forever, daemon=True).start()
        try:
            with EmulatorThread(echo.server_address, profile=PROFILES["lte"]) as em:
                with socket.create_connection(("127.0.0.1", em.port), timeout=5) as sock:
                    sock.sendall(b"abc")
                    assert sock.recv(3) == b"abc"
                    em.set_profile(PROFILES["3g"])
                    t0 = time.perf_counter()
                    sock.sendall(b"def")
                    assert sock.recv(3) == b"def"
                    assert time.perf_counter() - t0 == pytest.approx(0.2, rel=TOL)
                assert (em.stats.bytes_up, em.stats.bytes_down) == (6, 6)
        finally:
            echo.shutdown()


class _EchoHandler(socketserver.BaseRequestHandler):
    def handle(self):
        while data := self.request.recv(65536):
            self.request.sendall(data)


def test_profiles_and_bad_arguments():
    def link(name):
        p = PROFILES[name]
        return p.one_way_ms, p.up_kbps, p.down_kbps

    assert link("wifi") == (2, 450_000, 450_000)  # paper 001's three links
    assert link("lte") == (25, 10_000, 50_000)
    assert link("3g") == (100, 200, 1_000)
    assert link("loopback") == (0, None, None)
    assert PROFILES["3g"].rto_s == pytest.approx(0.4) and PROFILES["wifi"].rto_s == 0.2
    from splitasr.netem import get_profile

    with pytest.raises(ConfigError, match="choose from loopback, wifi, lte, 3g"):
        get_profile("5g")
    for bad in (dict(loss=1.0), dict(up_kbps=0), dict(one_way_ms=float("nan")), dict(outages=((2, 1),))):
        with pytest.raises(ConfigError):
            LinkProfile("bad", **bad)
    with pytest.raises(ConfigError, match="not both"):
        LinkEmulator(("127.0.0.1", 1), profile=PROFILES["lte"], trace=parse_trace("0,1,1,1"))
