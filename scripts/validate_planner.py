"""The planner live against its simulator on a changing link (issue 13, item 6).

    python scripts/validate_planner.py [--model ds2] [--time-scale 0.6667] [--gap-s 1.5]
        [--trace splitasr/netem/traces/paper001_100_200_300.csv] [--probe-age-s 40]
        [--edge-profile E --cloud-profile C --workload WE WC] [--corpus data/corpus]
        [--threads 1] [--beam N] [--out results/validate-ds2]

Runs ``EdgeClient(mode="auto")`` through the link emulator replaying the trace (its times x
``--time-scale``; default: paper 001's 100 -> 200 -> 300 ms trace in 40-s phases, 2 min)
on the workload's audio, then the simulator on the same inputs and arrivals, and prints
the per-phase totals and their difference (``splitasr.bench.validate``). Writes
results.json and table.md under ``--out``. Defaults: the shipped profiles and workloads of
the model; the probe age scaled like the trace (60 s x time scale). Needs an idle machine
(timings): about 3 minutes for DS2 on 2 cores.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from splitasr.errors import SplitASRError  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="ds2")
    ap.add_argument("--edge-profile")
    ap.add_argument("--cloud-profile")
    ap.add_argument("--workload", nargs=2, metavar=("EDGE", "CLOUD"))
    ap.add_argument("--corpus", default="data/corpus", help="the folder the workload's input ids are under")
    ap.add_argument("--trace", help="trace CSV (default: the shipped paper001_100_200_300)")
    ap.add_argument(
        "--time-scale", type=float, default=2 / 3, help="multiply the trace's times (0.6667: 40-s phases)"
    )
    ap.add_argument("--gap-s", type=float, default=1.5, help="seconds between arrivals (> the slowest input)")
    ap.add_argument("--probe-age-s", type=float, help="default: 60 x --time-scale")
    ap.add_argument(
        "--slowdown", type=float, help="edge slowdown (default: the edge profile's machine.slowdown)"
    )
    ap.add_argument("--wer-budget", type=float)
    ap.add_argument(
        "--beam", type=int, help="decoder beam (default: the model's own, as the workloads were measured)"
    )
    ap.add_argument("--threads", type=int, default=1, help="torch threads (the shipped profiles: 1)")
    ap.add_argument("--out", help="folder for results.json and table.md (default: results/validate-MODEL)")
    args = ap.parse_args(argv)
    try:
        return run(args)
    except SplitASRError as exc:
        print(f"validate_planner: error: {exc}", file=sys.stderr)
        return 2


def run(args) -> int:
    import math

    import torch

    from splitasr.bench.validate import Validation, restricted_planner, scaled_trace, table_markdown, validate
    from splitasr.errors import ConfigError
    from splitasr.model.registry import load_model
    from splitasr.netem import load_trace, shipped_trace
    from splitasr.planner.policy import Budget
    from splitasr.planner.profiles import DATA_DIR, load_profile, load_wer_table
    from splitasr.planner.workload import load_workload

    for flag, value in (("--time-scale", args.time_scale), ("--gap-s", args.gap_s)):
        if not (math.isfinite(value) and value > 0):
            raise ConfigError(f"{flag} must be a positive number")
    torch.set_num_threads(max(1, args.threads))
    m = args.model
    edge = load_profile(args.edge_profile or DATA_DIR / "profiles" / f"{m}-edge.json")
    cloud = load_profile(args.cloud_profile or DATA_DIR / "profiles" / f"{m}-cloud.json")
    we, wc = args.workload or (
        DATA_DIR / "workloads" / f"{m}-edge.json",
        DATA_DIR / "workloads" / f"{m}-cloud.json",
    )
    ew, cw = load_workload(we), load_workload(wc)
    try:
        wer = load_wer_table(m)
    except SplitASRError:
        wer = None
    trace = scaled_trace(load_trace(args.trace or shipped_trace("paper001_100_200_300")), args.time_scale)
    v = Validation(
        planner=restricted_planner(edge, cloud, wer, ew, cw),
        edge_workload=ew,
        cloud_workload=cw,
        trace=trace,
        corpus=Path(args.corpus),
        gap_s=args.gap_s,
        probe_age_s=args.probe_age_s if args.probe_age_s is not None else 60.0 * args.time_scale,
        slowdown=args.slowdown,
        beam=args.beam,
        budget=Budget(args.wer_budget),
        log=lambda msg: print(msg, file=sys.stderr, flush=True),
    )
    result = validate(v, load_model(m), args.out or f"results/validate-{m}")
    print(table_markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
