"""The network estimator driven by a clock of the test's own (pure: no I/O, no sleeping)."""

import pytest

from splitasr.planner import NetworkEstimator, Planner, RequestTiming, ServerLoad
from tests.planner.handmade import edge_and_cloud

OFFSET_S = 1000.0  # the server's clock runs 1000 s ahead of the client's


def request(t: float, rtt_ms: float, kbps: float, nbytes: int, server_ms: float = 30.0, stamp: bool = True):
    """Timestamps of a request on a symmetric link: half the RTT each way, the payload's
    transfer on the way up."""
    transfer = nbytes * 8.0 / kbps
    received = t + (rtt_ms / 2 + transfer) / 1000 + OFFSET_S
    replied = t + (rtt_ms + transfer + server_ms) / 1000
    return RequestTiming(t, replied, server_ms, nbytes, received if stamp else None)


def test_rtt_converges_after_a_step_change():
    est = NetworkEstimator(rtt_ms=100.0, up_kbps=1000.0, alpha=0.3)
    t = 0.0
    for _ in range(10):
        t += 1
        est.observe_request(t, request(t, 50.0, 1000.0, 100, stamp=False))
    assert est.estimate().rtt_ms == pytest.approx(50.0)
    for k in range(1, 16):
        t += 1
        est.observe_request(t, request(t, 200.0, 1000.0, 100, stamp=False))
        if k == 2:  # smoothed: 200 - 150 x 0.7^2
            assert est.estimate().rtt_ms == pytest.approx(126.5)
    assert est.estimate().rtt_ms == pytest.approx(200.0, abs=1.0)  # 150 x 0.7^15 = 0.7


def test_bandwidth_converges_after_a_step_change_and_the_rtt_stays_put():
    est = NetworkEstimator(rtt_ms=100.0, up_kbps=500.0, alpha=0.3)
    t = 0.0
    for _ in range(5):  # small payloads: teach the clock skew and the RTT
        t += 1
        est.observe_request(t, request(t, 40.0, 1000.0, 50))
    assert est.skew_ms == pytest.approx(2 * OFFSET_S * 1000, rel=1e-6)  # up - down = 2 x offset
    for _ in range(10):  # 50 kB payloads at 1000 kbit/s: 400 ms of transfer
        t += 1
        est.observe_request(t, request(t, 40.0, 1000.0, 50_000))
    assert est.estimate().up_kbps == pytest.approx(1000.0, rel=1e-3)
    for _ in range(15):  # the uplink drops to 250 kbit/s
        t += 1
        est.observe_request(t, request(t, 40.0, 250.0, 50_000))
    e = est.estimate()
    assert e.up_kbps == pytest.approx(250.0, rel=0.02) and e.rtt_ms == pytest.approx(40.0, abs=0.5)
    assert e.bandwidth_samples == 25


def test_probe_fires_when_the_estimate_is_stale():
    est = NetworkEstimator(probe_age_s=60.0)
    assert est.probe_due(0.0)  # never measured
    est.observe_request(0.0, request(0.0, 80.0, 1000.0, 100))
    assert not est.probe_due(59.9) and est.probe_due(60.0)
    est.observe_probe(61.0, 120.0)
    assert not est.probe_due(120.9) and est.probe_due(121.0)
    assert est.estimate().rtt_samples == 2 and est.estimate().measured_at == 61.0


def test_outage_after_consecutive_failures_recovers_on_success_and_plans_edge_only():
    edge, cloud = edge_and_cloud()
    planner = Planner(edge, cloud)
    est = NetworkEstimator(rtt_ms=50.0, up_kbps=1000.0, outage_after=3, outage_probe_s=5.0)
    est.observe_request(0.0, request(0.0, 50.0, 1000.0, 100))
    est.observe_failure(1.0)
    est.observe_failure(2.0)
    assert not est.estimate().outage and planner.decide(8.0, est.estimate()).option.kind != "edge"
    est.observe_failure(3.0)
    assert est.estimate().outage and planner.decide(8.0, est.estimate()).option.kind == "edge"
    assert not est.probe_due(7.9) and est.probe_due(8.0)  # a probe 5 s after the last failure
    est.observe_failure(8.0)  # the probe failed too: still out, next probe 5 s later
    assert est.estimate().outage and not est.probe_due(12.0) and est.probe_due(13.0)
    est.observe_probe(13.0, 55.0)
    assert not est.estimate().outage and planner.decide(8.0, est.estimate()).option.kind != "edge"


def test_server_load_from_the_last_reply():
    est = NetworkEstimator()
    est.observe_request(0.0, request(0.0, 50.0, 1000.0, 100), ServerLoad(3, 40.0, workers=2))
    assert est.load.wait_ms == pytest.approx(60.0)
