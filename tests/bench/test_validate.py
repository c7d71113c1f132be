"""The live-vs-simulator validation (splitasr.bench.validate) on a 6-s two-phase trace:
the plumbing, not the timing (the machine is shared): both runs see the same inputs at the
same arrivals, phase by phase, and decide alike where the choice is clear-cut."""

from __future__ import annotations

import json
import math

from splitasr.bench.validate import Validation, restricted_planner, table_markdown, validate
from splitasr.netem import Trace, TraceRow
from splitasr.planner.profiles import CodecProfile, Fit, Machine, PointProfile, Profile, TextProfile
from splitasr.planner.workload import LengthRow, NoiseModel, synthesise


def _profile(role: str, full_b: float) -> Profile:
    """As tests/transport/test_auto.py: edge-only or the PCM audio to the cloud."""
    return Profile(
        role=role,
        model="ds2",
        machine=Machine(f"hand-made {role}", threads=1),
        full_ms=Fit(0.0, full_b),
        text=TextProfile("ctc", search_ms=Fit(2.0, 0.0)),
        points=(PointProfile("audio", Fit(0.0, 0.0), Fit(0.0, full_b)),),
        codecs=(CodecProfile("audio", "pcm16+pack", Fit(0.0), Fit(0.0), Fit(0.0, 32000.0)),),
        lengths=(1.0, 8.0),
        source="tests/bench/test_validate.py",
    )


def test_live_and_simulated_runs_line_up_phase_by_phase(model, speech_dir, tmp_path):
    import soundfile

    edge, cloud = _profile("edge", 150.0), _profile("cloud", 10.0)
    rows = [LengthRow(soundfile.info(str(p)).duration, id=p.name) for p in sorted(speech_dir.glob("*.wav"))]
    ew = synthesise(edge, rows, NoiseModel(scale=0.0))
    cw = synthesise(cloud, rows, NoiseModel(scale=0.0))
    # fast link then a slow one: the cloud (~70 ms) against the edge (~230 ms), then the edge
    trace = Trace("two-phase", (TraceRow(0.0, 20, 10_000, 50_000), TraceRow(3.0, 300, 1_000, 2_000)))
    v = Validation(
        planner=restricted_planner(edge, cloud, None, ew, cw),
        edge_workload=ew,
        cloud_workload=cw,
        trace=trace,
        corpus=speech_dir,
        gap_s=1.2,
        lead_s=0.5,
        probe_age_s=60.0,
        beam=1,
    )
    result = validate(v, model, tmp_path / "out")
    phases = result["phases"]
    assert [p["one_way_ms"] for p in phases] == [20, 300]
    n = result["settings"]["inputs"]
    assert n == 4  # (6 s - 0.5 s lead) / 1.2 s
    assert sum(p["live_inputs"] for p in phases) == n and sum(p["sim_inputs"] for p in phases) == n
    assert [p["live_inputs"] for p in phases] == [p["sim_inputs"] for p in phases] == [3, 1]
    first = phases[0]
    assert first["live_choices"] == first["sim_choices"] == {"cloud audio pcm16+pack": first["live_inputs"]}
    assert first["live_probes"] == 0  # the client probed on connecting: no input waited for it
    assert all(math.isfinite(p["diff_pct"]) for p in phases if p["sim_ms"])
    saved = json.loads((tmp_path / "out" / "results.json").read_text())
    assert saved["phases"] == phases and len(saved["live_steps"]) == n
    assert "| 0 | 20 |" in table_markdown(result) and (tmp_path / "out" / "table.md").is_file()
