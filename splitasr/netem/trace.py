"""A link that changes over time, from a CSV file.

Format (one row per step; the header line is optional; blank lines and ``#`` comments are
skipped)::

    t_seconds,one_way_ms,up_kbps,down_kbps
    0,100,10000,50000
    60,200,10000,50000

``t_seconds`` counts from the emulator's start and increases strictly; a row holds from its
time until the next row's, and the last row holds for ever (before the first row's time,
the first row holds). ``one_way_ms`` is finite and >= 0; the rates are finite and > 0 (an
outage is a :class:`~splitasr.netem.profiles.LinkProfile` window, not a zero rate). The
file is bounded (:data:`MAX_TRACE_BYTES`, :data:`MAX_TRACE_ROWS`) before it is parsed.
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass, field
from pathlib import Path

from splitasr.errors import ConfigError
from splitasr.netem.profiles import LinkProfile

MAX_TRACE_BYTES = 1 << 20
MAX_TRACE_ROWS = 100_000
HEADER = ("t_seconds", "one_way_ms", "up_kbps", "down_kbps")


class TraceError(ConfigError):
    """A trace file is missing, too large or malformed (the message names the line)."""


@dataclass(frozen=True)
class TraceRow:
    """One step: from ``t_s`` seconds on, this delay and these rates."""

    t_s: float
    one_way_ms: float
    up_kbps: float
    down_kbps: float


@dataclass(frozen=True)
class Trace:
    """A step function of link states.

    Attributes:
        name: what logs call it (the file's stem).
        rows: the steps, ``t_s`` strictly increasing.
        jitter_ms, loss: applied at every step (the CSV has no column for them).
    """

    name: str
    rows: tuple[TraceRow, ...]
    jitter_ms: float = 0.0
    loss: float = 0.0
    _times: tuple[float, ...] = field(init=False, repr=False, compare=False)
    _profiles: tuple[LinkProfile, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.rows:
            raise TraceError(f"trace {self.name}: no rows")
        times = tuple(r.t_s for r in self.rows)
        if any(b <= a for a, b in zip(times, times[1:], strict=False)):
            raise TraceError(f"trace {self.name}: t_seconds must increase strictly")
        profiles = tuple(
            LinkProfile(
                f"{self.name}@{r.t_s:g}s",
                one_way_ms=r.one_way_ms,
                jitter_ms=self.jitter_ms,
                up_kbps=r.up_kbps,
                down_kbps=r.down_kbps,
                loss=self.loss,
            )
            for r in self.rows
        )
        object.__setattr__(self, "_times", times)
        object.__setattr__(self, "_profiles", profiles)

    def at(self, t_s: float) -> LinkProfile:
        """The link ``t_s`` seconds after the start (the row in force then)."""
        return self._profiles[max(0, bisect.bisect_right(self._times, t_s) - 1)]

    @property
    def duration_s(self) -> float:
        """The last step's time (the link is constant after it)."""
        return self._times[-1]


def load_trace(path: str | Path, jitter_ms: float = 0.0, loss: float = 0.0) -> Trace:
    """Parse a trace CSV (module docstring); :class:`TraceError` with the line otherwise."""
    path = Path(path)
    try:
        with path.open("rb") as f:
            raw = f.read(MAX_TRACE_BYTES + 1)
    except OSError as exc:
        raise TraceError(f"{path}: cannot read trace ({exc.strerror or exc})") from None
    if len(raw) > MAX_TRACE_BYTES:
        raise TraceError(f"{path}: trace larger than {MAX_TRACE_BYTES} bytes")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise TraceError(f"{path}: trace is not UTF-8 text") from None
    return parse_trace(text, name=path.stem, source=str(path), jitter_ms=jitter_ms, loss=loss)


def parse_trace(
    text: str, name: str = "trace", source: str = "trace", jitter_ms: float = 0.0, loss: float = 0.0
) -> Trace:
    """Parse CSV text (see :func:`load_trace`); ``source`` prefixes error messages."""
    rows: list[TraceRow] = []
    seen_data = False
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        cells = [c.strip() for c in line.split(",")]
        if not seen_data and tuple(c.lower() for c in cells) == HEADER:
            seen_data = True
            continue
        seen_data = True
        if len(cells) != len(HEADER):
            raise TraceError(f"{source}:{number}: expected {len(HEADER)} fields ({','.join(HEADER)})")
        values = [_number(source, number, key, cell) for key, cell in zip(HEADER, cells, strict=True)]
        t, one_way, up, down = values
        for key, value in (("up_kbps", up), ("down_kbps", down)):
            if value <= 0:
                raise TraceError(f"{source}:{number}: {key} {value:g} must be positive")
        if rows and t <= rows[-1].t_s:
            prev = rows[-1].t_s
            raise TraceError(f"{source}:{number}: t_seconds {t:g} does not increase (previous {prev:g})")
        if len(rows) == MAX_TRACE_ROWS:
            raise TraceError(f"{source}:{number}: more than {MAX_TRACE_ROWS} rows")
        rows.append(TraceRow(t, one_way, up, down))
    if not rows:
        raise TraceError(f"{source}: no rows")
    return Trace(name, tuple(rows), jitter_ms=jitter_ms, loss=loss)


def _number(source: str, line: int, key: str, cell: str) -> float:
    try:
        value = float(cell)
    except ValueError:
        raise TraceError(f"{source}:{line}: {key} {cell[:40]!r} is not a number") from None
    if not math.isfinite(value) or value < 0:
        raise TraceError(f"{source}:{line}: {key} {cell[:40]} must be a finite number >= 0")
    return value


def shipped_trace(name: str) -> Path:
    """The path of a trace shipped in ``splitasr/netem/traces/`` (``name`` without .csv)."""
    return Path(__file__).parent / "traces" / f"{name}.csv"


__all__ = [
    "MAX_TRACE_BYTES",
    "MAX_TRACE_ROWS",
    "Trace",
    "TraceError",
    "TraceRow",
    "load_trace",
    "parse_trace",
    "shipped_trace",
]
