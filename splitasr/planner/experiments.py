"""Paper 001's experiments on the simulator (``splitasr simulate``): Fig. 4 and Table I.

* **Fixed latency** (paper 001, Fig. 4): the one-way delay fixed for the whole run, swept
  over ``one_way_ms`` (10..300 ms); the rates are the network trace's first row. Inputs
  run one after another.
* **Variable trace** (paper 001, Table I): the network trace (shipped: 100 -> 200 -> 300 ms,
  60 s each). Inputs arrive evenly spread over the trace (input ``k`` at ``k * span / n``),
  ``n`` chosen so that the gap between two arrivals is 1.25 x the slowest baseline's
  longest input on the trace's slowest row: no policy falls behind, so every policy sees
  the same inputs in the same phase (paper 001 steps the latency "at about 1/3 of the
  simulation and 2/3"), and the estimator's staleness is measured in real trace time.
  A workload whose every input has an ``arrival_s`` runs at those times, in order, instead.

The inputs are drawn with replacement (seeded) from the workload, ``inputs`` of them for
the fixed sweep (``None``: the workload once, in order). Each experiment reports every
policy's summary (:func:`splitasr.planner.simulate.summarise_run`) and the planner's
reduction against the baselines and its gap to the oracle (:func:`reductions`).

:func:`write_report` writes ``results.json``, ``table.md`` and PNG plots.
"""

from __future__ import annotations

import dataclasses
import json
import random
from dataclasses import dataclass
from pathlib import Path

from splitasr.netem.trace import Trace
from splitasr.planner.policy import NO_BUDGET, Budget, Planner
from splitasr.planner.profiles import DATA_DIR, Profile, WerTable, load_profile, load_wer_table
from splitasr.planner.simulate import (
    OPUS_PREFERENCE,
    POLICIES,
    EstimatorSettings,
    all_charges,
    build_cases,
    fixed_index,
    fixed_trace,
    measured_options,
    reductions,
    run_policies,
    spread_arrivals,
    summarise_run,
)
from splitasr.planner.workload import Workload, load_workload

DEFAULT_ONE_WAY_MS = tuple(float(x) for x in range(10, 301, 10))
SHIPPED_MODELS = ("ds2", "whisper-tiny.en")
PROFILES_DIR = DATA_DIR / "profiles"
WORKLOADS_DIR = DATA_DIR / "workloads"
GAP_MARGIN = 1.25


@dataclass(frozen=True)
class ModelInputs:
    """What one model's experiments need: profiles, the WER table, and the per-input
    workload measured (or synthesised) on the edge and on the cloud."""

    edge: Profile
    cloud: Profile
    edge_workload: Workload
    cloud_workload: Workload
    wer: WerTable | None = None

    @property
    def model(self) -> str:
        return self.edge.model


def shipped_inputs(model: str) -> ModelInputs:
    """The shipped profiles and workloads of ``model`` (``splitasr/planner/data``)."""
    return ModelInputs(
        load_profile(PROFILES_DIR / f"{model}-edge.json"),
        load_profile(PROFILES_DIR / f"{model}-cloud.json"),
        load_workload(WORKLOADS_DIR / f"{model}-edge.json"),
        load_workload(WORKLOADS_DIR / f"{model}-cloud.json"),
        load_wer_table(model),
    )


def _planner(mi: ModelInputs) -> Planner:
    full = Planner(mi.edge, mi.cloud, mi.wer)
    return Planner(
        mi.edge, mi.cloud, mi.wer, options=measured_options(full, mi.edge_workload, mi.cloud_workload)
    )


def _summaries(planner, runs, trace) -> dict:
    return {name: summarise_run(planner, run, trace) for name, run in runs.items()}


def run_experiments(
    mi: ModelInputs,
    trace: Trace,
    one_way_ms: tuple[float, ...] = DEFAULT_ONE_WAY_MS,
    policies: tuple[str, ...] = POLICIES,
    budget: Budget = NO_BUDGET,
    settings: EstimatorSettings = EstimatorSettings(),
    inputs: int | None = None,
    seed: int = 0,
) -> dict:
    """Both experiments for one model (module docstring); a JSON-able dict."""
    planner = _planner(mi)
    cases = build_cases(planner, mi.edge_workload, mi.cloud_workload)
    rng = random.Random(seed)
    drawn = cases if inputs is None else [cases[rng.randrange(len(cases))] for _ in range(inputs)]
    drawn = [dataclasses.replace(c, arrival_s=None) for c in drawn]  # one after another
    first = trace.rows[0]
    fixed = []
    for ow in one_way_ms:
        t = fixed_trace(ow, first.up_kbps, first.down_kbps)
        runs = run_policies(planner, drawn, t, policies, budget, None, settings)
        s = _summaries(planner, runs, t)
        fixed.append(
            {"one_way_ms": ow, "policies": s, "planner": reductions(s), "oracle": reductions(s, "oracle")}
        )
    # the variable trace: arrivals spread so that no baseline falls behind
    worst = max(trace.rows, key=lambda r: (r.one_way_ms, -r.up_kbps))  # the slowest link
    baselines = [
        i
        for i in (
            next(i for i, o in enumerate(planner.options) if o.kind == "edge"),
            fixed_index(planner, "cloud", ("pcm16+pack",)),
            fixed_index(planner, "cloud", OPUS_PREFERENCE),
        )
        if i is not None
    ]
    longest = max(float(all_charges(planner, c, worst)[baselines].max()) for c in cases)
    span = trace.duration_s + (
        trace.duration_s / max(len(trace.rows) - 1, 1) if len(trace.rows) > 1 else 60.0
    )
    arrivals: list[float] | None
    if all(c.arrival_s is not None for c in cases):  # the workload's own arrival times, in order
        var_cases, arrivals, n = cases, None, len(cases)
        span = max(span, max(c.arrival_s for c in cases))  # type: ignore[type-var]
    else:
        n = max(1, int(span / (GAP_MARGIN * longest / 1000.0)))
        var_cases = [cases[rng.randrange(len(cases))] for _ in range(n)]
        arrivals = spread_arrivals(n, span)
    runs = run_policies(planner, var_cases, trace, policies, budget, arrivals, settings)
    s = _summaries(planner, runs, trace)
    variable = {
        "trace": trace.name,
        "rows": [
            {"t_s": r.t_s, "one_way_ms": r.one_way_ms, "up_kbps": r.up_kbps, "down_kbps": r.down_kbps}
            for r in trace.rows
        ],
        "inputs": n,
        "span_s": span,
        "gap_s": span / n,
        "policies": s,
        "planner": reductions(s),
        "oracle": reductions(s, "oracle"),
    }
    w = mi.edge_workload
    return {
        "model": mi.model,
        "options": [o.label for o in planner.options],
        "workload": {
            "measured": w.measured and mi.cloud_workload.measured,
            "inputs": len(w.inputs),
            "seconds_min": min(x.seconds for x in w.inputs),
            "seconds_max": max(x.seconds for x in w.inputs),
            "edge_source": w.source,
            "cloud_source": mi.cloud_workload.source,
            "edge_machine": w.machine.description,
        },
        "profiles": {
            "edge": {
                "source": mi.edge.source,
                "machine": mi.edge.machine.description,
                "slowdown": mi.edge.machine.slowdown,
            },
            "cloud": {"source": mi.cloud.source, "machine": mi.cloud.machine.description},
        },
        "wer_budget": budget.wer_points,
        "probe_age_s": settings.probe_age_s,
        "fixed_inputs": len(drawn),
        "fixed": fixed,
        "variable": variable,
    }


# ------------------------------------------------------------------ writing


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{x:+.1f}"


def _gap(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f}"


def _budget(x: float | None) -> str:
    return "none" if x is None else f"+{x:g} points"


def _s(ms: float) -> str:
    return f"{ms / 1000:.1f}"


def table_markdown(results: dict) -> str:
    """Paper 001's Fig. 4 (as a table) and Table I, per model."""
    out = ["# splitasr simulate: paper 001's experiments", ""]
    for m in results["models"]:
        w = m["workload"]
        kind = "measured per input" if w["measured"] else "synthesised from the profiles' fits + noise"
        out += [
            f"## {m['model']}",
            "",
            f"Workload: {w['inputs']} inputs ({w['seconds_min']:.1f}-{w['seconds_max']:.1f} s), {kind}. "
            f"Edge: {m['profiles']['edge']['machine']} (slowdown {m['profiles']['edge']['slowdown']:g}). "
            f"Options: {len(m['options'])}. WER budget: {_budget(m['wer_budget'])}.",
            "",
            f"### Fixed one-way latency (paper 001 Fig. 4), {m['fixed_inputs']} inputs one after another",
            "",
            "| one-way ms | edge s | cloud PCM s | cloud Opus s | best fixed s (option) | planner s "
            "| oracle s | planner vs edge % | vs best cloud % | vs best fixed % | gap to oracle % | probes |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for row in m["fixed"]:
            p, r = row["policies"], row["planner"]
            bf = p.get("best-fixed")

            def tot(name: str, p: dict = p) -> str:
                return _s(p[name]["total_ms"]) if name in p else "-"

            out.append(
                f"| {row['one_way_ms']:g} | {tot('edge')} | {tot('cloud-pcm')} | {tot('cloud-opus')} | "
                + (f"{_s(bf['total_ms'])} ({bf['policy'][12:-1]})" if bf else "-")
                + f" | {tot('planner')} | {tot('oracle')} | {_pct(r.get('vs_edge_pct'))} | "
                f"{_pct(r.get('vs_best_cloud_pct'))} | {_pct(r.get('vs_best_fixed_pct'))} | "
                f"{_gap(r.get('gap_to_oracle_pct'))} | "
                f"{p.get('planner', {}).get('probes', '-')} |"
            )
        v = m["variable"]
        steps = " -> ".join(f"{r['one_way_ms']:g} ms" for r in v["rows"])
        out += [
            "",
            f"### Variable trace {v['trace']} ({steps}; paper 001 Table I): "
            f"{v['inputs']} inputs, one every {v['gap_s']:.2f} s",
            "",
            "| policy | total s | vs edge % | vs best cloud % | gap to oracle % | probes | choices |",
            "|---|---|---|---|---|---|---|",
        ]
        for name, s in v["policies"].items():
            red = reductions(v["policies"], name)
            choices = ", ".join(f"{k} x{c}" for k, c in list(s["choices"].items())[:4])
            gap = red.get("gap_to_oracle_pct")
            out.append(
                f"| {s['policy']} | {_s(s['total_ms'])} | {_pct(red.get('vs_edge_pct'))} | "
                f"{_pct(red.get('vs_best_cloud_pct'))} | {_gap(gap)} | {s['probes']} | {choices} |"
            )
        phases = v["policies"].get("planner", {}).get("phases", [])
        if phases and "oracle" in v["policies"]:
            orc = {ph["phase"]: ph["total_ms"] for ph in v["policies"]["oracle"]["phases"]}
            out += [
                "",
                "Planner per phase: "
                + "; ".join(
                    f"{ph['one_way_ms']:g} ms: {_s(ph['total_ms'])} s over {ph['inputs']} inputs "
                    f"({100 * (ph['total_ms'] / orc[ph['phase']] - 1):+.2f} % vs oracle)"
                    for ph in phases
                    if ph["phase"] in orc
                ),
            ]
        out.append("")
    return "\n".join(out)


def plot(results: dict, out_dir: Path) -> list[Path]:
    """fig4-<model>.png (reduction vs edge and vs cloud across latencies, planner and
    oracle) and table1.png (the variable trace, per model)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    for m in results["models"]:
        xs = [r["one_way_ms"] for r in m["fixed"]]
        fig, ax = plt.subplots(figsize=(6, 4))
        for who, style in (("planner", "-"), ("oracle", ":")):
            ax.plot(
                xs,
                [r[who].get("vs_edge_pct") for r in m["fixed"]],
                style,
                color="tab:red",
                label=f"{who} vs edge-only",
            )
            ax.plot(
                xs,
                [r[who].get("vs_best_cloud_pct") for r in m["fixed"]],
                style,
                color="tab:blue",
                label=f"{who} vs cloud-only (best codec)",
            )
        ax.axhline(0, color="grey", lw=0.5)
        ax.set_xlabel("one-way latency, ms")
        ax.set_ylabel("total time reduction, %")
        ax.set_title(f"{m['model']}: reduction of total time (paper 001 Fig. 4)")
        ax.legend(fontsize=8)
        fig.tight_layout()
        p = out_dir / f"fig4-{m['model']}.png"
        fig.savefig(p, dpi=120)
        plt.close(fig)
        paths.append(p)
    fig, ax = plt.subplots(figsize=(6, 4))
    names = [m["model"] for m in results["models"]]
    labels = ("vs_edge_pct", "vs_best_cloud_pct", "vs_best_fixed_pct")
    for j, key in enumerate(labels):
        vals = [m["variable"]["planner"].get(key) or 0.0 for m in results["models"]]
        ax.bar(
            [i + 0.25 * j for i in range(len(names))],
            vals,
            width=0.25,
            label=key.replace("_pct", "").replace("_", " "),
        )
    ax.set_xticks([i + 0.25 for i in range(len(names))], names)
    ax.set_ylabel("planner's total time reduction, %")
    ax.set_title("variable trace (paper 001 Table I)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    p = out_dir / "table1.png"
    fig.savefig(p, dpi=120)
    plt.close(fig)
    paths.append(p)
    return paths


def write_report(results: dict, out_dir: str | Path) -> list[Path]:
    """results.json, table.md and the plots under ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=1) + "\n")
    (out / "table.md").write_text(table_markdown(results))
    return [out / "results.json", out / "table.md", *plot(results, out)]


__all__ = [
    "DEFAULT_ONE_WAY_MS",
    "ModelInputs",
    "SHIPPED_MODELS",
    "run_experiments",
    "shipped_inputs",
    "table_markdown",
    "write_report",
]
