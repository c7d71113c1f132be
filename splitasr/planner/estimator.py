"""The network as the edge sees it: round-trip time, uplink bandwidth, outages, server load.

Paper 001 (Sec. II-B) keeps its latency estimate fresh two ways: the timestamps of every
offloaded request, and a ping when the last cloud inference is older than a minute
(otherwise, once a latency spike makes the edge run everything locally, it would never
notice the link recovering). :class:`NetworkEstimator` does both, and also splits the
network time into a round trip and an uplink transfer, so the planner can price a 100 kB
PCM upload and a 900-byte DeepCOD payload differently.

Pure: no I/O and no clock of its own. Every call takes ``now`` (seconds, any monotonic
clock the caller keeps), so the simulator drives it with trace time and the live client
with ``time.monotonic()``.

**What one request tells.** The client stamps ``sent_s`` and ``replied_s`` (its clock);
the server reports when it received the request (``server_received_s``, its own clock)
and ``total_ms`` (received -> reply ready). Then

* network time ``net = (replied - sent) - total`` = RTT + uplink transfer (the reply is a
  few bytes of text, its transfer is neglected);
* ``up - down`` with ``up = server_received - sent`` and ``down = replied - (server_received
  + total)`` equals ``transfer + skew``, where ``skew`` is twice the clock offset between the
  two machines (a symmetric path is assumed: half the RTT each way, as NTP does). The skew
  is learnt (EWMA) from requests whose transfer is negligible (probes, small payloads:
  expected transfer under ``small_share`` of the network time); afterwards every request
  gives ``transfer = (up - down) - skew``, a bandwidth sample ``bytes * 8 / transfer`` (when
  the transfer is at least ``min_transfer_ms``) and an RTT sample ``net - transfer``.
* Without the server's stamp, or before the skew is known, the request gives only an RTT
  sample ``net - bytes * 8 / up_kbps`` (the current bandwidth estimate).

RTT and bandwidth are exponentially weighted moving averages (weight ``alpha`` for the
newest sample); the first sample replaces the prior. A probe (``observe_probe``, a ping of
no payload) is an RTT sample. ``probe_due(now)`` is true when the last successful
measurement is older than ``probe_age_s`` (60 s, paper 001), or, in an outage, when the
last failure is older than ``outage_probe_s``. ``outage_after`` consecutive failures
(unreachable, deadline missed) make an outage, which the next success ends.
"""

from __future__ import annotations

from dataclasses import dataclass

PROBE_AGE_S = 60.0  # paper 001: ping when the last cloud inference is older than a minute


@dataclass(frozen=True)
class RequestTiming:
    """Timestamps of one offloaded request (seconds; ``sent_s``/``replied_s`` on the
    client's clock, ``server_received_s`` on the server's)."""

    sent_s: float
    replied_s: float
    server_total_ms: float
    bytes_up: int
    server_received_s: float | None = None


@dataclass(frozen=True)
class ServerLoad:
    """What the server said about itself in its last reply (``ServerLoad`` of the
    protocol): requests received and not yet answered, and the mean total time of recent
    requests. ``workers``: how many run at once (the server's ``--workers``, known to the
    edge from its configuration). The planner predicts a wait of
    ``queue_depth * mean_service_ms / workers``."""

    queue_depth: int = 0
    mean_service_ms: float = 0.0
    workers: int = 1

    @property
    def wait_ms(self) -> float:
        return self.queue_depth * self.mean_service_ms / max(self.workers, 1)


IDLE_SERVER = ServerLoad()


@dataclass(frozen=True)
class NetworkEstimate:
    """The link as last estimated: what the planner reads."""

    rtt_ms: float
    up_kbps: float
    measured_at: float | None = None  # ``now`` of the last successful measurement
    outage: bool = False
    rtt_samples: int = 0
    bandwidth_samples: int = 0


class NetworkEstimator:
    """EWMA estimates of RTT and uplink bandwidth from request timestamps and probes.

    Args:
        rtt_ms, up_kbps: the prior, used until the first measurement.
        alpha: weight of the newest sample in the moving averages (0 < alpha <= 1).
        probe_age_s: a probe is due when the last measurement is older than this.
        outage_after: consecutive failures that make an outage.
        outage_probe_s: in an outage, a probe is due this long after the last failure.
        small_share: a request whose expected transfer is under this share of its
            network time teaches the clock skew.
        min_transfer_ms: a transfer shorter than this gives no bandwidth sample (timer
            and queueing noise would dominate it).
    """

    def __init__(
        self,
        rtt_ms: float = 100.0,
        up_kbps: float = 1000.0,
        alpha: float = 0.3,
        probe_age_s: float = PROBE_AGE_S,
        outage_after: int = 3,
        outage_probe_s: float = 5.0,
        small_share: float = 0.05,
        min_transfer_ms: float = 2.0,
    ):
        if not (0 < alpha <= 1) or rtt_ms < 0 or up_kbps <= 0 or probe_age_s <= 0 or outage_after < 1:
            raise ValueError(
                "need 0 < alpha <= 1, rtt_ms >= 0, up_kbps > 0, probe_age_s > 0, outage_after >= 1"
            )
        self.alpha, self.probe_age_s, self.outage_after = alpha, probe_age_s, outage_after
        self.outage_probe_s, self.small_share, self.min_transfer_ms = (
            outage_probe_s,
            small_share,
            min_transfer_ms,
        )
        self.rtt_ms, self.up_kbps = float(rtt_ms), float(up_kbps)
        self.skew_ms: float | None = None
        self.measured_at: float | None = None
        self.failures = 0
        self.failed_at: float | None = None
        self.rtt_samples = self.bandwidth_samples = 0
        self.load = IDLE_SERVER

    # ------------------------------------------------------------------ feeding

    def _rtt(self, sample: float) -> None:
        sample = max(sample, 0.0)
        self.rtt_ms = sample if self.rtt_samples == 0 else self.rtt_ms + self.alpha * (sample - self.rtt_ms)
        self.rtt_samples += 1

    def _bandwidth(self, kbps: float) -> None:
        self.up_kbps = (
            kbps if self.bandwidth_samples == 0 else self.up_kbps + self.alpha * (kbps - self.up_kbps)
        )
        self.bandwidth_samples += 1

    def _success(self, now: float) -> None:
        self.measured_at = now
        self.failures = 0

    def observe_request(self, now: float, timing: RequestTiming, load: ServerLoad | None = None) -> None:
        """A reply arrived: update RTT (and bandwidth and skew where the stamps allow), end
        an outage, remember the server's load."""
        net = max((timing.replied_s - timing.sent_s) * 1000.0 - timing.server_total_ms, 0.0)
        expected = timing.bytes_up * 8.0 / self.up_kbps
        if timing.server_received_s is not None:
            up = (timing.server_received_s - timing.sent_s) * 1000.0
            down = (timing.replied_s - timing.server_received_s) * 1000.0 - timing.server_total_ms
            if expected <= self.small_share * net:
                diff = up - down - expected
                self.skew_ms = (
                    diff if self.skew_ms is None else self.skew_ms + self.alpha * (diff - self.skew_ms)
                )
            if self.skew_ms is not None:
                transfer = min(max(up - down - self.skew_ms, 0.0), net)
                if transfer >= self.min_transfer_ms and timing.bytes_up > 0:
                    self._bandwidth(timing.bytes_up * 8.0 / transfer)
                self._rtt(net - transfer)
            else:
                self._rtt(net - expected)
        else:
            self._rtt(net - expected)
        if load is not None:
            self.load = load
        self._success(now)

    def observe_probe(self, now: float, rtt_ms: float) -> None:
        """A probe (a ping with no payload) answered after ``rtt_ms``."""
        self._rtt(rtt_ms)
        self._success(now)

    def observe_failure(self, now: float) -> None:
        """A request or probe failed (unreachable, or the deadline passed)."""
        self.failures += 1
        self.failed_at = now

    # ------------------------------------------------------------------ reading

    @property
    def outage(self) -> bool:
        return self.failures >= self.outage_after

    def probe_due(self, now: float) -> bool:
        """True when the estimate is stale (no success for ``probe_age_s``; never measured
        counts as stale) or, in an outage, ``outage_probe_s`` after the last failure."""
        if self.outage:
            return self.failed_at is None or now - self.failed_at >= self.outage_probe_s
        return self.measured_at is None or now - self.measured_at >= self.probe_age_s

    def estimate(self) -> NetworkEstimate:
        return NetworkEstimate(
            self.rtt_ms, self.up_kbps, self.measured_at, self.outage, self.rtt_samples, self.bandwidth_samples
        )


__all__ = [
    "IDLE_SERVER",
    "NetworkEstimate",
    "NetworkEstimator",
    "PROBE_AGE_S",
    "RequestTiming",
    "ServerLoad",
]
