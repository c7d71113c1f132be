"""The trace-driven simulator: its accounting by hand, the oracle, stale estimates.

Hand-made profiles (tests/planner/handmade.py): the edge is the base machine 10x slower.
"""

import json

import pytest

from splitasr.cli import main
from splitasr.netem.trace import Trace, TraceRow
from splitasr.planner import Planner, ProfileError, save_profile
from splitasr.planner.profiles import Machine
from splitasr.planner.simulate import (
    PROBE_BYTES,
    EstimatorSettings,
    Fixed,
    Oracle,
    PerfectNetPlanner,
    PlannerPolicy,
    build_cases,
    fixed_trace,
    measured_options,
    run_policies,
    simulate,
    spread_arrivals,
)
from splitasr.planner.workload import (
    CodecTimes,
    InputTimes,
    LengthRow,
    NoiseModel,
    PointTimes,
    Workload,
    load_workload,
    parse_lengths,
    save_workload,
    synthesise,
)
from tests.planner.handmade import edge_and_cloud

MACHINE = Machine("hand-made", 1)
PCM = "cloud audio pcm16+pack"


def _input(id_, seconds, full, text, head, encode, nbytes, decode=0.0, tail=0.0, text_bytes=0, arrival=None):
    return InputTimes(
        id_,
        seconds,
        full,
        text,
        text_bytes,
        (PointTimes("audio", head, tail),),
        (CodecTimes("audio", "pcm16+pack", encode, decode, nbytes),),
        arrival,
    )


def three_inputs():
    """Three inputs measured by hand: edge (full, text, head, encode, bytes) and cloud
    (decode, tail, text, transcript bytes 36 -> reply 36 + 64 = 100 B)."""
    edge = Workload(
        "ds2",
        "edge",
        MACHINE,
        (
            _input("a", 1.0, 100.0, 20.0, 0.0, 0.5, 32000),
            _input("b", 2.0, 210.0, 22.0, 0.0, 1.0, 64000),
            _input("c", 0.5, 48.0, 20.0, 0.0, 0.25, 16000),
        ),
    )
    cloud = Workload(
        "ds2",
        "cloud",
        MACHINE,
        (
            _input("a", 1.0, 10.0, 2.0, 0.0, 0.0, 32000, decode=0.25, tail=12.0, text_bytes=36),
            _input("b", 2.0, 20.0, 2.5, 0.0, 0.0, 64000, decode=0.5, tail=21.0, text_bytes=36),
            _input("c", 0.5, 5.0, 2.0, 0.0, 0.0, 16000, decode=0.1, tail=5.9, text_bytes=36),
        ),
    )
    return edge, cloud


THREE_ROWS = Trace(
    "three",
    (
        TraceRow(0.0, 50.0, 1000.0, 800.0),
        TraceRow(10.0, 100.0, 500.0, 800.0),
        TraceRow(20.0, 10.0, 2000.0, 400.0),
    ),
)


def _planner_for(edge_w, cloud_w, **kw):
    e, c = edge_and_cloud()
    full = Planner(e, c, **kw)
    return Planner(e, c, options=measured_options(full, edge_w, cloud_w), **kw)


def test_each_input_is_charged_the_formula_by_hand():
    edge_w, cloud_w = three_inputs()
    planner = _planner_for(edge_w, cloud_w)
    assert [o.label for o in planner.options] == ["edge", PCM]
    cases = build_cases(planner, edge_w, cloud_w)
    arrivals = [0.0, 10.0, 20.0]  # one input in each row of the trace
    cloud = simulate(Fixed("cloud", 1), planner, cases, THREE_ROWS, arrivals)
    # local + bytes x 8 / up + one way + (decode + tail + text) + one way + 100 B x 8 / down
    a = 0.5 + 32000 * 8 / 1000 + 50 + (0.25 + 12 + 2) + 50 + 100 * 8 / 800  # 371.75
    b = 1.0 + 64000 * 8 / 500 + 100 + (0.5 + 21 + 2.5) + 100 + 100 * 8 / 800  # 1250.0
    c = 0.25 + 16000 * 8 / 2000 + 10 + (0.1 + 5.9 + 2) + 10 + 100 * 8 / 400  # 94.25
    assert [s.total_ms for s in cloud.steps] == pytest.approx([371.75, 1250.0, 94.25])
    assert [s.total_ms for s in cloud.steps] == pytest.approx([a, b, c])
    assert [s.phase for s in cloud.steps] == [0, 1, 2]
    assert [s.bytes_up for s in cloud.steps] == [32000, 64000, 16000]
    assert cloud.total_ms == pytest.approx(371.75 + 1250.0 + 94.25)
    # the oracle takes the least of edge (full + text) and that, per input
    oracle = simulate(Oracle(planner), planner, cases, THREE_ROWS, arrivals)
    assert [s.total_ms for s in oracle.steps] == pytest.approx([120.0, 232.0, 68.0])
    # one after another (no arrivals): input k starts when k-1 finished
    seq = simulate(Fixed("cloud", 1), planner, cases, THREE_ROWS)
    # all in row 0: b costs 1 + 512 + 50 + 24 + 50 + 1 = 638 ms there
    assert [s.start_s for s in seq.steps] == pytest.approx([0.0, 0.37175, 0.37175 + 0.638])


def test_the_planner_probes_when_it_connects_and_no_input_waits_for_it():
    edge_w, cloud_w = three_inputs()
    planner = _planner_for(edge_w, cloud_w)
    cases = build_cases(planner, edge_w, cloud_w)
    run = simulate(PlannerPolicy(planner), planner, cases, THREE_ROWS, [0.0, 10.0, 20.0])
    # the estimate stays fresh for 60 s: no other probe, and it chose edge every time
    assert run.probes == 1 and run.probe_bytes == 2 * PROBE_BYTES
    assert [s.probe_ms for s in run.steps] == [0.0, 0.0, 0.0]
    assert [planner.options[s.option].label for s in run.steps] == ["edge", "edge", "edge"]
    assert run.total_ms == pytest.approx(120.0 + 232.0 + 68.0)


def test_paper_001_accounting_charges_every_probe_to_its_input():
    edge_w, cloud_w = three_inputs()
    planner = _planner_for(edge_w, cloud_w)
    cases = build_cases(planner, edge_w, cloud_w)
    paper = EstimatorSettings(background_probes=False, probe_at_start=False, probe_age_s=15.0)
    run = simulate(PlannerPolicy(planner), planner, cases, THREE_ROWS, [0.0, 10.0, 20.0], paper)
    first = 2 * 50 + PROBE_BYTES * 8 / 1000 + PROBE_BYTES * 8 / 800  # 101.152 ms, on row 0
    third = 2 * 10 + PROBE_BYTES * 8 / 2000 + PROBE_BYTES * 8 / 400  # row 2, 20 s > 15 s later
    assert [s.probe_ms for s in run.steps] == pytest.approx([first, 0.0, third])
    assert run.probes == 2 and run.total_ms == pytest.approx(first + third + 120.0 + 232.0 + 68.0)


def test_a_stale_estimate_is_probed_in_the_background_and_read_by_the_next_input():
    edge_w, cloud_w = three_inputs()
    planner = _planner_for(edge_w, cloud_w)
    cases = build_cases(planner, edge_w, cloud_w)
    settings = EstimatorSettings(probe_age_s=5.0)  # stale before each later input
    est_seen = []

    class Spy(PlannerPolicy):
        def choose(self, case, link, estimate):
            est_seen.append(round(estimate.rtt_ms, 3))
            return super().choose(case, link, estimate)

    arrivals = [0.0, 10.0, 10.5]  # the probe due at 10 s is answered (200 ms) before 10.5 s
    run = simulate(Spy(planner), planner, cases, THREE_ROWS, arrivals, settings)
    row1 = 2 * 100 + PROBE_BYTES * 8 / 500 + PROBE_BYTES * 8 / 800  # 201.664 ms
    assert [s.probe_ms for s in run.steps] == [0.0, 0.0, 0.0]  # nobody waited
    assert run.probes == 2  # on connecting, and at 10 s in the background
    start_rtt = 2 * 50 + PROBE_BYTES * 8 / 1000 + PROBE_BYTES * 8 / 800
    assert est_seen[:2] == [round(start_rtt, 3)] * 2  # the input at 10 s decided with the old one
    assert est_seen[2] == pytest.approx(start_rtt + 0.3 * (row1 - start_rtt), abs=1e-3)  # EWMA, alpha 0.3
    assert run.total_ms == pytest.approx(120.0 + 232.0 + 68.0)


def test_edge_only_total_is_the_sum_of_measured_edge_times():
    edge_w, cloud_w = three_inputs()
    planner = _planner_for(edge_w, cloud_w)
    runs = run_policies(
        planner, build_cases(planner, edge_w, cloud_w), fixed_trace(100, 1000, 1000), ("edge",)
    )
    assert runs["edge"].total_ms == pytest.approx(sum(x.full_ms + x.text_ms for x in edge_w.inputs))
    assert runs["edge"].probes == 0


def _synthetic(noise_scale: float, lengths=(0.3, 0.5, 1.0, 2.0, 3.0, 5.0, 8.0, 12.0, 20.0), arrivals=None):
    e, c = edge_and_cloud()
    rows = [LengthRow(s, None if arrivals is None else arrivals[i], f"u{i}") for i, s in enumerate(lengths)]
    ew = synthesise(e, rows, NoiseModel(scale=noise_scale, seed=1))
    cw = synthesise(c, rows, NoiseModel(scale=noise_scale, seed=2))
    return ew, cw


def test_the_oracle_is_never_worse_than_any_policy():
    ew, cw = _synthetic(noise_scale=3.0, lengths=tuple(0.2 + 0.7 * k for k in range(30)))
    planner = _planner_for(ew, cw)
    cases = build_cases(planner, ew, cw)
    for one_way in (5.0, 50.0, 150.0, 400.0):
        runs = run_policies(planner, cases, fixed_trace(one_way, 2000.0, 10000.0))
        oracle = runs["oracle"].total_ms
        assert all(oracle <= r.total_ms + 1e-9 for r in runs.values()), one_way
    steps = Trace(
        "steps",
        (TraceRow(0, 20, 2000, 10000), TraceRow(100, 400, 2000, 10000), TraceRow(200, 30, 2000, 10000)),
    )
    arrivals = spread_arrivals(len(cases), 300.0)  # 10 s apart: nobody falls behind
    runs = run_policies(planner, cases, steps, arrivals=arrivals)
    assert all(runs["oracle"].total_ms <= r.total_ms + 1e-9 for r in runs.values())
    assert all(s.wait_ms == 0 for r in runs.values() for s in r.steps)


def test_the_planner_with_perfect_information_equals_the_oracle():
    # measured times = the profiles' fits (no noise), and the planner told the true link
    ew, cw = _synthetic(noise_scale=0.0, lengths=tuple(0.1 + 0.4 * k for k in range(50)))
    planner = _planner_for(ew, cw)
    cases = build_cases(planner, ew, cw)
    for one_way in (1.0, 20.0, 60.0, 200.0):
        trace = fixed_trace(one_way, 1500.0, 8000.0)
        perfect = simulate(PerfectNetPlanner(planner), planner, cases, trace)
        oracle = simulate(Oracle(planner), planner, cases, trace)
        assert perfect.total_ms == pytest.approx(oracle.total_ms, rel=1e-12)
        for p, o in zip(perfect.steps, oracle.steps, strict=True):
            assert p.total_ms == pytest.approx(o.total_ms, rel=1e-12)
            assert p.predicted_ms == pytest.approx(p.charged.total_ms, rel=1e-9)  # the prediction was exact
    # and with noise the perfect-network planner pays for regression error only: >= oracle
    ew, cw = _synthetic(noise_scale=3.0, lengths=tuple(0.1 + 0.4 * k for k in range(50)))
    cases = build_cases(planner, ew, cw)
    trace = fixed_trace(60.0, 1500.0, 8000.0)
    assert (
        simulate(PerfectNetPlanner(planner), planner, cases, trace).total_ms
        >= simulate(Oracle(planner), planner, cases, trace).total_ms
    )


def test_after_a_step_the_planner_pays_until_a_probe_catches_up():
    """20 ms one way until t = 50 s, 2 s until 100 s, then 20 ms again. 1-s inputs, one
    every 2 s, probe age 10 s, alpha 1 (one sample replaces the estimate)."""
    n = 75
    ew, cw = _synthetic(noise_scale=0.0, lengths=(1.0,) * n)
    planner = _planner_for(ew, cw)
    cases = build_cases(planner, ew, cw)
    trace = Trace(
        "step", (TraceRow(0, 20, 2000, 8000), TraceRow(50, 2000, 2000, 8000), TraceRow(100, 20, 2000, 8000))
    )
    arrivals = [2.0 * k for k in range(n)]
    settings = EstimatorSettings(probe_age_s=10.0, alpha=1.0)
    run = simulate(PlannerPolicy(planner), planner, cases, trace, arrivals, settings)
    oracle = simulate(Oracle(planner), planner, cases, trace, arrivals, settings)
    labels = [planner.options[s.option].label for s in run.steps]
    best = [planner.options[s.option].label for s in oracle.steps]
    # before the step both offload; the first input after it (k = 25, t = 50 s) still offloads on
    # the stale 40-ms RTT and pays the 4-s round trip, then the planner runs on the edge
    assert labels[:25] == best[:25] and labels[0] != "edge"
    assert labels[25] != "edge" and best[25] == "edge"
    assert run.steps[25].total_ms > 4000.0
    assert labels[26:50] == ["edge"] * 24 and best[26:50] == ["edge"] * 24
    # the link recovers at 100 s (k = 50); the estimate (last measured when input 25's reply came,
    # at ~54.0 s, then probed every 10 s in the background while on the edge) stays at 4 s until
    # a probe sent after 100 s answers
    probes = [k for k, s in enumerate(run.steps) if s.probe_rtt_ms > 0]
    assert all(25 < k for k in probes) and run.probes == len(probes) + 1  # + the one on connecting
    assert all(s.probe_ms == 0 for s in run.steps)  # no input waited for a probe
    first_after = next(k for k in probes if k >= 50)
    assert best[50] != "edge"
    # the input that sends the probe still decides on the stale estimate; the next one reads it
    assert labels[50 : first_after + 1] == ["edge"] * (first_after + 1 - 50)
    assert labels[first_after + 1] != "edge" and labels[first_after + 1 :] == best[first_after + 1 :]
    # it is sent by the first input that starts a probe age after the last measurement (the probe
    # before it, made on the slow link, answered after its 4-s round trip) ...
    before = run.steps[probes[probes.index(first_after) - 1]]
    measured_at = before.start_s + before.probe_rtt_ms / 1000.0
    assert run.steps[first_after].start_s >= measured_at + 10.0 > run.steps[first_after - 1].start_s
    # ... so the planner pays for at most a probe age, a probe's round trip and two gaps
    assert run.steps[first_after + 1].start_s - 100.0 <= 10.0 + 4.1 + 2.0 + 2.0
    # what the staleness cost: the stale offload and the edge inputs after recovery
    stale = sum(run.steps[k].total_ms - oracle.steps[k].total_ms for k in range(n))
    assert stale > 4000.0


def test_workload_round_trip_and_a_bad_file_is_one_line(tmp_path):
    edge_w, _ = three_inputs()
    save_workload(edge_w, tmp_path / "w.json")
    assert load_workload(tmp_path / "w.json") == edge_w
    data = json.loads((tmp_path / "w.json").read_text())
    data["inputs"][1]["full_ms"] = -1.0
    (tmp_path / "bad.json").write_text(json.dumps(data))
    with pytest.raises(ProfileError, match=r"input 1 \(b\): times and bytes must be >= 0"):
        load_workload(tmp_path / "bad.json")
    data["inputs"][1]["full_ms"] = "fast"
    (tmp_path / "bad.json").write_text(json.dumps(data))
    with pytest.raises(ProfileError, match="InputTimes.full_ms: expected a finite number"):
        load_workload(tmp_path / "bad.json")


def test_lengths_csv_and_manifest_lines():
    rows = parse_lengths("seconds,arrival_s\n1.5\n2,10\n# c\n" + '{"audio": "x.wav", "duration": 3.25}\n')
    assert [(r.seconds, r.arrival_s) for r in rows] == [(1.5, None), (2.0, 10.0), (3.25, None)]
    with pytest.raises(ProfileError, match=r"lengths.csv:2: seconds must be in \(0, 600\]"):
        parse_lengths("1\n-2\n")


def test_cli_runs_the_experiments_on_a_lengths_workload(tmp_path, capsys):
    e, c = edge_and_cloud()
    save_profile(e, tmp_path / "e.json")
    save_profile(c, tmp_path / "c.json")
    (tmp_path / "lengths.csv").write_text("\n".join(str(0.3 + 0.5 * k) for k in range(20)) + "\n")
    out = tmp_path / "out"
    rc = main(
        ["simulate", "--profiles", str(tmp_path / "e.json"), str(tmp_path / "c.json"),
         "--workload", str(tmp_path / "lengths.csv"), "--one-way-ms", "10,100,300", "--out", str(out)]
    )  # fmt: skip
    assert rc == 0
    res = json.loads((out / "results.json").read_text())
    (m,) = res["models"]
    assert m["workload"]["measured"] is False and [r["one_way_ms"] for r in m["fixed"]] == [10, 100, 300]
    for r in [*m["fixed"], m["variable"]]:
        assert r["planner"]["gap_to_oracle_pct"] >= 0 and r["oracle"]["gap_to_oracle_pct"] == 0
    assert (out / "table.md").read_text().startswith("# splitasr simulate")
    assert (out / "fig4-ds2.png").stat().st_size > 1000 and (out / "table1.png").is_file()
    assert "ds2: variable trace" in capsys.readouterr().out


def test_cli_bad_input_is_one_line(tmp_path, capsys):
    e, c = edge_and_cloud()
    save_profile(e, tmp_path / "e.json")
    save_profile(c, tmp_path / "c.json")
    assert main(["simulate", "--profiles", str(tmp_path / "e.json"), str(tmp_path / "c.json")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("splitasr: error: --profiles needs --workload") and err.count("\n") == 1
    assert main(["simulate", "--policies", "edge,psychic"]) == 2
    assert "unknown 'psychic'" in capsys.readouterr().err
    from splitasr.cli import POLICY_NAMES
    from splitasr.planner.simulate import POLICIES

    assert POLICY_NAMES == POLICIES  # the CLI's help lists them without importing numpy


def test_a_workload_with_arrival_times_runs_at_them_on_the_variable_trace():
    from splitasr.planner.experiments import ModelInputs, run_experiments

    e, c = edge_and_cloud()
    arrivals = [7.0 * k for k in range(25)]  # 0..168 s
    ew, cw = _synthetic(noise_scale=1.0, lengths=(1.0, 3.0, 6.0, 2.0, 9.0) * 5, arrivals=arrivals)
    res = run_experiments(ModelInputs(e, c, ew, cw), THREE_ROWS, one_way_ms=(50.0,), inputs=40)
    v = res["variable"]
    assert v["inputs"] == 25 and v["policies"]["edge"]["inputs"] == 25
    assert res["fixed"][0]["policies"]["edge"]["inputs"] == 40 and res["fixed_inputs"] == 40
    # rows at 0, 10, 20 s: inputs at 0 and 7 s in the first, 14 s in the second, the rest in the third
    assert [ph["inputs"] for ph in v["policies"]["oracle"]["phases"]] == [2, 1, 22]
    assert v["planner"]["gap_to_oracle_pct"] >= 0.0
