"""Where the CPU goes when Ray Serve runs DS2 on this machine (docs/serving.md "Measured").

    python scripts/ray_cpu_breakdown.py [--replicas 2] [--clients 16] [--requests 300]

Starts ``splitasr serve --backend ray`` (DS2, one thread per replica) in its own process,
makes DS2 ``proj`` ``deepcod+ans`` payloads of 30 test sentences, and drives a closed loop
with ``--clients`` gRPC clients from this process (``splitasr.bench.load``); the CPU
seconds each process used during the loop (utime + stime from /proc) are summed per role:
the load generator (this process), the ingress (the serve process), the replicas
(``ray::ServeReplica``), Ray's other processes, and the rest of the machine.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds() -> dict[int, tuple[str, float]]:
    out = {}
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            stat = (d / "stat").read_text()
            cmd = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        out[int(d.name)] = (
            cmd or stat[stat.index("(") + 1 : stat.rindex(")")],
            (int(fields[11]) + int(fields[12])) / TICK,
        )
    return out


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--replicas", type=int, default=2)
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--requests", type=int, default=300)
    args = ap.parse_args()
    import torch

    from splitasr.audio import load_audio
    from splitasr.bench.load import _drive_server
    from splitasr.bench.procs import spawn, splitasr_command, stop
    from splitasr.manifest import read_manifest
    from splitasr.model.registry import load_model
    from splitasr.pipeline import Cloud, Edge

    manifest = Path("data/corpus/test_sentences_seen_voices.jsonl")
    model = load_model("ds2")
    edge, cloud = Edge(model), Cloud(model)
    payloads, want = [], []
    for u in read_manifest(manifest)[:30]:
        wave = torch.from_numpy(load_audio(u.resolve(manifest.parent)))
        p = edge.encode(wave, "proj", "deepcod+ans").payload
        payloads.append(p)
        want.append(cloud.transcribe(p, "proj", "deepcod+ans").text)
    serve = ["serve", "--models", "ds2", "--host", "127.0.0.1", "--port", "0", "--backend", "ray"]
    serve += ["--replicas", str(args.replicas), "--threads", "1", "--max-batch", "8"]
    log = Path(tempfile.mkdtemp()) / "server.log"
    proc, port = spawn(splitasr_command(*serve), log, timeout_s=300)
    try:
        driver = ("ds2", "proj", "deepcod+ans", payloads, want, None)
        addr = f"127.0.0.1:{port}"
        asyncio.run(_drive_server(addr, driver, [("clients", 1.0)], 8, 30, 8, None, None))  # warm
        before, t0 = cpu_seconds(), time.perf_counter()
        rows = asyncio.run(
            _drive_server(addr, driver, [("clients", float(args.clients))], args.requests, 120, 0, None, None)
        )
        wall, after = time.perf_counter() - t0, cpu_seconds()
    finally:
        stop(proc)
    roles: dict[str, float] = {}
    me = os.getpid()
    for pid, (cmd, t) in after.items():
        d = t - before.get(pid, (cmd, 0.0))[1]
        if d <= 0:
            continue
        if pid == me:
            role = "load generator (16 clients)"
        elif pid == proc.pid:
            role = "ingress (splitasr serve)"
        elif "ServeReplica" in cmd:
            role = "replicas"
        elif "ray" in cmd or "gcs_server" in cmd or "raylet" in cmd:
            role = "Ray's other processes"
        else:
            role = "rest of the machine"
        roles[role] = roles.get(role, 0.0) + d
    r = rows[0]
    print(
        f"{args.replicas} replicas, {args.clients} clients: {r['completed']} replies in {wall:.1f} s "
        f"({r['throughput_rps']:.1f} req/s), errors {r['errors']}, mismatches {r['mismatches']}"
    )
    total = sum(roles.values())
    for role, s in sorted(roles.items(), key=lambda kv: -kv[1]):
        per = 1000 * s / max(r["completed"], 1)
        print(f"  {role:32s} {s:6.1f} CPU s  {100 * s / total:5.1f} %  ({per:.1f} ms/request)")
    print(f"  {'all':32s} {total:6.1f} CPU s of {2 * wall:.1f} available on 2 cores")
    return 0


if __name__ == "__main__":
    sys.exit(main())
