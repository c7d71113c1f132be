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

from splitasr.bench.linkcheck import EchoSinkSource, downlink_bps, echo_rtts, uplink_bps
from splitasr.errors import ConfigError
from splitasr.netem import PROFILES, EmulatorThread, LinkEmulator, LinkProfile, parse_trace

TOL = 0.10


@pytest.mark.parametrize("name", ["lte", "3g"])
def test_one_way_delay_is_within_10_percent_of_the_profile(name):
    profile = PROFILES[name]

    async def run():
        async with EchoSinkSource() as s:
            em = await LinkEmulator(s.addr("echo"), profile=profile).start()
            try:
                return await echo_rtts(em.port)
            finally:
                await em.stop()

    one_way_ms = 1000 * statistics.median(asyncio.run(run())) / 2
    assert one_way_ms == pytest.approx(profile.one_way_ms, rel=TOL)


def test_uplink_and_downlink_throughput_are_within_10_percent_of_3g():
    profile = PROFILES["3g"]  # 200 kbit/s up, 1 Mbit/s down
    up_bytes, down_bytes = 40_000, 200_000  # ~1.6 s each

    async def run():
        async with EchoSinkSource() as s:
            em = await LinkEmulator(s.addr("sink"), profile=profile).start()
            up = await uplink_bps(s, em.port, up_bytes)
            await em.stop()
            assert (em.stats.bytes_up, em.stats.bytes_down) == (up_bytes, 0)
            em = await LinkEmulator(s.addr("source"), profile=profile).start()
            down, received = await downlink_bps(em.port, down_bytes)
            await em.stop()
            assert received == down_bytes and (em.stats.bytes_up, em.stats.bytes_down) == (8, down_bytes)
            return up, down

    up, down = asyncio.run(run())
    assert up == pytest.approx(1000 * profile.up_kbps, rel=TOL)
    assert down == pytest.approx(1000 * profile.down_kbps, rel=TOL)


def test_a_trace_step_changes_the_delay_when_its_time_comes():
    trace = parse_trace("t_seconds,one_way_ms,up_kbps,down_kbps\n0,40,100000,100000\n1.0,120,100000,100000\n")

    async def run():
        async with EchoSinkSource() as s:
            em = await LinkEmulator(s.addr("echo"), trace=trace).start()
            try:
                before = await echo_rtts(em.port, count=4)
                await asyncio.sleep(max(0.0, 1.05 - (em.loop.time() - em.started_at)))
                after = await echo_rtts(em.port, count=4)
                return before, after
            finally:
                await em.stop()

    before, after = asyncio.run(run())
    assert 1000 * statistics.median(before) / 2 == pytest.approx(40, rel=TOL)
    assert 1000 * statistics.median(after) / 2 == pytest.approx(120, rel=TOL)


def test_an_outage_holds_data_and_releases_it_after():
    async def run():
        async with EchoSinkSource() as s:
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
        async with EchoSinkSource() as s:
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
        async with EchoSinkSource() as s:
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
