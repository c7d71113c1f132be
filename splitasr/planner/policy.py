"""The planner: for one input, predict the total latency of every option and pick the best.

Options (:class:`Option`): ``edge`` (the whole model and its text decoder on the device);
``cloud`` (the audio itself, with an audio codec: ``pcm16+pack``, ``flac+pack``,
``opus6+pack`` ... ``opus24+pack``); ``split`` (every split point x codec that both
profiles hold). For ``s`` seconds of input, an offloaded option costs (paper 001 eq. 1,
paper 002's ``argmin_p t_edge(p) + d_p / B + t_cloud(p)``, plus the server's queue)::

    total = head_e(p, s) + encode_e(p, c, s)            device compute (edge profile)
          + bytes(p, c, s) * 8 / up_kbps                 uplink transfer (ms)
          + rtt_ms                                       round trip
          + queue_depth * mean_service_ms / workers      server queue (its last reply)
          + decode_c(p, c, s) + tail_c(r, s) + text_c(s)  server compute (cloud profile)

with ``r`` the point the tail resumes at (``p``, or a later one for a codec that decodes
there). Edge-only costs ``full_e(s) + text_e(s)``. Every term is a linear fit of ``s``
(:mod:`splitasr.planner.profiles`), so a :class:`Planner` precomputes the intercepts and
slopes of every option once, as arrays, and :meth:`Planner.decide` is a handful of numpy
operations per input (the overhead is measured by ``scripts/bench_planner.py``).

The winner is the least predicted total among the options allowed by the budgets
(:class:`Budget`): a WER budget (points over the unsplit model, from the model's
``bench tradeoff`` table; an option never measured is excluded when a budget is set;
edge-only and lossless codecs cost 0), an edge energy budget (joules per input, under a
:class:`PowerModel`), and the link (an outage allows edge-only alone). When no option
meets the energy budget, the least-energy option within the WER budget wins, and the
decision says so. :meth:`Decision.explain` gives the whole table and the reason.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from splitasr.planner.estimator import IDLE_SERVER, NetworkEstimate, ServerLoad
from splitasr.planner.profiles import Fit, Profile, ProfileError, WerTable

AUDIO = "audio"  # the split point of the waveform (splitasr.model.stages.AUDIO, not imported: no torch)
COMPONENTS = ("head", "encode", "upload", "rtt", "queue", "decode", "tail", "text")
_LOCAL = (0, 1)  # components the device computes
_REMOTE = (5, 6, 7)  # components the server computes


@dataclass(frozen=True)
class Option:
    """One way to run an input: ``kind`` is ``edge``, ``cloud`` (audio up) or ``split``."""

    kind: str
    point: str | None = None
    codec: str | None = None
    resume: str | None = None  # the tail's point when the codec decodes to a later one

    @property
    def label(self) -> str:
        if self.kind == "edge":
            return "edge"
        where = self.point if self.resume in (None, self.point) else f"{self.point}>{self.resume}"
        return f"{self.kind} {where} {self.codec}"


@dataclass(frozen=True)
class PowerModel:
    """The device's power, set by the user (watts, joules per byte).

    Energy of one input = ``active_w`` x device compute + ``tx_j_per_byte`` x bytes up +
    ``tx_w`` x uplink transfer time + ``idle_w`` x waiting (RTT, queue, server compute)."""

    active_w: float
    tx_j_per_byte: float = 0.0
    tx_w: float = 0.0
    idle_w: float = 0.0

    def __post_init__(self):
        values = (self.active_w, self.tx_j_per_byte, self.tx_w, self.idle_w)
        if not all(math.isfinite(v) and v >= 0 for v in values):
            raise ValueError(f"power model values must be finite and >= 0, got {values}")


@dataclass(frozen=True)
class Budget:
    """Limits a decision must respect: ``wer_points`` over the unsplit model, ``energy_j``
    of the device per input (needs a :class:`PowerModel`). ``None``: no limit."""

    wer_points: float | None = None
    energy_j: float | None = None


NO_BUDGET = Budget()


@dataclass(frozen=True)
class Decision:
    """What to run for one input, and the prediction it was chosen on.

    ``components`` are the winner's predicted ms per :data:`COMPONENTS`; ``energy_j`` its
    device energy (``None`` without a power model); ``dwer`` its WER points over unsplit
    (``None``: not measured). ``fallback`` names why the winner is not the fastest allowed
    option when it is not (no option within the energy budget)."""

    option: Option
    predicted_ms: float
    components: tuple[float, ...]
    energy_j: float | None
    dwer: float | None
    seconds: float
    network: NetworkEstimate
    load: ServerLoad
    budget: Budget
    planner: Planner
    fallback: str | None = None

    def explain(self) -> str:
        return self.planner.explain(self)


def _vec(fits: list[Fit]) -> tuple[np.ndarray, np.ndarray]:
    return np.array([f.a for f in fits], dtype=np.float64), np.array([f.b for f in fits], dtype=np.float64)


ZERO = Fit(0.0, 0.0)


class Planner:
    """Every option's cost as arrays, built once from the two profiles.

    Args:
        edge, cloud: the device's and the server's profiles (same model).
        wer: the model's WER table (``None``: accuracy unknown, so a WER budget leaves
            edge-only alone).
        power: the device's power model (needed for an energy budget and ``energy_j``).
        options: restrict to these option labels (``None``: every option both profiles
            hold, and edge-only).
    """

    def __init__(
        self,
        edge: Profile,
        cloud: Profile,
        wer: WerTable | None = None,
        power: PowerModel | None = None,
        options: list[str] | None = None,
    ):
        if edge.model != cloud.model:
            raise ProfileError(f"edge profile is for {edge.model!r}, cloud profile for {cloud.model!r}")
        if wer is not None and wer.model != edge.model:
            raise ProfileError(f"WER table is for {wer.model!r}, the profiles for {edge.model!r}")
        self.edge, self.cloud, self.wer, self.power = edge, cloud, wer, power
        opts: list[Option] = [Option("edge")]
        comps: list[list[Fit]] = [[edge.full_ms, ZERO, ZERO, ZERO, ZERO, ZERO, ZERO, edge.text.as_fit()]]
        byte_fits: list[Fit] = [ZERO]
        cloud_text = cloud.text.as_fit()
        for c in edge.codecs:
            remote = cloud.codec(c.point, c.codec)
            resume = c.resume or c.point
            head, tail = edge.point(c.point), cloud.point(resume)
            if remote is None or head is None or tail is None or head.head_ms is None or tail.tail_ms is None:
                continue
            kind = "cloud" if c.point == AUDIO and resume == AUDIO else "split"
            opts.append(Option(kind, c.point, c.codec, None if resume == c.point else resume))
            comps.append(
                [head.head_ms, c.encode_ms, ZERO, ZERO, ZERO, remote.decode_ms, tail.tail_ms, cloud_text]
            )
            byte_fits.append(c.payload_bytes)
        if options is not None:
            keep = [i for i, o in enumerate(opts) if o.label in options]
            missing = sorted(set(options) - {opts[i].label for i in keep})
            if missing:
                raise ProfileError(f"option {missing[0]!r} is not in both profiles")
            opts, comps, byte_fits = (
                [opts[i] for i in keep],
                [comps[i] for i in keep],
                [byte_fits[i] for i in keep],
            )
        self.options = opts
        n = len(opts)
        self.comp_a = np.array([[f.a for f in row] for row in comps], dtype=np.float64)  # (n, 8)
        self.comp_b = np.array([[f.b for f in row] for row in comps], dtype=np.float64)
        self.bytes_a, self.bytes_b = _vec(byte_fits)
        self.offload = np.array([o.kind != "edge" for o in opts], dtype=np.float64)  # (n,)
        self.local_a = self.comp_a[:, _LOCAL].sum(axis=1)
        self.local_b = self.comp_b[:, _LOCAL].sum(axis=1)
        self.remote_a = self.comp_a[:, _REMOTE].sum(axis=1)
        self.remote_b = self.comp_b[:, _REMOTE].sum(axis=1)
        self.dwer = np.array([self._dwer(o) for o in opts], dtype=np.float64)  # NaN: unknown
        self._wer_masks: dict[float | None, np.ndarray] = {None: np.ones(n, dtype=bool)}
        self._edge_only = ~self.offload.astype(bool)
        self._inf = np.full(n, np.inf)
        # the fast path's coefficients: total = tot_a + tot_b s + bytes(s) 8 / B + offload (R + Q)
        self.tot_a, self.tot_b = self.local_a + self.remote_a, self.local_b + self.remote_b
        self._masks: dict[tuple[float | None, bool], np.ndarray] = {}
        self._rows = [
            (list(map(float, a)), list(map(float, b))) for a, b in zip(self.comp_a, self.comp_b, strict=True)
        ]
        if power is not None:  # energy = e_a + e_b s + bytes(s) (J/B + tx_w 8 / B) + e_fixed (R + Q)
            self.e_a = (power.active_w * self.local_a + power.idle_w * self.remote_a) / 1000.0
            self.e_b = (power.active_w * self.local_b + power.idle_w * self.remote_b) / 1000.0
            self.e_fixed = power.idle_w * self.offload / 1000.0

    def _dwer(self, o: Option) -> float:
        if o.kind == "edge":
            return 0.0
        if self.wer is None:
            return math.nan
        d = self.wer.dwer(o.point if o.resume is None else f"{o.point}>{o.resume}", o.codec)  # type: ignore[arg-type]
        if d is None and o.resume is not None:
            d = self.wer.dwer(o.point, o.codec)  # type: ignore[arg-type]
        return math.nan if d is None else d

    def wer_mask(self, points: float | None) -> np.ndarray:
        """Options whose measured WER cost is within ``points`` (cached per budget)."""
        mask = self._wer_masks.get(points)
        if mask is None:
            with np.errstate(invalid="ignore"):
                mask = self.dwer <= points  # NaN (unmeasured) compares False
            self._wer_masks[points] = mask
        return mask

    # ------------------------------------------------------------------ the fast path

    def _totals(self, seconds: float, net: NetworkEstimate, load: ServerLoad):
        local = self.local_a + self.local_b * seconds
        nbytes = self.bytes_a + self.bytes_b * seconds
        upload = nbytes * (8.0 / net.up_kbps)
        fixed = self.offload * (net.rtt_ms + load.wait_ms)
        remote = self.remote_a + self.remote_b * seconds
        return local, nbytes, upload, fixed, remote

    def _energy(self, local, nbytes, upload, fixed, remote) -> np.ndarray:
        p = self.power
        return (p.active_w * local + p.tx_w * upload + p.idle_w * (fixed + remote)) / 1000.0 + (  # type: ignore[union-attr]
            p.tx_j_per_byte * nbytes * self.offload  # type: ignore[union-attr]
        )

    def decide(
        self,
        seconds: float,
        network: NetworkEstimate,
        load: ServerLoad = IDLE_SERVER,
        budget: Budget = NO_BUDGET,
    ) -> Decision:
        """The option with the least predicted total for ``seconds`` of input (see the
        module docstring for the cost model and the budgets)."""
        per_byte = 8.0 / network.up_kbps  # ms per byte
        fixed = network.rtt_ms + load.wait_ms
        nbytes = self.bytes_a + self.bytes_b * seconds
        total = self.tot_a + self.tot_b * seconds + nbytes * per_byte + self.offload * fixed
        key = (budget.wer_points, network.outage)
        allowed = self._masks.get(key)
        if allowed is None:
            allowed = self.wer_mask(budget.wer_points) & (self._edge_only if network.outage else True)
            self._masks[key] = allowed
        energy = None
        fallback = None
        if self.power is not None:
            tx = self.power.tx_j_per_byte + self.power.tx_w * per_byte / 1000.0
            energy = self.e_a + self.e_b * seconds + nbytes * tx + self.e_fixed * fixed
        elif budget.energy_j is not None:
            raise ValueError("an energy budget needs a power model (Planner(power=...))")
        if budget.energy_j is not None:
            within = allowed & (energy <= budget.energy_j)  # type: ignore[operator]
            if within.any():
                allowed = within
            else:
                fallback = f"no option within {budget.energy_j:g} J: the least energy one"
                i = int(np.argmin(np.where(allowed, energy, self._inf)))  # type: ignore[arg-type]
                return self._decision(i, seconds, network, load, budget, total, energy, fallback)
        i = int(np.argmin(np.where(allowed, total, self._inf)))
        return self._decision(i, seconds, network, load, budget, total, energy, fallback)

    def _decision(self, i, seconds, network, load, budget, total, energy, fallback) -> Decision:
        d = float(self.dwer[i])
        return Decision(
            self.options[i],
            float(total[i]),
            self.components(i, seconds, network, load),
            None if energy is None else float(energy[i]),
            None if d != d else d,  # NaN: unmeasured
            seconds,
            network,
            load,
            budget,
            self,
            fallback,
        )

    def components(self, i: int, seconds: float, net: NetworkEstimate, load: ServerLoad) -> tuple[float, ...]:
        """Predicted ms of each of :data:`COMPONENTS` for option ``i``."""
        a, b = self._rows[i]
        row = [x + y * seconds for x, y in zip(a, b, strict=True)]
        if self.options[i].kind != "edge":
            row[2] = (float(self.bytes_a[i]) + float(self.bytes_b[i]) * seconds) * 8.0 / net.up_kbps
            row[3] = net.rtt_ms
            row[4] = load.wait_ms
        return tuple(row)

    # ------------------------------------------------------------------ explaining

    def explain(self, d: Decision) -> str:
        """Every option's predicted components, its WER cost, energy and whether the budgets
        allowed it, then why the winner won."""
        local, nbytes, upload, fixed, remote = self._totals(d.seconds, d.network, d.load)
        total = local + upload + fixed + remote
        energy = self._energy(local, nbytes, upload, fixed, remote) if self.power is not None else None
        wer_ok = self.wer_mask(d.budget.wer_points)
        rows = []
        for i in np.argsort(total, kind="stable"):
            o = self.options[i]
            why = []
            if not wer_ok[i]:
                why.append(
                    "WER unmeasured"
                    if math.isnan(self.dwer[i])
                    else f"WER +{self.dwer[i]:.2f} > {d.budget.wer_points:g}"
                )
            if d.network.outage and o.kind != "edge":
                why.append("outage")
            if d.budget.energy_j is not None and energy[i] > d.budget.energy_j:  # type: ignore[index]
                why.append(f"energy > {d.budget.energy_j:g} J")
            comps = self.components(int(i), d.seconds, d.network, d.load)
            mark = "*" if o == d.option else " "
            dw = "-" if math.isnan(self.dwer[i]) else f"{self.dwer[i]:+.2f}"
            e = "" if energy is None else f" {energy[i]:8.3f}"
            rows.append(
                f"{mark} {o.label:<34} {total[i]:9.1f} "
                + " ".join(f"{c:8.1f}" for c in comps)
                + f" {nbytes[i]:9.0f} {dw:>6}{e}  {'excluded: ' + ', '.join(why) if why else 'ok'}"
            )
        head = (
            f"input {d.seconds:g} s; rtt {d.network.rtt_ms:g} ms; uplink {d.network.up_kbps:g} kbit/s; "
            f"server queue {d.load.queue_depth} x {d.load.mean_service_ms:g} ms / {d.load.workers}"
            + ("; OUTAGE" if d.network.outage else "")
            + f"; WER budget {'none' if d.budget.wer_points is None else f'+{d.budget.wer_points:g} points'}"
            + ("" if d.budget.energy_j is None else f"; energy budget {d.budget.energy_j:g} J")
        )
        cols = (
            f"  {'option':<34} {'total ms':>9} "
            + " ".join(f"{c:>8}" for c in COMPONENTS)
            + f" {'bytes':>9} {'dWER':>6}"
            + ("" if energy is None else f" {'J':>8}")
            + "  budgets"
        )
        return "\n".join([head, cols, *rows, self.reason(d, total, energy)])

    def reason(self, d: Decision, total: np.ndarray, energy: np.ndarray | None) -> str:
        """One sentence: why the winner won, and what the runner-up would have cost."""
        win = self.options.index(d.option)
        if d.fallback:
            return f"chosen: {d.option.label} ({d.fallback}, {energy[win]:.3f} J)"  # type: ignore[index]
        allowed = self.wer_mask(d.budget.wer_points).copy()
        if d.network.outage:
            allowed &= self._edge_only
        if d.budget.energy_j is not None and energy is not None:
            allowed &= energy <= d.budget.energy_j
        excluded = int(len(self.options) - allowed.sum())
        others = [i for i in np.argsort(total, kind="stable") if allowed[i] and i != win]
        text = (
            f"chosen: {d.option.label}, least predicted total ({total[win]:.1f} ms)"
            f" of {int(allowed.sum())} allowed options"
        )
        if others:
            j = others[0]
            text += f"; next {self.options[j].label} at {total[j]:.1f} ms (+{total[j] - total[win]:.1f})"
        fastest = int(np.argmin(total))
        if fastest != win:
            text += (
                f"; the fastest overall, {self.options[fastest].label} ({total[fastest]:.1f} ms),"
                " is excluded by the budgets"
            )
        if excluded:
            text += f"; {excluded} excluded by budgets or outage"
        return text


def plan(
    input_seconds: float,
    edge_profile: Profile,
    cloud_profile: Profile,
    network_estimate: NetworkEstimate,
    server_load: ServerLoad = IDLE_SERVER,
    budget: Budget = NO_BUDGET,
    wer: WerTable | None = None,
    power: PowerModel | None = None,
) -> Decision:
    """One decision from scratch (builds a :class:`Planner`; per input, keep the planner
    and call :meth:`Planner.decide`, which skips the precomputation)."""
    return Planner(edge_profile, cloud_profile, wer, power).decide(
        input_seconds, network_estimate, server_load, budget
    )


__all__ = [
    "AUDIO",
    "Budget",
    "COMPONENTS",
    "Decision",
    "NO_BUDGET",
    "Option",
    "PowerModel",
    "Planner",
    "plan",
]
