"""The planner live against its simulator (issue 13, item 6).

The same inputs, at the same arrival times, on the same changing link, twice:

* **live**: a loopback server (``splitasr serve`` in its own process, one worker, one
  thread) behind the link emulator
  (``EmulatorThread`` replaying the trace), and ``EdgeClient(mode="auto")`` with the
  planner and a fresh :class:`~splitasr.planner.estimator.NetworkEstimator` (prior: 100 ms
  RTT and the trace's first uplink rate, as the simulator's). The edge is this machine
  slowed by the edge profile's ``machine.slowdown`` (the shipped DS2 edge: x4, one thread).
  Each input's measured total is ``EdgeResult.timings["total"]`` (a probe it waited for
  included: none, unless the connecting probe failed);
* **simulated**: :func:`splitasr.planner.simulate.simulate` with the ``planner`` policy on
  the workload's measured per-input times (the workload's inputs are the audio files the
  live run transcribes), the same trace, arrivals, estimator prior and probe age.

Both totals are summed per phase of the trace (the row in force when the input was
decided), and the difference ``live / simulated - 1`` reported per phase, with the options
each chose and, for context, the simulator's edge-only and oracle totals.

Inputs: input ``k`` is the workload's input ``k mod n`` and arrives at ``lead_s + k *
gap_s`` after the emulator starts (``gap_s`` longer than the slowest input, so neither run
queues). Before the run, every option runs once on a direct loopback connection (lazy
codec state and first-call costs are not charged to either side), and the emulated
connection is opened (its handshake is not charged, nor the probe the client makes on
connecting; later probes run in the background in both runs).
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

import torch

from splitasr.audio import load_audio
from splitasr.bench.procs import spawn, splitasr_command, stop
from splitasr.netem import EmulatorThread, Trace, TraceRow
from splitasr.planner.estimator import NetworkEstimator
from splitasr.planner.policy import NO_BUDGET, Budget, Planner
from splitasr.planner.profiles import Profile, ProfileError, WerTable
from splitasr.planner.simulate import (
    EstimatorSettings,
    PlannerPolicy,
    build_cases,
    measured_options,
    run_policies,
    simulate,
    summarise_run,
)
from splitasr.planner.workload import Workload
from splitasr.transport.client import CloudClient, EdgeClient

CONTEXT_POLICIES = ("edge", "cloud-pcm", "oracle")


def scaled_trace(trace: Trace, factor: float) -> Trace:
    """``trace`` with every step's time multiplied by ``factor`` (compressed when < 1)."""
    rows = tuple(TraceRow(r.t_s * factor, r.one_way_ms, r.up_kbps, r.down_kbps) for r in trace.rows)
    return Trace(f"{trace.name}x{factor:g}", rows, trace.jitter_ms, trace.loss)


def run_length_s(trace: Trace) -> float:
    """The trace's steps and, after the last one, as long again as the one before it
    (one step: 60 s)."""
    t = [r.t_s for r in trace.rows]
    return t[-1] + (t[-1] - t[-2] if len(t) > 1 else 60.0)


@dataclass
class LiveStep:
    """One input as the live client ran it."""

    index: int
    input_id: str
    seconds: float
    start_s: float  # since the emulator started
    phase: int
    decision: str
    predicted_ms: float
    total_ms: float
    probe_ms: float
    fallback: str | None
    text: str


@dataclass
class Validation:
    """Settings of one validation run."""

    planner: Planner
    edge_workload: Workload
    cloud_workload: Workload
    trace: Trace
    corpus: Path
    gap_s: float = 1.5
    lead_s: float = 1.0
    probe_age_s: float = 60.0
    slowdown: float | None = None  # None: the edge profile's machine.slowdown
    beam: int | None = None
    budget: Budget = NO_BUDGET
    timeout_s: float = 10.0
    log: object = field(default=None, repr=False)


def restricted_planner(
    edge: Profile, cloud: Profile, wer: WerTable | None, ew: Workload, cw: Workload
) -> Planner:
    """The planner over the options the workloads measured on every input (what the
    simulator can charge)."""
    full = Planner(edge, cloud, wer)
    return Planner(edge, cloud, wer, options=measured_options(full, ew, cw))


def _say(v: Validation, message: str) -> None:
    if v.log is not None:
        v.log(message)  # type: ignore[operator]


def run_live(v: Validation, model) -> tuple[list[LiveStep], list[float]]:
    """The live run (module docstring): the steps and the arrival times used."""
    inputs = v.edge_workload.inputs
    n = max(1, int((run_length_s(v.trace) - v.lead_s) / v.gap_s))
    arrivals = [v.lead_s + k * v.gap_s for k in range(n)]
    waves = {}
    for e in inputs:
        path = v.corpus / e.id
        if not path.is_file():
            raise ProfileError(f"{path}: the workload's input is not there (--corpus)")
        waves[e.id] = torch.from_numpy(load_audio(path))
    slowdown = v.slowdown if v.slowdown is not None else v.planner.edge.machine.slowdown
    decoder = model.make_decoder(beam=v.beam)
    # the server in its own process, as in deployment and in `bench e2e`: in this process its
    # gRPC threads and tails would compete with the edge's model for the interpreter
    log_path = Path(tempfile.gettempdir()) / f"splitasr-validate-server-{os.getpid()}.log"
    proc, port = spawn(
        splitasr_command("serve", "--models", model.name, "--host", "127.0.0.1", "--port", "0",
                  "--workers", "1", "--threads", "1"),
        log_path,
    )  # fmt: skip
    server = SimpleNamespace(port=port)
    try:
        return _run_live(v, model, server, inputs, waves, arrivals, slowdown, decoder, n)
    finally:
        stop(proc)


def _run_live(v: Validation, model, server, inputs, waves, arrivals, slowdown, decoder, n: int):
    """The live inputs against ``server`` (anything with a ``port``), through the emulator."""
    steps: list[LiveStep] = []
    _say(v, "warm-up: every option once on a direct connection")
    with CloudClient(f"127.0.0.1:{server.port}", timeout_s=60) as direct:
        warm = EdgeClient(model, direct, decoder=decoder)
        w = waves[inputs[0].id]
        for o in v.planner.options:
            if o.kind == "edge":
                warm.transcribe(w, mode="edge")
            else:
                warm.transcribe(w, o.point, o.codec, mode="split", beam=v.beam)
    estimator = NetworkEstimator(rtt_ms=100.0, up_kbps=v.trace.rows[0].up_kbps, probe_age_s=v.probe_age_s)
    with EmulatorThread(("127.0.0.1", server.port), trace=v.trace) as em:
        t0 = em.emulator.started_at  # the emulator's loop clock is time.monotonic
        cloud = CloudClient(f"127.0.0.1:{em.port}", timeout_s=v.timeout_s)
        client = EdgeClient(
            model,
            cloud,
            decoder=decoder,
            slowdown=slowdown,
            planner=v.planner,
            estimator=estimator,
            budget=v.budget,
        )
        try:
            cloud.wait_ready(30.0)  # the handshake, not charged
            _say(v, f"live: {n} inputs over {run_length_s(v.trace):g} s of {v.trace.name}")
            for k, at in enumerate(arrivals):
                wait = t0 + at - time.monotonic()
                if wait > 0:
                    time.sleep(wait)
                start = time.monotonic() - t0
                e = inputs[k % len(inputs)]
                r = client.transcribe(waves[e.id], mode="auto", beam=v.beam)
                probe = r.timings.get("probe", 0.0)
                phase = _phase(v.trace, start + probe / 1000.0)
                steps.append(
                    LiveStep(
                        k,
                        e.id,
                        e.seconds,
                        round(start, 4),
                        phase,
                        r.decision or "",
                        r.predicted_ms or 0.0,
                        r.timings["total"],
                        probe,
                        r.fallback,
                        r.text,
                    )
                )
        finally:
            cloud.close()
    return steps, arrivals


def _phase(trace: Trace, t: float) -> int:
    return max((i for i, r in enumerate(trace.rows) if r.t_s <= t), default=0)


def run_simulated(v: Validation, arrivals: list[float]) -> dict:
    """The simulator on the same inputs, arrivals, trace and estimator settings: the
    planner's summary and, for context, edge-only, cloud PCM and the oracle."""
    inputs = v.edge_workload.inputs
    cases_all = build_cases(v.planner, v.edge_workload, v.cloud_workload)
    cases = [cases_all[k % len(inputs)] for k in range(len(arrivals))]
    settings = EstimatorSettings(rtt_ms=100.0, up_kbps=None, probe_age_s=v.probe_age_s)
    runs = {
        "planner": simulate(PlannerPolicy(v.planner, v.budget), v.planner, cases, v.trace, arrivals, settings)
    }
    runs.update(run_policies(v.planner, cases, v.trace, CONTEXT_POLICIES, v.budget, arrivals, settings))
    out = {name: summarise_run(v.planner, run, v.trace) for name, run in runs.items()}
    for ph in out["planner"]["phases"]:  # the planner's choices per phase, as the live run's
        choices: dict[str, int] = {}
        for st in runs["planner"].steps:
            if st.phase == ph["phase"]:
                label = v.planner.options[st.option].label
                choices[label] = choices.get(label, 0) + 1
        ph["choices"] = dict(sorted(choices.items(), key=lambda kv: -kv[1]))
    return out


def compare(v: Validation, steps: list[LiveStep], sim: dict) -> dict:
    """Per phase: the live and simulated totals and their difference (percent of the
    simulated), the options each chose, and the simulator's edge-only and oracle."""
    phases = []
    for p, row in enumerate(v.trace.rows):
        live = [s for s in steps if s.phase == p]
        sp = {name: next((x for x in s["phases"] if x["phase"] == p), None) for name, s in sim.items()}
        planner = sp.get("planner")
        live_ms = sum(s.total_ms for s in live)
        sim_ms = planner["total_ms"] if planner else None
        choices: dict[str, int] = {}
        for s in live:
            choices[s.decision] = choices.get(s.decision, 0) + 1
        phases.append(
            {
                "phase": p,
                "one_way_ms": row.one_way_ms,
                "up_kbps": row.up_kbps,
                "live_inputs": len(live),
                "sim_inputs": planner["inputs"] if planner else 0,
                "live_ms": round(live_ms, 1),
                "sim_ms": None if sim_ms is None else round(sim_ms, 1),
                "diff_pct": None if not sim_ms else round(100.0 * (live_ms / sim_ms - 1.0), 2),
                "live_predicted_ms": round(sum(s.predicted_ms for s in live), 1),
                "live_probes": sum(1 for s in live if s.probe_ms > 0),
                "live_fallbacks": sum(1 for s in live if s.fallback),
                "live_choices": dict(sorted(choices.items(), key=lambda kv: -kv[1])),
                "sim_choices": planner.get("choices", {}) if planner else {},
                "context_ms": {
                    name: round(x["total_ms"], 1)
                    for name, x in sp.items()
                    if x is not None and name != "planner"
                },
            }
        )
    live_total = sum(s.total_ms for s in steps)
    sim_total = sim["planner"]["total_ms"]
    return {
        "phases": phases,
        "live_total_ms": round(live_total, 1),
        "sim_total_ms": round(sim_total, 1),
        "diff_pct": round(100.0 * (live_total / sim_total - 1.0), 2) if sim_total else None,
        "sim_choices": sim["planner"]["choices"],
        "sim_probes": sim["planner"]["probes"],
    }


def table_markdown(result: dict) -> str:
    """The per-phase comparison as a markdown table."""
    lines = [
        "| phase | one-way ms | inputs live/sim | live s | simulated s | live vs sim % "
        "| live probes | live choices | simulated choices | sim edge s | sim oracle s |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for p in result["phases"]:
        ctx = p["context_ms"]
        ch = ", ".join(f"{k} {v}" for k, v in p["live_choices"].items())
        sch = ", ".join(f"{k} {v}" for k, v in p["sim_choices"].items())
        sim = "-" if p["sim_ms"] is None else f"{p['sim_ms'] / 1000:.2f}"
        diff = "-" if p["diff_pct"] is None else f"{p['diff_pct']:+.1f}"
        lines.append(
            f"| {p['phase']} | {p['one_way_ms']:g} | {p['live_inputs']}/{p['sim_inputs']} | "
            f"{p['live_ms'] / 1000:.2f} | {sim} | {diff} | {p['live_probes']} | {ch} | {sch} | "
            f"{ctx.get('edge', 0) / 1000:.2f} | {ctx.get('oracle', 0) / 1000:.2f} |"
        )
    lines.append(
        f"\nWhole run: live {result['live_total_ms'] / 1000:.2f} s, "
        f"simulated {result['sim_total_ms'] / 1000:.2f} s "
        f"({result['diff_pct']:+.1f} %); simulated planner's choices: "
        + ", ".join(f"{k} {v}" for k, v in result["sim_choices"].items())
    )
    return "\n".join(lines) + "\n"


def validate(v: Validation, model, out: str | Path | None = None) -> dict:
    """Live, then simulated, then the comparison (written to ``out``/results.json and
    table.md when given)."""
    steps, arrivals = run_live(v, model)
    sim = run_simulated(v, arrivals)
    result = compare(v, steps, sim)
    result["settings"] = {
        "trace": [vars(r) for r in v.trace.rows],
        "gap_s": v.gap_s,
        "lead_s": v.lead_s,
        "probe_age_s": v.probe_age_s,
        "slowdown": v.slowdown if v.slowdown is not None else v.planner.edge.machine.slowdown,
        "beam": v.beam,
        "options": [o.label for o in v.planner.options],
        "inputs": len(steps),
    }
    result["live_steps"] = [vars(s) for s in steps]
    if out is not None:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "results.json").write_text(json.dumps(result, indent=1) + "\n")
        (out / "table.md").write_text(table_markdown(result))
    return result


__all__ = [
    "LiveStep",
    "Validation",
    "compare",
    "restricted_planner",
    "run_length_s",
    "run_live",
    "run_simulated",
    "scaled_trace",
    "table_markdown",
    "validate",
]
