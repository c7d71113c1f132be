"""Named link profiles: what a network does to the bytes that cross it.

A :class:`LinkProfile` is the whole state of an emulated link at one moment: one-way
propagation delay, jitter, the uplink (edge -> cloud) and downlink (cloud -> edge) rates,
a loss rate and outage windows. :class:`~splitasr.netem.proxy.LinkEmulator` applies it to
every byte of every TCP connection it forwards; a :class:`~splitasr.netem.trace.Trace`
yields one per moment.

**Loss model.** The emulator forwards TCP byte streams, so nothing is really dropped: TCP
would resend a lost segment. What a loss costs the application is time, so each segment
is "lost" with probability ``loss`` and then delivered one retransmission timeout late,
``RTO = max(200 ms, 2 * RTT)`` with ``RTT = 2 * one_way_ms`` (Linux's minimum RTO is
200 ms). Segments are never reordered, so the ones behind a lost segment wait for it too
(TCP's head-of-line blocking).

**Outages.** ``outages`` are ``(start_s, end_s)`` windows, in seconds since the profile took
effect (the emulator's start, or :meth:`LinkEmulator.set_profile`), during which nothing is
delivered: a segment due inside a window is held until the window ends (a tunnel, a
handover), then delivered in order, all together (the rate was applied when they entered).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from splitasr.errors import ConfigError

MIN_RTO_S = 0.2  # Linux's TCP_RTO_MIN


@dataclass(frozen=True)
class LinkProfile:
    """One link's behaviour.

    Attributes:
        name: what tables and logs call it.
        one_way_ms: propagation delay each way, ms (RTT = 2x this plus serialisation).
        jitter_ms: each segment's delay is ``one_way_ms + U(-jitter_ms, +jitter_ms)``,
            never below 0 and never reordering a connection's bytes.
        up_kbps: edge -> cloud rate, kbit/s (1000 bit/s); ``None``: not shaped.
        down_kbps: cloud -> edge rate, kbit/s; ``None``: not shaped.
        loss: probability in [0, 1) that a segment costs one retransmission timeout.
        outages: ``(start_s, end_s)`` windows with nothing delivered (module docstring).
    """

    name: str
    one_way_ms: float = 0.0
    jitter_ms: float = 0.0
    up_kbps: float | None = None
    down_kbps: float | None = None
    loss: float = 0.0
    outages: tuple[tuple[float, float], ...] = field(default=())

    def __post_init__(self) -> None:
        for key in ("one_way_ms", "jitter_ms"):
            _check_finite(self.name, key, getattr(self, key))
        for key in ("up_kbps", "down_kbps"):
            value = getattr(self, key)
            if value is not None and not (math.isfinite(value) and value > 0):
                raise ConfigError(f"link profile {self.name}: {key} {value} must be > 0 (None: unshaped)")
        if not (math.isfinite(self.loss) and 0 <= self.loss < 1):
            raise ConfigError(f"link profile {self.name}: loss {self.loss} must be in [0, 1)")
        outages = tuple((float(a), float(b)) for a, b in self.outages)
        for a, b in outages:
            if not (math.isfinite(a) and math.isfinite(b) and 0 <= a < b):
                raise ConfigError(f"link profile {self.name}: outage ({a}, {b}) needs 0 <= start < end")
        object.__setattr__(self, "outages", outages)

    @property
    def rto_s(self) -> float:
        """The delay a lost segment costs: ``max(200 ms, 2 * RTT)``."""
        return max(MIN_RTO_S, 4 * self.one_way_ms / 1000)

    def rate_bps(self, direction: str) -> float | None:
        """``"up"`` or ``"down"``: that direction's rate in bit/s (``None``: not shaped)."""
        kbps = self.up_kbps if direction == "up" else self.down_kbps
        return None if kbps is None else 1000.0 * kbps


def _check_finite(name: str, key: str, value: float) -> None:
    if not (math.isfinite(value) and value >= 0):
        raise ConfigError(f"link profile {name}: {key} {value} must be a finite number >= 0")


# Paper 001's three links, and no shaping at all.
PROFILES: dict[str, LinkProfile] = {
    p.name: p
    for p in (
        LinkProfile("loopback"),
        LinkProfile("wifi", one_way_ms=2, up_kbps=450_000, down_kbps=450_000),
        LinkProfile("lte", one_way_ms=25, up_kbps=10_000, down_kbps=50_000),
        LinkProfile("3g", one_way_ms=100, up_kbps=200, down_kbps=1_000),
    )
}


def available_profiles() -> list[str]:
    """The names :func:`get_profile` knows, in table order."""
    return list(PROFILES)


def get_profile(name: str) -> LinkProfile:
    """The named profile; :class:`ConfigError` naming the known ones otherwise."""
    if name not in PROFILES:
        raise ConfigError(f"unknown link profile {name!r}; choose from {', '.join(PROFILES)}")
    return PROFILES[name]


__all__ = ["PROFILES", "LinkProfile", "available_profiles", "get_profile"]
