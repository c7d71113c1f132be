"""The trace-driven simulator: what each policy would have cost on a network trace.

Paper 001 (Sec. III) evaluates its runtime with a simulator that takes the two regression
models and a network profile (a time series of latency and bandwidth), feeds the inputs
"as if they were fed to the system one after another", lets the runtime choose for each
input from the network status *it knows* (updated only by its own cloud inferences and by
a ping when the last one is older than a minute; pings are charged), and charges the time
*measured* on the real devices for that input, so that regression error, run-to-run
variability and stale network information all count. This module does the same for every
option of the planner (edge-only, cloud-only with each audio codec, every split point x
codec).

For input ``i`` starting at time ``t`` (its arrival, or when the previous input finished,
whichever is later) on a link that the trace gives at ``t`` (one-way delay ``D`` ms, uplink
``U`` and downlink ``W`` kbit/s), option ``o`` is charged::

    edge:       full_e[i] + text_e[i]
    offloaded:  head_e[i, p] + encode_e[i, p, c]                (measured on the edge)
                + bytes[i, p, c] * 8 / U + D                    (uplink: serialisation + one way)
                + decode_c[i, p, c] + tail_c[i, r] + text_c[i]  (measured on the server)
                + D + reply_bytes[i] * 8 / W                    (the reply: one way + serialisation)

with ``reply_bytes = text_bytes + REPLY_OVERHEAD_BYTES``. The link is the one in force at
``t`` for the whole input (a step inside one input is not split). The server is idle (one
client: no queue).

Policies (:class:`Policy`):

* ``edge``, ``cloud-pcm``, ``cloud-opus`` and any fixed option: always the same option;
* ``best-fixed``: the split point x codec with the least total over the whole run, in
  hindsight (every split option is simulated as a fixed policy and the best kept);
* ``planner``: :class:`~splitasr.planner.policy.Planner` with a
  :class:`~splitasr.planner.estimator.NetworkEstimator` fed only by what this policy did:
  each offloaded request's timestamps (sent, server received, server total, replied) and
  probes. A probe takes ``2 D + PROBE_BYTES * 8 / U + PROBE_BYTES * 8 / W`` ms and counts
  ``2 * PROBE_BYTES``. The first one runs when the client connects, before the first input
  arrives (``EdgeClient`` with a planner probes when it is made), so no input waits for it
  (``EstimatorSettings(probe_at_start=False)``: the first input waits for it); later ones
  (the estimate is older than the probe age, or an outage is due a retry) run **in the
  background** as the live client does: the input is decided with the estimate it has
  and is not delayed, and the probe's answer reaches the estimator when it arrives (in
  time for a later input).
  ``EstimatorSettings(background_probes=False)`` charges every probe to its input, as paper
  001 conservatively assumes;
* ``planner-perfect-net``: the planner told the true link at ``t`` (no estimator, no
  probes): isolates the cost of stale estimates from the cost of regression error;
* ``oracle``: knows the link at ``t`` and the measured times of input ``i``, and picks the
  option with the least charged time (within the same WER budget as the planner).

Pure: no I/O, no clock, no torch; ``numpy`` for the per-option arrays.
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass, field

import numpy as np

from splitasr.netem.trace import Trace, TraceRow
from splitasr.planner.estimator import IDLE_SERVER, NetworkEstimate, NetworkEstimator, RequestTiming
from splitasr.planner.policy import AUDIO, NO_BUDGET, Budget, Planner
from splitasr.planner.profiles import ProfileError
from splitasr.planner.workload import InputTimes, Workload, pair_workloads

REPLY_OVERHEAD_BYTES = 64  # gRPC frame, HTTP/2 headers (compressed) and the reply's other fields
PROBE_BYTES = 64  # a ping, each way
OPUS_PREFERENCE = ("opus12+pack", "opus16+pack", "opus24+pack", "opus8+pack", "opus6+pack")
POLICIES = ("edge", "cloud-pcm", "cloud-opus", "best-fixed", "planner", "planner-perfect-net", "oracle")


@dataclass(frozen=True)
class Case:
    """One input's measured cost of every option (arrays of shape ``(n_options,)``, in the
    planner's option order): device ms, server ms and bytes up. ``reply_bytes``: the reply
    (transcript + :data:`REPLY_OVERHEAD_BYTES`)."""

    id: str
    seconds: float
    local_ms: np.ndarray
    remote_ms: np.ndarray
    bytes_up: np.ndarray
    reply_bytes: int
    arrival_s: float | None = None


def _option_costs(o, e: InputTimes, c: InputTimes) -> tuple[float, float, float] | None:
    """(device ms, server ms, bytes) of option ``o`` measured on input ``e`` (edge) / ``c``
    (cloud); ``None`` when a stage was not measured."""
    if o.kind == "edge":
        return e.full_ms + e.text_ms, 0.0, 0.0
    resume = o.resume or o.point
    ec, cc = e.codec(o.point, o.codec), c.codec(o.point, o.codec)
    head, tail = e.head(o.point), c.tail(resume)
    if ec is None or cc is None or head is None or tail is None:
        return None
    return head + ec.encode_ms, cc.decode_ms + tail + c.text_ms, float(ec.bytes)


def measured_options(planner: Planner, edge: Workload, cloud: Workload) -> list[str]:
    """Labels of the planner's options measured on every input of both workloads."""
    pair_workloads(edge, cloud)
    keep = []
    for o in planner.options:
        if all(_option_costs(o, e, c) is not None for e, c in zip(edge.inputs, cloud.inputs, strict=True)):
            keep.append(o.label)
    return keep


def build_cases(planner: Planner, edge: Workload, cloud: Workload) -> list[Case]:
    """The measured cost of every one of ``planner``'s options for every input (the
    planner must be restricted to :func:`measured_options`)."""
    pair_workloads(edge, cloud)
    cases = []
    for e, c in zip(edge.inputs, cloud.inputs, strict=True):
        rows = [_option_costs(o, e, c) for o in planner.options]
        if any(r is None for r in rows):
            raise ProfileError(f"input {e.id}: an option of the planner was not measured")
        local, remote, nbytes = (np.array(col, dtype=np.float64) for col in zip(*rows, strict=True))
        cases.append(
            Case(e.id, e.seconds, local, remote, nbytes, c.text_bytes + REPLY_OVERHEAD_BYTES, e.arrival_s)
        )
    return cases


def fixed_trace(one_way_ms: float, up_kbps: float, down_kbps: float) -> Trace:
    """A link that never changes (paper 001's Fig. 4: latency fixed for the whole run)."""
    return Trace(f"fixed-{one_way_ms:g}ms", (TraceRow(0.0, one_way_ms, up_kbps, down_kbps),))


@dataclass(frozen=True)
class Charge:
    """What one input cost: ``total_ms`` = ``local_ms`` + ``upload_ms`` + ``network_ms``
    (two one-way delays and the reply's serialisation) + ``remote_ms``."""

    total_ms: float
    local_ms: float
    upload_ms: float
    network_ms: float
    remote_ms: float


def charge(planner: Planner, case: Case, i: int, link) -> Charge:
    """The measured time of option ``i`` for ``case`` on ``link`` (the module's formula)."""
    local = float(case.local_ms[i])
    if not planner.offload[i]:
        return Charge(local, local, 0.0, 0.0, 0.0)
    upload = float(case.bytes_up[i]) * 8.0 / link.up_kbps
    network = 2.0 * link.one_way_ms + case.reply_bytes * 8.0 / link.down_kbps
    remote = float(case.remote_ms[i])
    return Charge(local + upload + network + remote, local, upload, network, remote)


def all_charges(planner: Planner, case: Case, link) -> np.ndarray:
    """:func:`charge`'s total for every option at once, ``(n_options,)`` ms."""
    net = 2.0 * link.one_way_ms + case.reply_bytes * 8.0 / link.down_kbps
    return case.local_ms + planner.offload * (case.bytes_up * 8.0 / link.up_kbps + net + case.remote_ms)


def probe_ms(link) -> float:
    """A probe's round trip on ``link``: two one-way delays and :data:`PROBE_BYTES` each way."""
    return 2.0 * link.one_way_ms + PROBE_BYTES * 8.0 / link.up_kbps + PROBE_BYTES * 8.0 / link.down_kbps


# ------------------------------------------------------------------ policies


class Policy:
    """Chooses an option index for each input. ``estimator``: ``True`` when it reads a
    :class:`NetworkEstimator` that the simulator keeps (and probes) for it."""

    name = "policy"
    estimator = False

    def choose(self, case: Case, link, estimate: NetworkEstimate | None) -> tuple[int, float | None]:
        """(option index, predicted ms or ``None``)."""
        raise NotImplementedError


class Fixed(Policy):
    def __init__(self, name: str, index: int):
        self.name, self.index = name, index

    def choose(self, case, link, estimate):
        return self.index, None


class PlannerPolicy(Policy):
    """The planner deciding from the estimator's (possibly stale) estimate."""

    estimator = True

    def __init__(self, planner: Planner, budget: Budget = NO_BUDGET, name: str = "planner"):
        self.planner, self.budget, self.name = planner, budget, name
        self.index = {o: i for i, o in enumerate(planner.options)}

    def choose(self, case, link, estimate):
        d = self.planner.decide(case.seconds, estimate, IDLE_SERVER, self.budget)  # type: ignore[arg-type]
        return self.index[d.option], d.predicted_ms


class PerfectNetPlanner(PlannerPolicy):
    """The planner told the true link at the moment (RTT = two one-way delays plus a reply
    of :data:`REPLY_OVERHEAD_BYTES`), from the profiles' predictions of compute."""

    estimator = False

    def __init__(self, planner: Planner, budget: Budget = NO_BUDGET, name: str = "planner-perfect-net"):
        super().__init__(planner, budget, name)

    def choose(self, case, link, estimate):
        rtt = 2.0 * link.one_way_ms + REPLY_OVERHEAD_BYTES * 8.0 / link.down_kbps
        return super().choose(case, link, NetworkEstimate(rtt, link.up_kbps))


class Oracle(Policy):
    """The least measured time at the moment, among the options the budget allows."""

    name = "oracle"

    def __init__(self, planner: Planner, budget: Budget = NO_BUDGET):
        self.planner = planner
        self.inf = np.where(planner.wer_mask(budget.wer_points), 0.0, np.inf)

    def choose(self, case, link, estimate):
        return int(np.argmin(all_charges(self.planner, case, link) + self.inf)), None


# ------------------------------------------------------------------ the loop


@dataclass(frozen=True)
class Step:
    """One input as a policy ran it."""

    index: int
    start_s: float  # when it started (after any wait and before any probe)
    wait_ms: float  # arrived while the previous input was still running
    option: int
    charged: Charge
    probe_ms: float  # time this input waited for a probe (0: none, or it ran in the background)
    predicted_ms: float | None  # the policy's prediction (planners)
    phase: int  # the trace row in force at the decision
    bytes_up: int = 0  # payload bytes sent (0 on the edge)
    probe_rtt_ms: float = 0.0  # a probe sent at this input's decision (waited for or not): its round trip

    @property
    def total_ms(self) -> float:
        return self.charged.total_ms + self.probe_ms


@dataclass
class Run:
    """One policy over one workload and trace."""

    policy: str
    steps: list[Step] = field(default_factory=list)
    probes: int = 0
    probe_bytes: int = 0

    @property
    def total_ms(self) -> float:
        """Paper 001's total execution time: every input's charged time, probes included."""
        return sum(s.total_ms for s in self.steps)


@dataclass(frozen=True)
class EstimatorSettings:
    """The estimator each estimating policy starts with: the prior and the probe age.
    ``up_kbps`` ``None``: the trace's first uplink rate (the device knows its link's nominal
    rate; the RTT is learnt by the first probe)."""

    rtt_ms: float = 100.0
    up_kbps: float | None = None
    probe_age_s: float = 60.0
    alpha: float = 0.3
    background_probes: bool = True  # False: every probe delays its input (paper 001)
    probe_at_start: bool = True  # the client probes when it connects, before the first input


def simulate(
    policy: Policy,
    planner: Planner,
    cases: list[Case],
    trace: Trace,
    arrivals: list[float] | None = None,
    settings: EstimatorSettings = EstimatorSettings(),
) -> Run:
    """Run ``policy`` over ``cases`` on ``trace`` (module docstring).

    ``arrivals``: the time (s) each input arrives (``None``: each case's ``arrival_s``,
    else right after the previous input finished)."""
    times = [r.t_s for r in trace.rows]
    est = None
    if policy.estimator:
        up = settings.up_kbps if settings.up_kbps is not None else trace.rows[0].up_kbps
        est = NetworkEstimator(
            rtt_ms=settings.rtt_ms, up_kbps=up, probe_age_s=settings.probe_age_s, alpha=settings.alpha
        )
    run = Run(policy.name)
    free = 0.0
    pending: tuple[float, float] | None = None  # a background probe: (answered at, its rtt ms)
    if est is not None and settings.probe_at_start:  # on connecting, before the first input
        est.observe_probe(0.0, probe_ms(trace.at(0.0)))
        run.probes += 1
        run.probe_bytes += 2 * PROBE_BYTES
    for k, case in enumerate(cases):
        arrival = arrivals[k] if arrivals is not None else case.arrival_s
        start = free if arrival is None else max(arrival, free)
        wait = 0.0 if arrival is None else (start - arrival) * 1000.0
        t = start
        probe = sent_probe = 0.0
        if est is not None and pending is not None and pending[0] <= t:
            est.observe_probe(*pending)
            pending = None
        if est is not None and pending is None and est.probe_due(t):
            rtt = sent_probe = probe_ms(trace.at(t))
            run.probes += 1
            run.probe_bytes += 2 * PROBE_BYTES
            if settings.background_probes and est.measured_at is not None:
                pending = (t + rtt / 1000.0, rtt)
            else:  # nothing measured yet (or probes block): the input waits for the answer
                probe = rtt
                t += probe / 1000.0
                est.observe_probe(t, probe)
        link = trace.at(t)
        i, predicted = policy.choose(case, link, None if est is None else est.estimate())
        c = charge(planner, case, i, link)
        end = t + c.total_ms / 1000.0
        if est is not None and planner.offload[i]:
            sent = t + c.local_ms / 1000.0
            received = sent + (c.upload_ms + link.one_way_ms) / 1000.0
            est.observe_request(
                end, RequestTiming(sent, end, c.remote_ms, int(case.bytes_up[i]), server_received_s=received)
            )
        phase = max(0, bisect.bisect_right(times, t) - 1)
        nbytes = int(case.bytes_up[i]) if planner.offload[i] else 0
        run.steps.append(Step(k, start, wait, i, c, probe, predicted, phase, nbytes, sent_probe))
        free = end
    return run


def fixed_index(planner: Planner, kind: str, codecs: tuple[str, ...]) -> int | None:
    """The first option of ``kind`` at the audio point with a codec in ``codecs`` order."""
    for codec in codecs:
        for i, o in enumerate(planner.options):
            if o.kind == kind and o.point == AUDIO and o.codec == codec:
                return i
    return None


def run_policies(
    planner: Planner,
    cases: list[Case],
    trace: Trace,
    policies: tuple[str, ...] = POLICIES,
    budget: Budget = NO_BUDGET,
    arrivals: list[float] | None = None,
    settings: EstimatorSettings = EstimatorSettings(),
) -> dict[str, Run]:
    """Every named policy over the same cases and trace (``best-fixed`` simulates every
    split option and keeps the best; its run's ``policy`` names the option)."""
    out: dict[str, Run] = {}
    for name in policies:
        if name == "edge":
            pol: Policy | None = Fixed(
                "edge", planner.options.index(next(o for o in planner.options if o.kind == "edge"))
            )
        elif name == "cloud-pcm":
            i = fixed_index(planner, "cloud", ("pcm16+pack",))
            pol = None if i is None else Fixed("cloud-pcm", i)
        elif name == "cloud-opus":
            i = fixed_index(planner, "cloud", OPUS_PREFERENCE)
            pol = None if i is None else Fixed(f"cloud-opus ({planner.options[i].codec})", i)
        elif name == "planner":
            pol = PlannerPolicy(planner, budget)
        elif name == "planner-perfect-net":
            pol = PerfectNetPlanner(planner, budget)
        elif name == "oracle":
            pol = Oracle(planner, budget)
        elif name == "best-fixed":
            allowed = planner.wer_mask(budget.wer_points)
            best = None
            for i, o in enumerate(planner.options):
                if o.kind != "split" or not allowed[i]:
                    continue
                r = simulate(Fixed(f"best-fixed ({o.label})", i), planner, cases, trace, arrivals, settings)
                if best is None or r.total_ms < best.total_ms:
                    best = r
            if best is not None:
                out[name] = best
            continue
        else:
            raise ProfileError(f"unknown policy {name!r}; choose from {', '.join(POLICIES)}")
        if pol is not None:
            out[name] = simulate(pol, planner, cases, trace, arrivals, settings)
    return out


def summarise_run(planner: Planner, run: Run, trace: Trace) -> dict:
    """A JSON-able summary: totals, probes, bytes, the options chosen, per trace phase."""
    choices: dict[str, int] = {}
    for s in run.steps:
        label = planner.options[s.option].label
        choices[label] = choices.get(label, 0) + 1
    phases = []
    for p, row in enumerate(trace.rows):
        steps = [s for s in run.steps if s.phase == p]
        if steps:
            phases.append(
                {
                    "phase": p,
                    "one_way_ms": row.one_way_ms,
                    "up_kbps": row.up_kbps,
                    "inputs": len(steps),
                    "total_ms": sum(s.total_ms for s in steps),
                }
            )
    predicted = [s for s in run.steps if s.predicted_ms is not None]
    return {
        "policy": run.policy,
        "total_ms": run.total_ms,
        "mean_ms": run.total_ms / max(len(run.steps), 1),
        "inputs": len(run.steps),
        "probes": run.probes,
        "probe_ms": sum(s.probe_ms for s in run.steps),
        "probe_bytes": run.probe_bytes,
        "bytes_up": sum(s.bytes_up for s in run.steps),
        "wait_ms": sum(s.wait_ms for s in run.steps),
        "choices": dict(sorted(choices.items(), key=lambda kv: -kv[1])),
        "phases": phases,
        "prediction_error_ms": (
            sum(abs(s.predicted_ms - s.charged.total_ms) for s in predicted) / len(predicted)  # type: ignore[operator]
            if predicted
            else None
        ),
    }


def reductions(summaries: dict[str, dict], of: str = "planner") -> dict[str, float | None]:
    """Percent reduction of ``of``'s total against each baseline, and its gap to the oracle
    (percent above it)."""
    if of not in summaries:
        return {}
    mine = summaries[of]["total_ms"]

    def red(base: str) -> float | None:
        b = summaries.get(base, {}).get("total_ms")
        return None if not b else 100.0 * (1.0 - mine / b)

    clouds = [summaries[k]["total_ms"] for k in ("cloud-pcm", "cloud-opus") if k in summaries]
    out = {
        "vs_edge_pct": red("edge"),
        "vs_cloud_pcm_pct": red("cloud-pcm"),
        "vs_cloud_opus_pct": red("cloud-opus"),
        "vs_best_cloud_pct": 100.0 * (1.0 - mine / min(clouds)) if clouds else None,
        "vs_best_fixed_pct": red("best-fixed"),
    }
    o = summaries.get("oracle", {}).get("total_ms")
    out["gap_to_oracle_pct"] = None if not o else 100.0 * (mine / o - 1.0)
    return out


def spread_arrivals(n: int, span_s: float) -> list[float]:
    """``n`` arrivals evenly over ``[0, span_s)``: input ``k`` at ``k * span_s / n``."""
    if n < 1 or not (math.isfinite(span_s) and span_s > 0):
        raise ValueError("need n >= 1 and a positive span")
    return [k * span_s / n for k in range(n)]


__all__ = [
    "Case",
    "Charge",
    "EstimatorSettings",
    "Fixed",
    "Oracle",
    "POLICIES",
    "PROBE_BYTES",
    "PerfectNetPlanner",
    "PlannerPolicy",
    "Policy",
    "REPLY_OVERHEAD_BYTES",
    "Run",
    "Step",
    "all_charges",
    "build_cases",
    "charge",
    "fixed_trace",
    "measured_options",
    "probe_ms",
    "reductions",
    "run_policies",
    "simulate",
    "spread_arrivals",
    "summarise_run",
]
