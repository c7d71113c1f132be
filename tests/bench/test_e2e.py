"""``splitasr bench e2e``: its accounting checked by hand, and one small real run with the
server, a link emulator and the device as separate processes."""

from __future__ import annotations

import json

import pytest

from splitasr.bench.e2e import Setup, checks_3g, paper000_table, summarise
from splitasr.cli import main


def _utt(total, text="a b", ref="a b", **timings):
    return {
        "seconds": 2.0,
        "ref": ref,
        "text": text,
        "fallback": None,
        "bytes_up": 100,
        "request_bytes": 150,
        "reply_bytes": 40,
        "timings": {"total": total, **timings},
    }


def test_summarise_gives_percentiles_stage_means_and_wer():
    rows = [_utt(100, head=10, network=50), _utt(200, head=30, network=70, text="a c"), _utt(300, edge=5)]
    got = summarise(rows)
    assert (got["n"], got["mean_ms"], got["p50_ms"]) == (3, 200.0, 200.0)
    assert got["p95_ms"] == pytest.approx(290.0)
    assert got["head_ms"] == pytest.approx(40 / 3, abs=0.05) and got["network_ms"] == 40.0
    assert got["compute_ms"] == pytest.approx(got["edge_ms"] + got["head_ms"], abs=0.05)
    assert got["wer"] == pytest.approx(100 / 6, abs=0.01)  # one substitution in six words
    assert (got["payload_bytes"], got["request_bytes"], got["fallbacks"]) == (100.0, 150.0, 0)


def test_paper000_totals_are_measured_where_the_run_got_that_far_else_extrapolated():
    run = {"kind": "paper000", "profile": "3g", "mode": "cloud", "point": "audio", "codec": "pcm16+pack"}
    run |= {"done": 4, "elapsed": [1.0, 2.5, 3.0, 4.0], "stage_sums_ms": {"network": 2000.0}}
    (row,) = paper000_table([run], (2, 4, 10))
    assert (row["t2"], row["t4"], row["t10"]) == (2.5, 4.0, 10.0)  # 10 x the measured 1 s per utterance
    assert row["extrapolated"] == "10" and row["measured"] == 4 and row["setup"] == "cloud pcm16"
    assert row["network_s_per_100"] == 50.0


def test_3g_checks_ask_each_split_for_half_of_pcm_and_to_beat_every_opus_rate():
    by = {
        "split stem deepcod+ans": {"mean_ms": 400.0, "wer": 5.0},
        "split features dct50+ans": {"mean_ms": 250.0, "wer": 2.0},
        "cloud pcm16": {"mean_ms": 1000.0, "wer": 2.0},
        "cloud opus8": {"mean_ms": 300.0, "wer": 9.0},
        "cloud opus12": {"mean_ms": 450.0, "wer": 4.0},
    }
    got = checks_3g({"whisper-tiny.en|4|3g": by, "whisper-tiny.en|4|lte": by})  # lte: not a 3g check
    stem, features = sorted(got, key=lambda r: r["split"], reverse=True)
    assert stem["split"] == "split stem deepcod+ans" and stem["split_over_pcm"] == 0.4 and stem["half_of_pcm"]
    # slower than opus8 and less accurate than opus12: beats neither way
    assert not stem["faster_than_every_opus"] and not stem["wer_le_every_opus"] and not stem["beats_opus"]
    assert features["beats_opus"] and features["split_over_pcm"] == 0.25 and features["slowdown"] == 4.0
    assert (features["fastest_opus"], features["opus_ms"], features["opus_wer"]) == (
        "cloud opus8",
        300.0,
        9.0,
    )


def test_setup_labels():
    assert Setup("edge").label == "edge only"
    assert Setup("cloud", "audio", "opus12+pack").label == "cloud opus12"
    assert Setup("split", "proj", "deepcod+ans").label == "split proj deepcod+ans"


def test_bench_e2e_runs_server_emulator_and_device_as_processes(speech_manifest, tmp_path):
    out = tmp_path / "e2e"
    args = ["bench", "e2e", "--models", "ds2", "--profiles", "lte", "--slowdowns", "2", "--limit", "2"]
    args += ["--manifest", f"ds2={speech_manifest}", "--paper000-counts", "2,3", "--paper000-slowdowns", "2"]
    args += ["--paper000-max-seconds", "60", "--out", str(out), "--stream-n", "1", "--stream-seconds", "2"]
    assert main(args) == 0
    got = json.loads((out / "results.json").read_text())
    by = got["summary"]["ds2|2|lte"]
    cloud = {f"cloud {c}" for c in ("pcm16", "flac", "opus8", "opus12", "opus16")}
    assert set(by) == {"edge only", "split proj deepcod+ans", "split features dct50+huffman"} | cloud
    assert all(s["n"] == 2 and s["fallbacks"] == 0 for s in by.values())
    pcm, split = by["cloud pcm16"], by["split proj deepcod+ans"]
    assert pcm["payload_bytes"] > 20 * split["payload_bytes"]  # raw audio against 2 kbit/s
    assert pcm["network_ms"] >= 50  # lte: 25 ms each way, at least one round trip
    assert split["compute_ms"] > 0 and by["edge only"]["network_ms"] == 0
    (p0,) = got["paper000"]["ds2|2"][:1]
    assert p0["measured"] == 3 and p0["extrapolated"] == "-" and p0["t3"] >= p0["t2"] > 0
    streamed = got["streaming"]["ds2|2"]
    assert set(streamed) == {"lte|split proj deepcod+ans", "lte|cloud pcm16"}
    for s in streamed.values():  # 2 s at 1x in 200-ms chunks: the reply comes after the speech
        assert s["n"] == 1 and s["fallbacks"] == 0 and s["seconds"] == 2.0 and s["chunks"] >= 5
        assert s["after_speech_p50_ms"] >= s["server_p50_ms"] and s["total_p50_ms"] >= 2000
    assert got["wire"] == {}  # the only link also carried streams, whose chunks the device does not count
    assert got["link_stats"]["lte"]["bytes_up"] > sum(s["payload_bytes"] * 2 for s in by.values())
    for name in ("table.md", "e2e-ds2-x2.png", "paper000-ds2-x2.png"):
        assert (out / name).stat().st_size > 0, name
    assert "slowdown x2" in (out / "table.md").read_text()
