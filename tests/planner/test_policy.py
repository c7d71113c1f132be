"""The planner against totals worked out by hand on the profiles of handmade.py.

At s seconds, RTT R ms, uplink B kbit/s and server wait Q ms (edge = base x 10):
edge-only 100 s + 20; cloud pcm16 256000 s / B + R + Q + 10 s + 2;
split proj q8+ans 20 s + 1 + 8000 s / B + R + Q + 0.1 + 8 s + 2;
split proj deepcod+ans 20 s + 2 + 800 s / B + R + Q + 0.3 + 8 s + 2.
"""

import math

import pytest

from splitasr.planner import Budget, NetworkEstimate, Planner, PowerModel, ServerLoad, load_wer_table, plan
from tests.planner.handmade import edge_and_cloud

NET = NetworkEstimate(rtt_ms=50.0, up_kbps=1000.0)
POWER = PowerModel(active_w=2.0, tx_j_per_byte=1e-6, tx_w=1.0, idle_w=0.1)


@pytest.fixture(scope="module")
def planner():
    edge, cloud = edge_and_cloud()
    return Planner(edge, cloud, load_wer_table("ds2"), POWER)


def hand_totals(s, rtt, kbps, q=0.0):
    return {
        "edge": 100 * s + 20,
        "cloud audio pcm16+pack": 256000 * s / kbps + rtt + q + 10 * s + 2,
        "split proj q8+ans": 20 * s + 1 + 8000 * s / kbps + rtt + q + 0.1 + 8 * s + 2,
        "split proj deepcod+ans": 20 * s + 2 + 800 * s / kbps + rtt + q + 0.3 + 8 * s + 2,
    }


def test_predicts_every_option_as_computed_by_hand_and_picks_the_minimum(planner):
    d = planner.decide(2.0, NET)
    totals = hand_totals(2.0, 50.0, 1000.0)
    assert d.option.label == "split proj deepcod+ans"
    assert d.predicted_ms == pytest.approx(totals["split proj deepcod+ans"]) == pytest.approx(111.9)
    assert d.components == pytest.approx((40.0, 2.0, 1.6, 50.0, 0.0, 0.3, 16.0, 2.0))
    for i, o in enumerate(planner.options):  # every option's total, not just the winner's
        assert sum(planner.components(i, 2.0, NET, ServerLoad())) == pytest.approx(totals[o.label])
    assert plan(2.0, *edge_and_cloud(), NET).option == d.option  # the one-shot function agrees


def test_short_inputs_run_on_the_edge_long_ones_are_offloaded(planner):
    # edge 100 s + 20 vs deepcod 28.8 s + 54.3 at R=50, B=1000: break-even s = 34.3 / 71.2
    s_star = 34.3 / 71.2
    assert planner.decide(s_star * 0.95, NET).option.kind == "edge"
    assert planner.decide(s_star * 1.05, NET).option.label == "split proj deepcod+ans"


def test_wer_budget_excludes_lossy_codecs_over_it(planner):
    assert planner.decide(2.0, NET, budget=Budget(wer_points=1.0)).option.label == "split proj q8+ans"
    d = planner.decide(2.0, NET, budget=Budget(wer_points=0.0))  # q8 costs +0.06: only lossless or edge
    assert d.option.label == "edge" and d.dwer == 0.0
    assert "WER +2.05 > 0" in d.explain() and "WER +0.06 > 0" in d.explain()


def test_energy_budget_is_respected_and_falls_back_to_least_energy(planner):
    # deepcod: 2 W x 42 ms + 1e-6 J/B x 200 B + 1 W x 1.6 ms + 0.1 W x 68.3 ms = 0.09263 J
    # q8:      2 W x 41 ms + 1e-6 x 2000 + 1 W x 16 ms + 0.1 W x 68.1 ms = 0.10681 J; edge 0.44 J
    d = planner.decide(2.0, NET, budget=Budget(energy_j=0.1))
    assert d.option.label == "split proj deepcod+ans" and d.energy_j == pytest.approx(0.09263)
    d = planner.decide(2.0, NET, budget=Budget(wer_points=1.0, energy_j=0.2))
    assert d.option.label == "split proj q8+ans" and d.energy_j == pytest.approx(0.10681)
    d = planner.decide(2.0, NET, budget=Budget(wer_points=1.0, energy_j=0.1))  # nothing fits
    assert d.option.label == "split proj q8+ans" and d.fallback and "least energy" in d.explain()
    with pytest.raises(ValueError, match="power model"):
        Planner(*edge_and_cloud()).decide(2.0, NET, budget=Budget(energy_j=1.0))


def test_switches_exactly_at_the_bandwidth_break_even_point():
    edge, cloud = edge_and_cloud()
    p = Planner(edge, cloud, options=["edge", "cloud audio pcm16+pack"])
    # s = 2, R = 50: edge 220 = 512000 / B + 72  ->  B* = 512000 / 148 kbit/s
    b_star = 512000 / 148
    assert p.decide(2.0, NetworkEstimate(50.0, b_star * 0.999)).option.kind == "edge"
    assert p.decide(2.0, NetworkEstimate(50.0, b_star * 1.001)).option.kind == "cloud"


def test_switches_exactly_at_the_server_load_break_even_point(planner):
    # deepcod 111.9 + Q vs edge 220: Q* = 108.1 ms = 2 requests x 54.05 ms
    assert planner.decide(2.0, NET, ServerLoad(2, 54.0)).option.label == "split proj deepcod+ans"
    assert planner.decide(2.0, NET, ServerLoad(2, 54.1)).option.label == "edge"
    # two workers halve the wait
    assert planner.decide(2.0, NET, ServerLoad(4, 54.0, workers=2)).option.label == "split proj deepcod+ans"


def test_outage_leaves_edge_only(planner):
    d = planner.decide(8.0, NetworkEstimate(50.0, 1000.0, outage=True))
    assert d.option.label == "edge" and "outage" in d.explain()


def test_explain_lists_every_option_with_its_components_and_the_reason(planner):
    text = planner.decide(2.0, NET, budget=Budget(wer_points=1.0)).explain()
    for o in planner.options:
        assert o.label in text
    assert "* split proj q8+ans" in text
    assert "chosen: split proj q8+ans, least predicted total (125.1 ms)" in text
    assert "split proj deepcod+ans (111.9 ms), is excluded by the budgets" in text


def test_mismatched_models_are_refused():
    from dataclasses import replace

    from splitasr.planner import ProfileError

    edge, cloud = edge_and_cloud()
    with pytest.raises(ProfileError, match="edge profile is for 'whisper-tiny.en'"):
        Planner(replace(edge, model="whisper-tiny.en"), cloud)


def test_decision_values_are_finite(planner):
    for s in (0.1, 1.0, 30.0, 120.0):
        d = planner.decide(s, NET)
        assert math.isfinite(d.predicted_ms) and d.predicted_ms > 0


def test_the_runtime_planner_imports_no_torch():
    """The edge imports the planner on every input path: profiles, estimator and policy
    stay light (numpy only)."""
    import subprocess
    import sys

    code = "import sys, splitasr.planner; print('torch' in sys.modules)"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "False"


def test_a_codec_that_resumes_later_runs_the_later_tail_and_has_its_own_wer_row():
    """DS2's bnf+ans is made from the audio and decodes to proj: the edge runs no head,
    the cloud the proj tail; the WER table names it audio>proj (+8.09)."""
    from dataclasses import replace

    from splitasr.planner.profiles import CodecProfile, Fit

    bnf = CodecProfile("audio", "bnf+ans", Fit(0.5), Fit(0.4), Fit(0.0, 275.0), resume="proj")
    edge, cloud = edge_and_cloud()
    edge = replace(edge, codecs=(*edge.codecs, replace(bnf, encode_ms=Fit(5.0), decode_ms=Fit(4.0))))
    cloud = replace(cloud, codecs=(*cloud.codecs, bnf))
    p = Planner(edge, cloud, load_wer_table("ds2"))
    d = p.decide(2.0, NET)
    # 0 head + 5 encode + 550 B x 8 / 1000 + 50 + 0.4 decode + 16 proj tail + 2 text = 77.8
    assert d.option.label == "split audio>proj bnf+ans" and d.predicted_ms == pytest.approx(77.8)
    assert d.dwer == 8.09
    assert p.decide(2.0, NET, budget=Budget(wer_points=1.0)).option.label == "split proj q8+ans"


def test_shipped_ds2_profiles_pick_the_variable_rate_codec_rate_by_wer_budget():
    """The three rates of the shipped `lrd` at proj (one set of weights) are three options:
    on an 80 kbit/s uplink a WER budget of 2 points takes `lrd@1` (+1.42, 834 B for 3 s),
    3 points the smaller `lrd@0` (+2.56), and 1 point none of them (the edge).
    Values from the shipped, measured profiles (scripts/make_simulator_inputs.sh)."""
    from splitasr.planner.experiments import shipped_inputs

    mi = shipped_inputs("ds2")
    planner = Planner(mi.edge, mi.cloud, mi.wer)
    net = NetworkEstimate(rtt_ms=20.0, up_kbps=80.0)
    chosen = {b: planner.decide(3.0, net, budget=Budget(wer_points=b)) for b in (1.0, 2.0, 3.0)}
    assert [chosen[b].option.label for b in (1.0, 2.0, 3.0)] == [
        "edge",
        "split proj lrd@1+ans",
        "split proj lrd@0+ans",
    ]
    assert chosen[2.0].dwer == 1.42 and chosen[3.0].dwer == 2.56
