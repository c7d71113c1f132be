"""Decision overhead of the planner: mean and p99 of ``Planner.decide`` over 10k inputs.

    python scripts/bench_planner.py --edge-profile E.json --cloud-profile C.json [--n 10000]

Each decision gets another input length (uniform 0.5..20 s), RTT, uplink and server load,
with a WER and an energy budget set (the slowest path: every mask is applied). Timed one
decision at a time with ``time.perf_counter_ns`` after 500 untimed warm-up decisions; the
profile loading and the ``Planner`` construction (once per pair of profiles) are not
counted. Prints one JSON line (and writes it to ``--out`` when given).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from splitasr.planner import Budget, NetworkEstimate, Planner, PowerModel, ServerLoad  # noqa: E402
from splitasr.planner.profiles import load_profile, load_wer_table  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--edge-profile", required=True)
    ap.add_argument("--cloud-profile", required=True)
    ap.add_argument("--n", type=int, default=10_000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out")
    args = ap.parse_args()
    edge, cloud = load_profile(args.edge_profile), load_profile(args.cloud_profile)
    try:
        wer = load_wer_table(edge.model)
    except Exception:  # noqa: BLE001 - no shipped table: time it without
        wer = None
    t0 = time.perf_counter()
    planner = Planner(edge, cloud, wer, PowerModel(2.0, 1e-6, 1.0, 0.2))
    build_ms = 1000 * (time.perf_counter() - t0)
    rng = random.Random(args.seed)
    inputs = [
        (
            rng.uniform(0.5, 20.0),
            NetworkEstimate(rng.uniform(10, 300), rng.uniform(50, 5000)),
            ServerLoad(rng.randrange(0, 8), rng.uniform(0, 200)),
        )
        for _ in range(args.n)
    ]
    budget = Budget(wer_points=1.0, energy_j=5.0)
    for s, net, load in inputs[:500]:
        planner.decide(s, net, load, budget)
    times = []
    for s, net, load in inputs:
        t = time.perf_counter_ns()
        planner.decide(s, net, load, budget)
        times.append(time.perf_counter_ns() - t)
    times.sort()
    result = {
        "decisions": args.n,
        "options": len(planner.options),
        "mean_us": round(sum(times) / len(times) / 1000, 2),
        "p50_us": round(times[len(times) // 2] / 1000, 2),
        "p99_us": round(times[int(0.99 * len(times))] / 1000, 2),
        "max_us": round(times[-1] / 1000, 2),
        "over_100us": sum(t > 100_000 for t in times),
        "planner_build_ms": round(build_ms, 2),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, python {platform.python_version()}",
        "command": "python " + " ".join(sys.argv),
    }
    print(json.dumps(result))
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
