"""How closely the link emulator does what its profile says: one-way delay from the round
trips of tiny messages, uplink and downlink rates from bulk transfers timed at the
receiver, all on loopback in one event loop (``splitasr bench netem``; the tests in
tests/netem/ check the same measurements against a 10 % tolerance).

* delay: ``median(RTT) / 2`` of ``count`` 16-byte echoes after one warm-up (which pays the
  connection's handshake); a 16-byte message adds under 1 ms of serialisation on ``3g``.
* rate: the bits received after the first read divided by the time from the first read to
  the last (the first read's bits crossed before the clock started); the transfer is sized
  to take about ``seconds`` at the profile's rate.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import time
from dataclasses import asdict, dataclass

from splitasr.netem import LinkEmulator, LinkProfile

READ = 65536
MAX_TRANSFER_BYTES = 64 * 1024 * 1024


@dataclass
class LinkMeasurement:
    """What was measured through one profile (``None``: the direction is not shaped and
    was not measured)."""

    profile: str
    one_way_ms: float
    up_kbps: float | None
    down_kbps: float | None
    want_one_way_ms: float
    want_up_kbps: float | None
    want_down_kbps: float | None

    def to_dict(self) -> dict:
        return asdict(self)


class EchoSinkSource:
    """Three loopback servers on ephemeral ports: ``echo``; ``sink`` records
    ``(perf_counter, bytes)`` per read in ``arrivals``; ``source`` answers an 8-byte
    big-endian count with that many random bytes, then closes."""

    def __init__(self) -> None:
        self.arrivals: list[tuple[float, int]] = []
        self._servers: dict[str, asyncio.Server] = {}

    async def __aenter__(self) -> EchoSinkSource:
        for name, cb in (("echo", _echo), ("sink", self._sink), ("source", _source)):
            self._servers[name] = await asyncio.start_server(cb, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc) -> None:
        for server in self._servers.values():
            server.close()

    def addr(self, name: str) -> tuple[str, int]:
        return ("127.0.0.1", self._servers[name].sockets[0].getsockname()[1])

    async def _sink(self, reader, writer) -> None:
        while data := await reader.read(READ):
            self.arrivals.append((time.perf_counter(), len(data)))
        writer.close()


async def _echo(reader, writer) -> None:
    while data := await reader.read(READ):
        writer.write(data)
        await writer.drain()
    writer.close()


async def _source(reader, writer) -> None:
    n = min(int.from_bytes(await reader.readexactly(8), "big"), MAX_TRANSFER_BYTES)
    for i in range(0, n, READ):
        writer.write(os.urandom(min(READ, n - i)))
        await writer.drain()
    writer.close()


async def echo_rtts(port: int, count: int = 8, size: int = 16) -> list[float]:
    """Round trips (s) of ``size``-byte messages to an echo server at ``127.0.0.1:port``,
    after one warm-up."""
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


def rate_bps(arrivals: list[tuple[float, int]]) -> float:
    """Bits per second between the first and the last arrival (module docstring)."""
    bits = 8 * (sum(n for _, n in arrivals) - arrivals[0][1])
    return bits / (arrivals[-1][0] - arrivals[0][0])


async def uplink_bps(servers: EchoSinkSource, emulator_port: int, nbytes: int) -> float:
    """Send ``nbytes`` through the emulator to the sink; the rate the sink saw."""
    servers.arrivals.clear()
    _, writer = await asyncio.open_connection("127.0.0.1", emulator_port)
    for i in range(0, nbytes, READ):
        writer.write(os.urandom(min(READ, nbytes - i)))
        await writer.drain()
    writer.close()
    while sum(n for _, n in servers.arrivals) < nbytes:
        await asyncio.sleep(0.02)
    return rate_bps(servers.arrivals)


async def downlink_bps(emulator_port: int, nbytes: int) -> tuple[float, int]:
    """Ask the source for ``nbytes`` through the emulator: (rate seen here, bytes received)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", emulator_port)
    writer.write(nbytes.to_bytes(8, "big"))
    arrivals = []
    while data := await reader.read(READ):
        arrivals.append((time.perf_counter(), len(data)))
    writer.close()
    return rate_bps(arrivals), sum(n for _, n in arrivals)


def _transfer_bytes(kbps: float | None, seconds: float) -> int:
    return min(MAX_TRANSFER_BYTES, int(kbps * 1000 * seconds / 8)) if kbps else 0


async def measure_link(profile: LinkProfile, seconds: float = 1.5, pings: int = 8) -> LinkMeasurement:
    """Delay and both rates through ``profile`` (module docstring)."""
    async with EchoSinkSource() as servers:
        em = await LinkEmulator(servers.addr("echo"), profile=profile).start()
        try:
            one_way = 1000 * statistics.median(await echo_rtts(em.port, pings)) / 2
        finally:
            await em.stop()
        up = down = None
        if n := _transfer_bytes(profile.up_kbps, seconds):
            em = await LinkEmulator(servers.addr("sink"), profile=profile).start()
            try:
                up = await uplink_bps(servers, em.port, n) / 1000
            finally:
                await em.stop()
        if n := _transfer_bytes(profile.down_kbps, seconds):
            em = await LinkEmulator(servers.addr("source"), profile=profile).start()
            try:
                down = (await downlink_bps(em.port, n))[0] / 1000
            finally:
                await em.stop()
    return LinkMeasurement(
        profile.name,
        round(one_way, 2),
        None if up is None else round(up, 1),
        None if down is None else round(down, 1),
        profile.one_way_ms,
        profile.up_kbps,
        profile.down_kbps,
    )


def run_netem_bench(profiles: list[LinkProfile], out, seconds: float = 1.5, command: str = "") -> list[dict]:
    """``splitasr bench netem``: :func:`measure_link` per profile; results.json and table.md."""
    from pathlib import Path

    from splitasr.bench.report import machine_description, markdown_table, write_results

    rows = []
    for p in profiles:
        m = asyncio.run(measure_link(p, seconds=seconds))
        rows.append(
            {
                **m.to_dict(),
                "one_way_error_pct": _error_pct(m.one_way_ms, m.want_one_way_ms),
                "up_error_pct": _error_pct(m.up_kbps, m.want_up_kbps),
                "down_error_pct": _error_pct(m.down_kbps, m.want_down_kbps),
            }
        )
    shown = [{k: "-" if v is None else v for k, v in r.items()} for r in rows]
    columns = [
        ("profile", "profile", ""),
        ("want_one_way_ms", "one way ms (profile)", ""),
        ("one_way_ms", "measured", ""),
        ("want_up_kbps", "up kbit/s (profile)", ""),
        ("up_kbps", "measured", ""),
        ("want_down_kbps", "down kbit/s (profile)", ""),
        ("down_kbps", "measured", ""),
        ("one_way_error_pct", "delay error %", ""),
        ("up_error_pct", "up error %", ""),
        ("down_error_pct", "down error %", ""),
    ]
    payload = {"machine": machine_description(), "seconds": seconds, "results": rows}
    write_results(Path(out), payload, markdown_table(shown, columns), command)
    return rows


def _error_pct(measured: float | None, want: float | None) -> float | None:
    if measured is None or not want:
        return None
    return round(100 * (measured - want) / want, 1)


__all__ = [
    "EchoSinkSource",
    "LinkMeasurement",
    "downlink_bps",
    "echo_rtts",
    "measure_link",
    "rate_bps",
    "run_netem_bench",
    "uplink_bps",
]
