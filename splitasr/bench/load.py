"""``splitasr bench load``: throughput and latency of ``splitasr serve`` under concurrent
clients, for several ``--max-batch`` settings (dynamic batching against none).

For each setting a server runs in a separate process on 127.0.0.1 (an ephemeral port,
stopped afterwards). The payloads are made once with :meth:`Edge.encode`, and their
single-request texts once with :meth:`Cloud.transcribe` in this process; then ``clients``
concurrent asyncio gRPC clients send ``requests`` requests in all (or stop after
``max_seconds``), each reply's text is compared with its single-request text, and the
throughput, p50/p95 latency and mean batch size are written to results.json, table.md and
load.png.
"""

from __future__ import annotations

import asyncio
import random
import subprocess
import time
from pathlib import Path

import numpy as np
import torch

from splitasr.audio import load_audio
from splitasr.bench.procs import spawn, splitasr_command, stop
from splitasr.bench.report import machine_description, markdown_table, write_results
from splitasr.manifest import read_manifest
from splitasr.model.registry import load_model
from splitasr.pipeline import Cloud, Edge


def start_server(
    model: str, max_batch: int, max_wait_ms: float, workers: int, threads: int, log_path: Path
) -> tuple[subprocess.Popen, int]:
    """``splitasr serve`` in its own process on an ephemeral loopback port: (process, port)."""
    args = ["serve", "--models", model, "--host", "127.0.0.1", "--port", "0", "--workers", str(workers)]
    args += ["--threads", str(threads), "--max-batch", str(max_batch), "--max-wait-ms", str(max_wait_ms)]
    return spawn(splitasr_command(*args), log_path, timeout_s=120)


async def _drive(
    port: int,
    model: str,
    point: str,
    codec: str,
    payloads: list[bytes],
    want: list[str],
    clients: int,
    requests: int,
    max_seconds: float,
    warmup: int,
    beam: int | None = None,
) -> dict:
    import grpc

    from splitasr.transport import splitasr_pb2 as pb
    from splitasr.transport import splitasr_pb2_grpc as pb_grpc

    address = f"127.0.0.1:{port}"
    channels = [grpc.aio.insecure_channel(address) for _ in range(clients)]
    stubs = [pb_grpc.CloudStub(c) for c in channels]
    rng = random.Random(0)

    async def call(stub, j: int):
        req = pb.TranscribeRequest(
            model=model,
            point=point,
            codec=codec,
            payload=payloads[j],
            request_id=rng.getrandbits(64),
            sent_unix_ns=time.time_ns(),
            beam=beam,
        )
        t0 = time.perf_counter()
        reply = await stub.Transcribe(req, timeout=120)
        return reply, 1000 * (time.perf_counter() - t0)

    try:
        for j in range(min(warmup, len(payloads))):  # codec state, first-call costs
            await call(stubs[0], j)
        latencies, batches, queue_ms, mismatches, errors = [], [], [], 0, 0
        next_job = 0
        t_start = time.perf_counter()
        stop_at = t_start + max_seconds

        async def client(stub):
            nonlocal next_job, mismatches, errors
            while next_job < requests and time.perf_counter() < stop_at:
                k = next_job
                next_job += 1
                j = k % len(payloads)
                try:
                    reply, ms = await call(stub, j)
                except grpc.aio.AioRpcError:
                    errors += 1
                    continue
                latencies.append(ms)
                batches.append(reply.timings.batch_size)
                queue_ms.append(reply.timings.queue_ms)
                mismatches += reply.text != want[j]

        await asyncio.gather(*(client(s) for s in stubs))
        wall = time.perf_counter() - t_start
    finally:
        for c in channels:
            await c.close()
    lat = np.array(latencies or [float("nan")])
    return {
        "completed": len(latencies),
        "errors": errors,
        "mismatches": mismatches,
        "wall_s": round(wall, 3),
        "throughput_rps": round(len(latencies) / wall, 3) if wall > 0 else 0.0,
        "p50_ms": round(float(np.percentile(lat, 50)), 1),
        "p95_ms": round(float(np.percentile(lat, 95)), 1),
        "mean_ms": round(float(lat.mean()), 1),
        "mean_batch": round(float(np.mean(batches)), 2) if batches else 0.0,
        "max_batch_seen": int(max(batches)) if batches else 0,
        "mean_queue_ms": round(float(np.mean(queue_ms)), 1) if queue_ms else 0.0,
    }


def run_load_bench(
    model_name: str,
    manifest: str,
    out: str,
    point: str,
    codec: str,
    max_batches: list[int],
    clients: int = 32,
    requests: int = 200,
    max_wait_ms: float = 5.0,
    limit: int | None = None,
    workers: int = 2,
    server_threads: int = 1,
    max_seconds: float = 120.0,
    beam: int | None = None,
    command: str = "",
) -> dict:
    """Run the load benchmark and write results.json, table.md and load.png to ``out``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    model = load_model(model_name)
    root = Path(manifest).parent
    utts = read_manifest(manifest)[:limit]
    if not utts:
        raise ValueError(f"{manifest}: no utterances")
    edge, cloud = Edge(model), Cloud(model)
    decoder = None if beam is None else model.make_decoder(beam=beam)
    payloads, want, seconds = [], [], []
    for u in utts:
        wave = torch.from_numpy(load_audio(u.resolve(root)))
        sent = edge.encode(wave, point, codec)
        payloads.append(sent.payload)
        want.append(cloud.transcribe(sent.payload, point, codec, decoder).text)
        seconds.append(len(wave) / model.sample_rate)
    rows = []
    for mb in max_batches:
        proc, port = start_server(
            model_name, mb, max_wait_ms, workers, server_threads, out_dir / f"server-max-batch-{mb}.log"
        )
        try:
            got = asyncio.run(
                _drive(
                    port,
                    model_name,
                    point,
                    codec,
                    payloads,
                    want,
                    clients,
                    requests,
                    max_seconds,
                    warmup=4,
                    beam=beam,
                )
            )
        finally:
            stop(proc)
        rows.append({"max_batch": mb, "max_wait_ms": max_wait_ms, "clients": clients, **got})
        print(
            f"max-batch {mb}: {got['throughput_rps']:.2f} req/s, p50 {got['p50_ms']:.0f} ms, "
            f"p95 {got['p95_ms']:.0f} ms, mean batch {got['mean_batch']:.2f}, "
            f"mismatches {got['mismatches']}, errors {got['errors']}",
            flush=True,
        )
    machine = {**machine_description(), "server_threads": server_threads, "workers": workers}
    machine["setting"] = (
        f"{machine['cores']}-core {machine['cpu']}, torch {machine['torch']} CPU, loopback; "
        f"server {workers} workers x {server_threads} torch thread(s); clients in one other process"
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
        "machine": machine,
        "command": command,
        "rows": rows,
    }
    columns = [
        ("max_batch", "max batch", "d"),
        ("clients", "clients", "d"),
        ("completed", "replies", "d"),
        ("throughput_rps", "req/s", ".2f"),
        ("p50_ms", "p50 ms", ".0f"),
        ("p95_ms", "p95 ms", ".0f"),
        ("mean_batch", "mean batch", ".2f"),
        ("mean_queue_ms", "mean queue ms", ".0f"),
        ("mismatches", "text mismatches", "d"),
        ("errors", "errors", "d"),
    ]
    table = (
        f"{model_name} at `{point}` with `{codec}`, {len(utts)} utterances "
        f"(mean {payload['audio_s_mean']:.2f} s), beam {payload['beam']}, max wait {max_wait_ms} ms.  \n"
        f"Setting: {machine['setting']}\n\n" + markdown_table(rows, columns)
    )
    write_results(out_dir, payload, table, command)
    fig, axes = plt.subplots(1, 2, figsize=(8, 3.2))
    labels = [f"max-batch {r['max_batch']}" for r in rows]
    axes[0].bar(labels, [r["throughput_rps"] for r in rows], color="tab:blue")
    axes[0].set_ylabel("requests / s")
    axes[0].set_title("throughput")
    x = np.arange(len(rows))
    axes[1].bar(x - 0.2, [r["p50_ms"] for r in rows], 0.4, label="p50")
    axes[1].bar(x + 0.2, [r["p95_ms"] for r in rows], 0.4, label="p95")
    axes[1].set_xticks(x, labels)
    axes[1].set_ylabel("latency, ms")
    axes[1].set_title("latency")
    axes[1].legend()
    fig.suptitle(f"{model_name} {point} {codec}, {clients} clients", fontsize=9)
    fig.tight_layout()
    fig.savefig(out_dir / "load.png", dpi=110)
    plt.close(fig)
    return payload
