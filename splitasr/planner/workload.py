"""Workloads for the simulator: the inputs, and what each one really cost.

Paper 001's simulator charges each input the time *measured* on the real devices, not the
regression's prediction, so that regression error and run-to-run variability count. A
:class:`Workload` carries that measurement for one machine (one role): per input, its
length and the measured milliseconds of every stage the planner predicts:

* ``full_ms`` (the whole model, text decoding excluded: edge-only) and ``text_ms`` (the
  model's text decoder on its output), ``text_bytes`` (the transcript, UTF-8: the reply);
* per split point (:class:`PointTimes`): ``head_ms`` (waveform -> activation, front end
  included) and ``tail_ms`` (activation -> model output);
* per (point, codec) (:class:`CodecTimes`): ``encode_ms``, ``decode_ms``, ``bytes`` on the
  wire and ``resume`` (the point the tail resumes at, when not ``point``).

It is made by ``splitasr profile --per-input --manifest M`` (:mod:`splitasr.bench.profile`)
once on the edge machine (``--role edge``) and once on the cloud machine (``--role cloud``):
the simulator reads heads, encoders, bytes and edge-only from the edge file and decoders,
tails and text from the cloud file, as the planner does with profiles.

When only the lengths are known (``lengths.csv``, or a manifest's durations),
:func:`synthesise` makes a workload from a profile's fits and a documented noise model
(:class:`NoiseModel`): each time is the fit's prediction times ``max(0, 1 + e)``, ``e``
drawn from a normal of the relative standard deviation the profiler measured for that
quantity (mean of ``std / mean`` over its samples; ``default_cv`` when it has none), from a
seeded generator. Bytes are the fit's prediction, rounded. A result says which kind of
workload it used (``Workload.measured``).

JSON, read strictly like a profile (bounded size, every field checked, one
:class:`~splitasr.planner.profiles.ProfileError` line on a bad file). No torch here.
"""

from __future__ import annotations

import csv
import io
import json
import math
import random
from dataclasses import dataclass
from pathlib import Path

from splitasr.planner.profiles import (
    Fit,
    Machine,
    Profile,
    ProfileError,
    _drop_none,
    from_dict,
    read_json,
)

WORKLOAD_VERSION = 1
MAX_WORKLOAD_BYTES = 32 * 1024 * 1024  # 4096 inputs x 64 point-codec pairs fit well under it
MAX_LENGTHS_BYTES = 1024 * 1024
MAX_INPUTS = 4096


@dataclass(frozen=True)
class PointTimes:
    """Measured ms at one split point (``None``: not measured there)."""

    point: str
    head_ms: float | None = None
    tail_ms: float | None = None


@dataclass(frozen=True)
class CodecTimes:
    """Measured ms and bytes of one codec at one point, for one input."""

    point: str
    codec: str
    encode_ms: float
    decode_ms: float
    bytes: int
    resume: str | None = None


@dataclass(frozen=True)
class InputTimes:
    """One input: its length (s), when it arrives (``arrival_s``; ``None``: right after the
    previous one), and the measured times of every stage on one machine."""

    id: str
    seconds: float
    full_ms: float
    text_ms: float
    text_bytes: int = 0
    points: tuple[PointTimes, ...] = ()
    codecs: tuple[CodecTimes, ...] = ()
    arrival_s: float | None = None

    def head(self, point: str) -> float | None:
        return next((p.head_ms for p in self.points if p.point == point), None)

    def tail(self, point: str) -> float | None:
        return next((p.tail_ms for p in self.points if p.point == point), None)

    def codec(self, point: str, codec: str) -> CodecTimes | None:
        return next((c for c in self.codecs if c.point == point and c.codec == codec), None)


@dataclass(frozen=True)
class Workload:
    """Per-input measurements of one model on one machine (``role`` edge or cloud).

    ``measured``: ``True`` when every time was measured per input (``splitasr profile
    --per-input``), ``False`` when synthesised from a profile's fits and a noise model
    (``source`` then says which profile and noise)."""

    model: str
    role: str
    machine: Machine
    inputs: tuple[InputTimes, ...]
    measured: bool = True
    source: str = ""
    version: int = WORKLOAD_VERSION

    def to_dict(self) -> dict:
        import dataclasses

        return _drop_none(dataclasses.asdict(self))


def save_workload(workload: Workload, path: str | Path) -> None:
    check_workload(workload, str(path))
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(workload.to_dict(), indent=0) + "\n")


def load_workload(path: str | Path) -> Workload:
    """Read a workload JSON strictly (size bounded before reading, every field typed).

    Raises:
        ProfileError: one line naming the file and the field.
    """
    data = read_json(path, MAX_WORKLOAD_BYTES)
    if not isinstance(data, dict) or data.get("version") != WORKLOAD_VERSION:
        raise ProfileError(f"{path}: not a version-{WORKLOAD_VERSION} workload")
    w = from_dict(Workload, data, str(path))
    check_workload(w, str(path))
    return w


def check_workload(w: Workload, name: str) -> None:
    """Non-negative finite times and bytes, positive lengths, a known role, unique ids."""
    if w.role not in ("edge", "cloud"):
        raise ProfileError(f"{name}: role {w.role!r}; choose from edge, cloud")
    if not w.inputs:
        raise ProfileError(f"{name}: a workload needs at least one input")
    if len(w.inputs) > MAX_INPUTS:
        raise ProfileError(f"{name}: {len(w.inputs)} inputs, more than {MAX_INPUTS}")
    ids = set()
    for i, x in enumerate(w.inputs):
        where = f"{name}: input {i} ({x.id})"
        if x.id in ids:
            raise ProfileError(f"{where}: id listed twice")
        ids.add(x.id)
        if not (math.isfinite(x.seconds) and x.seconds > 0):
            raise ProfileError(f"{where}: seconds must be positive")
        if x.arrival_s is not None and x.arrival_s < 0:
            raise ProfileError(f"{where}: arrival_s must be >= 0")
        values = [x.full_ms, x.text_ms, x.text_bytes]
        values += [v for p in x.points for v in (p.head_ms, p.tail_ms) if v is not None]
        values += [v for c in x.codecs for v in (c.encode_ms, c.decode_ms, c.bytes)]
        if any(v < 0 for v in values):
            raise ProfileError(f"{where}: times and bytes must be >= 0")


def pair_workloads(edge: Workload, cloud: Workload) -> None:
    """Check that two workloads measured the same inputs (same ids and lengths, in order)
    of the same model, on an edge and a cloud machine."""
    if edge.model != cloud.model:
        raise ProfileError(f"edge workload is for {edge.model!r}, cloud workload for {cloud.model!r}")
    if edge.role != "edge" or cloud.role != "cloud":
        raise ProfileError(f"workload roles are {edge.role!r} and {cloud.role!r}; give the edge one first")
    a = [(x.id, round(x.seconds, 6)) for x in edge.inputs]
    b = [(x.id, round(x.seconds, 6)) for x in cloud.inputs]
    if a != b:
        raise ProfileError("edge and cloud workloads hold different inputs (ids and lengths must match)")


# ------------------------------------------------------------------ lengths only


@dataclass(frozen=True)
class LengthRow:
    seconds: float
    arrival_s: float | None = None
    id: str = ""


def parse_lengths(text: str, source: str = "lengths.csv") -> list[LengthRow]:
    """``seconds[,arrival_s]`` per line (a header line ``seconds`` or ``seconds,arrival_s``
    is skipped; ``#`` comments and blank lines too). A manifest line (a JSON object with
    ``duration``) gives its duration, so a corpus manifest is a workload of lengths."""
    rows: list[LengthRow] = []
    for n, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("{"):
            try:
                obj = json.loads(line)
                seconds, arrival, ident = float(obj["duration"]), None, str(obj.get("audio", n))
            except (ValueError, KeyError, TypeError):
                raise ProfileError(f"{source}:{n}: a manifest line needs a numeric 'duration'") from None
        else:
            cells = next(csv.reader(io.StringIO(line)))
            if cells[0].strip().lower() == "seconds":
                continue
            if len(cells) > 2:
                raise ProfileError(f"{source}:{n}: expected seconds[,arrival_s]")
            try:
                seconds = float(cells[0])
                arrival = float(cells[1]) if len(cells) == 2 and cells[1].strip() else None
            except ValueError:
                raise ProfileError(f"{source}:{n}: {line[:40]!r} is not seconds[,arrival_s]") from None
            ident = f"input{len(rows)}"
        if not (math.isfinite(seconds) and 0 < seconds <= 600):
            raise ProfileError(f"{source}:{n}: seconds must be in (0, 600]")
        if arrival is not None and not (math.isfinite(arrival) and arrival >= 0):
            raise ProfileError(f"{source}:{n}: arrival_s must be a finite number >= 0")
        if len(rows) == MAX_INPUTS:
            raise ProfileError(f"{source}:{n}: more than {MAX_INPUTS} inputs")
        rows.append(LengthRow(seconds, arrival, ident))
    if not rows:
        raise ProfileError(f"{source}: no lengths")
    return rows


def load_lengths(path: str | Path) -> list[LengthRow]:
    p = Path(path)
    try:
        if p.stat().st_size > MAX_LENGTHS_BYTES:
            raise ProfileError(f"{p}: larger than {MAX_LENGTHS_BYTES} bytes")
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ProfileError(f"{p}: cannot read ({exc.strerror or exc})") from None
    except UnicodeDecodeError:
        raise ProfileError(f"{p}: not UTF-8 text") from None
    return parse_lengths(text, str(p))


@dataclass(frozen=True)
class NoiseModel:
    """How a synthesised workload scatters around the fits.

    Each time = prediction x ``max(0, 1 + e)``, ``e ~ Normal(0, cv)``, ``cv`` the fit's
    measured relative standard deviation (mean ``std / mean`` over its samples), or
    ``default_cv`` where the fit has no samples; ``scale`` multiplies every ``cv`` (0: the
    fits exactly, as a planner with perfect information sees them). Seeded."""

    default_cv: float = 0.05
    scale: float = 1.0
    seed: int = 0


def _cv(fit: Fit, default: float) -> float:
    rel = [s.std / s.mean for s in fit.samples if s.mean > 0]
    return sum(rel) / len(rel) if rel else default


def synthesise(profile: Profile, lengths: list[LengthRow], noise: NoiseModel = NoiseModel()) -> Workload:
    """A workload of ``lengths`` whose times are ``profile``'s fits with ``noise``
    (module docstring): what the simulator uses when no per-input measurement exists."""
    rng = random.Random(noise.seed)

    def draw(fit: Fit, x: float) -> float:
        value = fit.predict(x)
        cv = _cv(fit, noise.default_cv) * noise.scale
        return value * max(0.0, 1.0 + rng.gauss(0.0, cv)) if cv > 0 else value

    text_fit = profile.text.per_token_ms if profile.text.kind == "tokens" else profile.text.search_ms
    per_x = profile.text.tokens_per_second if profile.text.kind == "tokens" else 1.0
    inputs = []
    for row in lengths:
        s = row.seconds
        points = tuple(
            PointTimes(
                p.point,
                None if p.head_ms is None else draw(p.head_ms, s),
                None if p.tail_ms is None else draw(p.tail_ms, s),
            )
            for p in profile.points
        )
        codecs = tuple(
            CodecTimes(
                c.point,
                c.codec,
                draw(c.encode_ms, s),
                draw(c.decode_ms, s),
                max(0, round(c.payload_bytes.predict(s))),
                c.resume,
            )
            for c in profile.codecs
        )
        inputs.append(
            InputTimes(
                row.id,
                s,
                draw(profile.full_ms, s),
                draw(text_fit, per_x * s),  # type: ignore[arg-type,operator]
                0,
                points,
                codecs,
                row.arrival_s,
            )
        )
    return Workload(
        profile.model,
        profile.role,
        profile.machine,
        tuple(inputs),
        measured=False,
        source=(
            f"synthesised from the {profile.role} profile ({profile.source or 'no source'}): fit x "
            f"max(0, 1 + N(0, cv x {noise.scale:g})), cv per fit from its samples (default "
            f"{noise.default_cv:g}), seed {noise.seed}"
        ),
    )


__all__ = [
    "CodecTimes",
    "InputTimes",
    "LengthRow",
    "NoiseModel",
    "PointTimes",
    "Workload",
    "check_workload",
    "load_lengths",
    "load_workload",
    "pair_workloads",
    "parse_lengths",
    "save_workload",
    "synthesise",
]
