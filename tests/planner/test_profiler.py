"""The profiler on a tiny sweep of the real DS2 pipeline (two lengths, one repeat)."""

import pytest

from splitasr.bench.profile import FSDD, run_profile, speech_of_length
from splitasr.planner import Planner, load_profile
from splitasr.planner.estimator import NetworkEstimate

pytestmark = pytest.mark.skipif(not FSDD.is_dir(), reason="FSDD recordings (../shared/data) are not here")


def test_speech_of_length_is_real_audio_cut_to_the_sample():
    w = speech_of_length(2.5)
    assert w.shape == (40000,) and float(w.abs().max()) > 0.05


def test_tiny_sweep_writes_a_profile_with_the_right_shape(tmp_path):
    out = tmp_path / "ds2-edge.json"
    run = run_profile(
        "edge",
        "ds2",
        out,
        lengths=(1.0, 4.0),
        repeats=1,
        gap_s=0.01,
        points=["audio", "features", "proj"],
        codecs=["f32+pack", "q8+ans", "deepcod+ans"],
        audio_codecs=["pcm16+pack"],
        source="tests/planner/test_profiler.py",
    )
    p = load_profile(out)
    assert p == run.profile and p.role == "edge" and p.model == "ds2" and p.lengths == (1.0, 4.0)
    assert [x.point for x in p.points] == ["audio", "features", "proj"]
    assert [(c.point, c.codec) for c in p.codecs] == [
        ("audio", "pcm16+pack"),
        ("features", "f32+pack"),
        ("features", "q8+ans"),
        ("proj", "f32+pack"),
        ("proj", "q8+ans"),
        ("proj", "deepcod+ans"),
    ]
    assert any(s.startswith("features deepcod+ans") for s in run.skipped)  # no trained state there
    # times are measured, so only their structure is checked here (a loaded machine can make a
    # 1-ms head look flat in length); that they grow is the benchmark's business
    for point in ("features", "proj"):
        head = p.point(point).head_ms
        assert head.r2 is not None and [s.seconds for s in head.samples] == [1.0, 4.0]
        assert all(s.n >= 1 and s.mean > 0 for s in head.samples)
    assert p.full_ms.r2 is not None and p.text.kind == "ctc"
    # bytes per second of audio: 16-bit PCM 32000 exactly; float32 features 80 x 100 x 4
    assert p.codec("audio", "pcm16+pack").payload_bytes.b == pytest.approx(32000.0, abs=1.0)  # +varints
    assert p.codec("features", "f32+pack").payload_bytes.b == pytest.approx(32000.0, rel=0.02)
    assert p.codec("proj", "deepcod+ans").payload_bytes.b < p.codec("proj", "q8+ans").payload_bytes.b
    # and the planner can run on it
    d = Planner(p.slowed(5.0), p).decide(4.0, NetworkEstimate(50.0, 1000.0))
    assert d.predicted_ms > 0


def test_per_input_workload_measures_each_utterance(tmp_path):
    import json

    from splitasr.bench.profile import run_per_input
    from splitasr.planner.workload import load_workload

    files = sorted(FSDD.glob("*.wav"))[:2]
    manifest = tmp_path / "m.jsonl"
    manifest.write_text(
        "".join(
            json.dumps({"audio": str(f), "text": "", "duration": 0.0, "speaker": "", "source": ""}) + "\n"
            for f in files
        )
    )
    out = tmp_path / "w.json"
    w, skipped = run_per_input(
        "edge",
        "ds2",
        manifest,
        out,
        slowdown=2.0,
        points=["audio", "proj"],
        codecs=["q8+ans"],
        audio_codecs=["pcm16+pack", "bnf+ans"],
        source="tests/planner/test_profiler.py",
        repeats=2,
        gap_s=0.01,
    )
    assert load_workload(out) == w and w.measured and w.machine.slowdown == 2.0 and not skipped
    assert [x.id for x in w.inputs] == [str(f) for f in files]
    for x in w.inputs:
        assert x.full_ms > 0 and x.text_ms > 0 and x.head("proj") > 0 and x.tail("proj") > 0
        pcm = x.codec("audio", "pcm16+pack")
        assert pcm.bytes == pytest.approx(x.seconds * 32000, abs=64)  # 16-bit PCM + its header
        assert x.codec("audio", "bnf+ans").resume == "proj"  # bnf decodes to proj's input
        assert x.codec("proj", "q8+ans").bytes < pcm.bytes


def test_per_input_refuses_a_bad_gap(tmp_path):
    from splitasr.bench.profile import run_per_input, run_profile
    from splitasr.errors import ConfigError

    with pytest.raises(ConfigError, match="--gap-s"):
        run_per_input("edge", "ds2", tmp_path / "none.jsonl", gap_s=-1.0)
    with pytest.raises(ConfigError, match="--gap-s"):
        run_profile("edge", "ds2", gap_s=61.0)
