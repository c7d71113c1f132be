"""``splitasr bench load``: throughput and latency of a cloud server under concurrent clients.

Two ways to get a server:

* ``--target HOST:PORT``: any running server that speaks ``splitasr.v1`` (the embedded
  ``splitasr serve``, the Ray Serve tier, a remote machine); nothing is started or stopped.
* ``--servers embedded:1,embedded:8,ray:1,ray:2``: each setup is a ``splitasr serve`` this
  bench starts in its own process on 127.0.0.1 (ephemeral port) and stops afterwards;
  ``embedded:B`` is the embedded server at ``--max-batch B``, ``ray:N`` the Ray Serve
  backend with ``N`` replicas (``--max-batch`` of the run). The default is the embedded
  server at ``--max-batch`` 1 and 8 (dynamic batching against none).

Two kinds of load:

* **closed loop** (default): ``--clients K1,K2,...`` concurrent asyncio gRPC clients (one
  channel each); each sends its next request when its reply arrives. A sweep of ``K`` gives
  the latency vs throughput curve.
* **open loop** (``--rate R1,R2,...`` requests per second): Poisson arrivals at that rate,
  each request sent at its arrival time whether or not earlier ones were answered, so a
  server slower than the rate shows it as growing latency (latency counts from the
  scheduled arrival: no coordinated omission). At most ``MAX_OUTSTANDING`` requests are in
  flight; an arrival beyond that is counted ``shed`` by the client, not sent.

Every run sends at most ``--requests`` requests (after a few uncounted warm-up requests)
and stops after ``--max-seconds``. The payloads are made once with :meth:`Edge.encode`;
their single-request texts once with :meth:`Cloud.transcribe` in this process; every
reply's text is compared with that text (``mismatches``) and its ``request_id`` with the
one sent (``lost``: sent, never answered and never failed; must be 0). Per row:
throughput, p50/p95/p99 latency, errors by gRPC status, the server's reported queue depth
over time. Writes results.json, table.md and load.png (latency vs throughput; queue depth).
"""

from __future__ import annotations

import asyncio
import random
import subprocess
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from splitasr.errors import ConfigError, SplitASRError

MAX_OUTSTANDING = 2000  # open loop: most requests in flight at once
WARMUP_REQUESTS = 8  # per server before its first row: first-call costs, every replica touched
CALL_TIMEOUT_S = 120.0


@dataclass(frozen=True)
class ServerSetup:
    """One server the bench starts: ``name`` for tables, ``args`` for ``splitasr serve``."""

    name: str
    args: tuple[str, ...]


def parse_servers(
    spec: str, max_batch: int, max_wait_ms: float, workers: int, threads: int
) -> list[ServerSetup]:
    """``"embedded:1,embedded:8,ray:2"`` -> setups. ``embedded:B`` sets ``--max-batch B``;
    ``ray:N`` is the Ray Serve backend with ``N`` replicas of ``threads`` torch threads."""
    setups = []
    for item in (s.strip() for s in spec.split(",")):
        if not item:
            continue
        kind, _, value = item.partition(":")
        try:
            n = int(value)
        except ValueError:
            raise ConfigError(f"--servers {item!r}: write embedded:MAX_BATCH or ray:REPLICAS") from None
        if n < 1:
            raise ConfigError(f"--servers {item!r}: the number must be >= 1")
        common = ("--threads", str(threads), "--max-wait-ms", str(max_wait_ms))
        if kind == "embedded":
            setups.append(
                ServerSetup(
                    f"embedded, max batch {n}", ("--max-batch", str(n), "--workers", str(workers), *common)
                )
            )
        elif kind == "ray":
            args = ("--backend", "ray", "--replicas", str(n), "--max-batch", str(max_batch), *common)
            setups.append(ServerSetup(f"ray, {n} replica{'s' if n > 1 else ''}", args))
        else:
            raise ConfigError(f"--servers {item!r}: unknown backend {kind!r} (embedded or ray)")
    if not setups:
        raise ConfigError("--servers names no server")
    return setups


def start_server(model: str, setup: ServerSetup, log_path: Path) -> tuple[subprocess.Popen, int]:
    """``splitasr serve`` for ``setup`` in its own process on an ephemeral loopback port."""
    from splitasr.bench.procs import spawn, splitasr_command

    args = ["serve", "--models", model, "--host", "127.0.0.1", "--port", "0", *setup.args]
    return spawn(splitasr_command(*args), log_path, timeout_s=300)


@dataclass
class _Tally:
    """What one row's requests came back with."""

    t0: float
    latencies: list[float]
    batches: list[int]
    queue_ms: list[float]
    depth: list[tuple[float, int]]  # (seconds since the row started, server queue depth)
    errors: Counter
    sent: int = 0
    mismatches: int = 0
    shed: int = 0


class _Driver:
    """Sends requests to one server and checks each reply against its expected text."""

    def __init__(self, stubs, model, point, codec, payloads, want, beam, metadata):
        self.stubs, self.model, self.point, self.codec = stubs, model, point, codec
        self.payloads, self.want, self.beam, self.metadata = payloads, want, beam, metadata
        self.rng = random.Random(0)

    async def call(self, stub, j: int, tally: _Tally | None, t_sched: float | None = None) -> None:
        import grpc

        from splitasr.transport import splitasr_pb2 as pb

        rid = self.rng.getrandbits(64)
        req = pb.TranscribeRequest(
            model=self.model,
            point=self.point,
            codec=self.codec,
            payload=self.payloads[j],
            request_id=rid,
            sent_unix_ns=time.time_ns(),
            beam=self.beam,
        )
        t0 = time.perf_counter() if t_sched is None else t_sched
        if tally is not None:
            tally.sent += 1
        try:
            reply = await stub.Transcribe(req, timeout=CALL_TIMEOUT_S, metadata=self.metadata)
        except grpc.aio.AioRpcError as e:
            if tally is None:
                raise
            tally.errors[e.code().name] += 1
            return
        if tally is None:
            return
        now = time.perf_counter()
        if reply.request_id != rid:  # another request's reply: counted lost (sent, not answered)
            return
        tally.latencies.append(1000 * (now - t0))
        tally.batches.append(reply.timings.batch_size)
        tally.queue_ms.append(reply.timings.queue_ms)
        tally.depth.append((now - tally.t0, reply.load.queue_depth))
        tally.mismatches += reply.text != self.want[j]

    async def warm_up(self, n: int) -> None:
        """``n`` requests, a few at a time, before any row counts (their errors raise)."""
        width = min(len(self.stubs), 4)
        for k in range(0, n, width):
            await asyncio.gather(
                *(self.call(self.stubs[i], (k + i) % len(self.payloads), None) for i in range(width))
            )

    async def closed_loop(self, clients: int, requests: int, max_seconds: float) -> _Tally:
        tally = _Tally(time.perf_counter(), [], [], [], [], Counter())
        stop_at = tally.t0 + max_seconds
        next_job = 0

        async def client(stub):
            nonlocal next_job
            while next_job < requests and time.perf_counter() < stop_at:
                k, next_job = next_job, next_job + 1
                await self.call(stub, k % len(self.payloads), tally)

        await asyncio.gather(*(client(self.stubs[i % len(self.stubs)]) for i in range(clients)))
        return tally

    async def open_loop(self, rate: float, requests: int, max_seconds: float) -> _Tally:
        tally = _Tally(time.perf_counter(), [], [], [], [], Counter())
        arrivals = random.Random(1)
        tasks: set[asyncio.Task] = set()
        t_next = tally.t0
        for k in range(requests):
            t_next += arrivals.expovariate(rate)
            if t_next - tally.t0 > max_seconds:
                break
            delay = t_next - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            if len(tasks) >= MAX_OUTSTANDING:
                tally.shed += 1
                continue
            task = asyncio.create_task(
                self.call(self.stubs[k % len(self.stubs)], k % len(self.payloads), tally, t_next)
            )
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        if tasks:
            await asyncio.wait(tasks, timeout=CALL_TIMEOUT_S + 5)
        return tally


def _row(tally: _Tally, wall: float) -> dict:
    lat = np.array(tally.latencies or [float("nan")])
    pct = {f"p{q}_ms": round(float(np.percentile(lat, q)), 1) for q in (50, 95, 99)}
    depths = [d for _, d in tally.depth]
    return {
        "sent": tally.sent,
        "completed": len(tally.latencies),
        "errors": sum(tally.errors.values()),
        "errors_by_code": dict(tally.errors),
        "lost": tally.sent - len(tally.latencies) - sum(tally.errors.values()),
        "shed": tally.shed,
        "mismatches": tally.mismatches,
        "wall_s": round(wall, 3),
        "throughput_rps": round(len(tally.latencies) / wall, 3) if wall > 0 else 0.0,
        **pct,
        "mean_ms": round(float(lat.mean()), 1),
        "mean_batch": round(float(np.mean(tally.batches)), 2) if tally.batches else 0.0,
        "max_batch_seen": int(max(tally.batches)) if tally.batches else 0,
        "mean_queue_ms": round(float(np.mean(tally.queue_ms)), 1) if tally.queue_ms else 0.0,
        "mean_queue_depth": round(float(np.mean(depths)), 2) if depths else 0.0,
        "max_queue_depth": int(max(depths)) if depths else 0,
        "queue_depth_series": [[round(t, 3), d] for t, d in tally.depth],
    }


async def _drive_server(
    address: str,
    driver_args: tuple,
    loads: list[tuple[str, float]],
    requests: int,
    max_seconds: float,
    warmup: int,
    token: str | None,
    tls_ca: str | None,
) -> list[dict]:
    """Every load of one server, in order: ``("clients", K)`` or ``("rate", R)``."""
    import grpc

    from splitasr.transport import splitasr_pb2_grpc as pb_grpc
    from splitasr.transport.tls import channel_credentials

    n_channels = max([int(v) for kind, v in loads if kind == "clients"] + [8])
    creds = channel_credentials(tls_ca) if tls_ca else None
    channels = [
        grpc.aio.secure_channel(address, creds) if creds else grpc.aio.insecure_channel(address)
        for _ in range(n_channels)
    ]
    metadata = (("authorization", f"Bearer {token}"),) if token else None
    try:
        driver = _Driver([pb_grpc.CloudStub(c) for c in channels], *driver_args, metadata)
        try:
            await driver.warm_up(warmup)
        except grpc.aio.AioRpcError as e:
            raise SplitASRError(f"{address}: warm-up failed: {e.code().name}: {e.details()}") from None
        rows = []
        for kind, value in loads:
            t0 = time.perf_counter()
            if kind == "clients":
                tally = await driver.closed_loop(int(value), requests, max_seconds)
            else:
                tally = await driver.open_loop(value, requests, max_seconds)
            row = {"load": kind, "clients": int(value) if kind == "clients" else 0}
            row |= {"rate_rps": value if kind == "rate" else 0.0, **_row(tally, time.perf_counter() - t0)}
            rows.append(row)
        return rows
    finally:
        for c in channels:
            await c.close()


def run_load_bench(
    model_name: str,
    manifest: str,
    out: str,
    point: str,
    codec: str,
    clients: list[int] | None = None,
    rates: list[float] | None = None,
    requests: int = 200,
    target: str | None = None,
    servers: list[ServerSetup] | None = None,
    max_wait_ms: float = 5.0,
    limit: int | None = None,
    max_seconds: float = 120.0,
    beam: int | None = None,
    token: str | None = None,
    tls_ca: str | None = None,
    server_note: str = "",
    command: str = "",
) -> dict:
    """Run the load benchmark and write results.json, table.md and load.png to ``out``.

    ``target`` (``HOST:PORT``) drives a running server; otherwise each of ``servers`` is
    started, driven and stopped in turn. Each server gets every load: a closed loop per
    entry of ``clients``, an open loop per entry of ``rates`` (requests per second).
    """
    import torch

    from splitasr.audio import load_audio
    from splitasr.bench.procs import stop
    from splitasr.bench.report import machine_description, write_results
    from splitasr.manifest import read_manifest
    from splitasr.model.registry import load_model
    from splitasr.pipeline import Cloud, Edge

    loads = [("clients", float(k)) for k in clients or []] + [("rate", float(r)) for r in rates or []]
    if not loads:
        raise ConfigError("give --clients and/or --rate")
    if target is None and not servers:
        raise ConfigError("give --target HOST:PORT or --servers")
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    model = load_model(model_name)
    root = Path(manifest).parent
    utts = read_manifest(manifest)[:limit]
    if not utts:
        raise ConfigError(f"{manifest}: no utterances")
    edge, cloud = Edge(model), Cloud(model)
    decoder = None if beam is None else model.make_decoder(beam=beam)
    payloads, want, seconds = [], [], []
    for u in utts:
        wave = torch.from_numpy(load_audio(u.resolve(root)))
        sent = edge.encode(wave, point, codec)
        payloads.append(sent.payload)
        want.append(cloud.transcribe(sent.payload, point, codec, decoder).text)
        seconds.append(len(wave) / model.sample_rate)
    driver_args = (model_name, point, codec, payloads, want, beam)

    def drive(address: str) -> list[dict]:
        return asyncio.run(
            _drive_server(address, driver_args, loads, requests, max_seconds, WARMUP_REQUESTS, token, tls_ca)
        )

    rows = []
    for name, address, setup in (
        [(server_note or target, target, None)] if target else [(s.name, None, s) for s in servers or []]
    ):
        proc = None
        if setup is not None:
            slug = name.replace(", ", "-").replace(" ", "")
            proc, port = start_server(model_name, setup, out_dir / f"server-{slug}.log")
            address = f"127.0.0.1:{port}"
        try:
            got = drive(address)
        finally:
            if proc is not None:
                stop(proc)
        for row in got:
            rows.append({"server": name, **row})
            what = (
                f"{row['clients']} clients"
                if row["load"] == "clients"
                else f"{row['rate_rps']:g} req/s offered"
            )
            print(
                f"{name}, {what}: {row['throughput_rps']:.2f} req/s, p50 {row['p50_ms']:.0f} ms, "
                f"p99 {row['p99_ms']:.0f} ms, mean batch {row['mean_batch']:.2f}, "
                f"errors {row['errors']}, lost {row['lost']}, mismatches {row['mismatches']}",
                flush=True,
            )
    machine = machine_description()
    where = f"target {target}" if target else "servers started by the bench on loopback"
    machine["setting"] = (
        f"{machine['cores']}-core {machine['cpu']}, torch {machine['torch']} CPU; {where}; "
        f"clients in one other process on the same machine"
    )
    payload = {
        "model": model_name,
        "point": point,
        "codec": codec,
        "beam": beam if beam is not None else model.default_beam,
        "utterances": len(utts),
        "audio_s_mean": round(float(np.mean(seconds)), 3),
        "payload_bytes_mean": round(float(np.mean([len(p) for p in payloads])), 1),
        "requests": requests,
        "max_wait_ms": max_wait_ms,
        "target": target,
        "servers": [{"name": s.name, "args": list(s.args)} for s in servers or []] if not target else [],
        "machine": machine,
        "command": command,
        "rows": rows,
    }
    write_results(out_dir, payload, _table(payload), command)
    _plot(payload, out_dir / "load.png")
    return payload


def _table(payload: dict) -> str:
    from splitasr.bench.report import markdown_table

    rows = [
        {**r, "offered": f"{r['clients']} clients" if r["load"] == "clients" else f"{r['rate_rps']:g} req/s"}
        for r in payload["rows"]
    ]
    columns = [
        ("server", "server", "s"),
        ("offered", "load", "s"),
        ("completed", "replies", "d"),
        ("throughput_rps", "req/s", ".2f"),
        ("p50_ms", "p50 ms", ".0f"),
        ("p95_ms", "p95 ms", ".0f"),
        ("p99_ms", "p99 ms", ".0f"),
        ("mean_batch", "mean batch", ".2f"),
        ("mean_queue_depth", "mean queue depth", ".1f"),
        ("errors", "errors", "d"),
        ("lost", "lost", "d"),
        ("mismatches", "text mismatches", "d"),
    ]
    return (
        f"{payload['model']} at `{payload['point']}` with `{payload['codec']}`, {payload['utterances']} "
        f"utterances (mean {payload['audio_s_mean']:.2f} s), beam {payload['beam']}, "
        f"max wait {payload['max_wait_ms']} ms.  \nSetting: {payload['machine']['setting']}\n\n"
        + markdown_table(rows, columns)
    )


def _plot(payload: dict, path: Path) -> None:
    """Left: p50 and p99 latency against throughput, one line per server. Right: the
    server's queue depth over time in each server's heaviest row."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    names = list(dict.fromkeys(r["server"] for r in payload["rows"]))
    for i, name in enumerate(names):
        rows = sorted((r for r in payload["rows"] if r["server"] == name), key=lambda r: r["throughput_rps"])
        color = f"C{i}"
        x = [r["throughput_rps"] for r in rows]
        axes[0].plot(x, [r["p50_ms"] for r in rows], "o-", color=color, label=f"{name} p50")
        axes[0].plot(x, [r["p99_ms"] for r in rows], "s--", color=color, alpha=0.7, label=f"{name} p99")
        heavy = max(rows, key=lambda r: r["mean_queue_depth"])
        series = np.array(heavy["queue_depth_series"] or [[0, 0]], dtype=float)
        axes[1].plot(series[:, 0], series[:, 1], color=color, lw=0.8, label=name)
    axes[0].set_xlabel("throughput, requests / s")
    axes[0].set_ylabel("latency, ms")
    axes[0].set_yscale("log")
    axes[0].legend(fontsize=7)
    axes[0].set_title("latency vs throughput")
    axes[1].set_xlabel("seconds into the run")
    axes[1].set_ylabel("server queue depth")
    axes[1].set_title("queue depth (heaviest load per server)")
    axes[1].legend(fontsize=7)
    fig.suptitle(f"{payload['model']} {payload['point']} {payload['codec']}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
