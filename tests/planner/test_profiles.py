"""Profile JSON: round trip, strict refusal of bad files, fits, the slowdown factor."""

import json
import subprocess
import sys

import pytest

from splitasr.planner.profiles import (
    MAX_PROFILE_BYTES,
    Fit,
    ProfileError,
    Sample,
    fit_samples,
    load_profile,
    load_wer_table,
    save_profile,
)
from tests.planner.handmade import base, edge_and_cloud


def test_round_trip_gives_the_same_profile(tmp_path):
    edge, _ = edge_and_cloud()
    save_profile(edge, tmp_path / "e.json")
    assert load_profile(tmp_path / "e.json") == edge
    assert json.loads((tmp_path / "e.json").read_text())["version"] == 1


def test_slowdown_scales_times_not_bytes():
    slow = base().slowed(4.0)
    assert slow.machine.slowdown == 4.0
    assert slow.point("proj").head_ms.b == 8.0 and slow.text.predict(3.0) == 8.0
    assert slow.codec("proj", "q8+ans").payload_bytes == base().codec("proj", "q8+ans").payload_bytes
    with pytest.raises(ProfileError, match="positive"):
        base().slowed(0.0)


def test_fit_is_least_squares_with_scores_and_non_negative():
    f = fit_samples([Sample(1.0, 12.0), Sample(2.0, 22.0), Sample(4.0, 42.0)])
    assert (f.a, f.b, f.r2, f.mse) == pytest.approx((2.0, 10.0, 1.0, 0.0))
    f = fit_samples([Sample(1.0, 1.0), Sample(2.0, 4.0), Sample(3.0, 9.0)])  # free line: a < 0
    assert f.a == 0.0 and f.b == pytest.approx(36 / 14) and 0 < f.r2 < 1
    f = fit_samples([Sample(1.0, 5.0), Sample(2.0, 3.0)])  # free line: b < 0 -> flat at the mean
    assert (f.a, f.b, f.r2, f.mse) == (4.0, 0.0, 0.0, 1.0)
    assert fit_samples([Sample(3.0, 7.0)]) == Fit(7.0, 0.0, None, None, (Sample(3.0, 7.0),))


def _bad(d: dict, what: str) -> dict:
    if what == "unknown top field":
        d["colour"] = "red"
    elif what == "unknown nested field":
        d["full_ms"]["slope"] = 1.0
    elif what == "wrong type":
        d["full_ms"]["a"] = "fast"
    elif what == "missing field":
        del d["model"]
    elif what == "other version":
        d["version"] = 2
    elif what == "unknown role":
        d["role"] = "phone"
    elif what == "negative time":
        d["points"][1]["head_ms"]["a"] = -5.0
    elif what == "codec at an unlisted point":
        d["codecs"][0]["point"] = "gru1"
    elif what == "boolean as number":
        d["full_ms"]["b"] = True
    return d


@pytest.mark.parametrize(
    "what, message",
    [
        ("unknown top field", "unknown field 'colour' in Profile"),
        ("unknown nested field", "Profile.full_ms: unknown field 'slope' in Fit"),
        ("wrong type", "Fit.a: expected a finite number, got 'fast'"),
        ("missing field", "Profile needs field 'model'"),
        ("other version", "profile version 2"),
        ("unknown role", "role 'phone'"),
        ("negative time", "point proj head_ms: a + b * seconds must stay >= 0"),
        ("codec at an unlisted point", "needs head_ms of point 'gru1'"),
        ("boolean as number", "expected a finite number, got True"),
    ],
)
def test_bad_files_are_refused_with_one_clear_line(tmp_path, what, message):
    path = tmp_path / "p.json"
    path.write_text(json.dumps(_bad(base().to_dict(), what)))
    with pytest.raises(ProfileError) as err:
        load_profile(path)
    assert message in str(err.value) and str(path) in str(err.value) and "\n" not in str(err.value)


def test_non_json_nan_and_huge_files_are_refused(tmp_path):
    p = tmp_path / "p.json"
    p.write_text(json.dumps(base().to_dict()).replace('"a": 0.0', '"a": NaN', 1))
    with pytest.raises(ProfileError, match="NaN is not a number"):
        load_profile(p)
    p.write_text("{not json")
    with pytest.raises(ProfileError, match="not valid JSON"):
        load_profile(p)
    p.write_bytes(b" " * (MAX_PROFILE_BYTES + 1))
    with pytest.raises(ProfileError, match="more than the"):
        load_profile(p)
    with pytest.raises(ProfileError, match="cannot read"):
        load_profile(tmp_path / "missing.json")


def test_shipped_wer_tables_load_and_name_their_source():
    t = load_wer_table("ds2")
    assert t.dwer("proj", "deepcod+ans") == 2.05 and t.dwer("gru2", "f32+pack") == 0.0
    assert t.dwer("gru2", "q8+ans") is None and "bench tradeoff" in t.source
    assert load_wer_table("whisper-tiny.en").dwer("stem", "deepcod+ans") == 4.55
    with pytest.raises(ProfileError, match="no shipped WER table"):
        load_wer_table("gpt")


def test_plan_cli_explains_and_refuses_a_bad_profile_in_one_line(tmp_path):
    edge, cloud = edge_and_cloud()
    save_profile(edge, tmp_path / "e.json")
    save_profile(cloud, tmp_path / "c.json")
    args = ["--edge-profile", str(tmp_path / "e.json"), "--cloud-profile", str(tmp_path / "c.json")]
    args += ["--seconds", "2", "--rtt-ms", "50", "--up-kbps", "1000"]
    r = subprocess.run(
        [sys.executable, "-m", "splitasr.cli", "plan", *args, "--wer-budget", "1", "--explain"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr
    assert "chosen: split proj q8+ans, least predicted total (125.1 ms)" in r.stdout
    (tmp_path / "c.json").write_text('{"version": 1, "role": "cloud"}')
    r = subprocess.run(
        [sys.executable, "-m", "splitasr.cli", "plan", *args], capture_output=True, text=True, timeout=120
    )
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.strip() == f"splitasr: error: {tmp_path / 'c.json'}: Profile needs field 'model'"


def test_the_hand_written_cortex_a53_example_loads_and_plans():
    from pathlib import Path

    from splitasr.planner import NetworkEstimate, Planner

    a53 = load_profile(Path(__file__).resolve().parents[2] / "configs" / "profiles" / "cortex-a53-ds2.json")
    assert a53.role == "edge" and a53.model == "ds2" and "Cortex-A53" in a53.machine.description
    _, cloud = edge_and_cloud()
    planner = Planner(a53, cloud, load_wer_table("ds2"))
    assert [o.label for o in planner.options] == [
        "edge",
        "cloud audio pcm16+pack",
        "split proj q8+ans",
        "split proj deepcod+ans",
    ]
    # 0.3 s, 20 ms RTT: edge (10 + 48.6) + (5 + 12) = 75.6 ms against deepcod 9.8 head + 3.22 encode
    # + 0.62 upload + 20 RTT + 0.3 decode + 2.4 tail + 2 text = 38.3 ms
    assert planner.decide(0.3, NetworkEstimate(20.0, 1000.0)).option.label == "split proj deepcod+ans"
    # 300 ms RTT: deepcod 318.3 ms, edge still 75.6
    assert planner.decide(0.3, NetworkEstimate(300.0, 1000.0)).option.label == "edge"


def test_profile_cli_refuses_bad_lengths_in_one_line(tmp_path):
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "splitasr.cli",
            "profile",
            "--role",
            "edge",
            "--model",
            "ds2",
            "--out",
            str(tmp_path / "p.json"),
            "--lengths",
            "1,two",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert (
        r.returncode == 2
        and r.stderr.strip() == "splitasr: error: --lengths '1,two': expected comma-separated numbers"
    )
