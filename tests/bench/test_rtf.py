import json

import pytest

from splitasr.bench.rtf import run_rtf_bench
from splitasr.model.registry import load_model


def test_rtf_bench_writes_json_table_and_plot(tmp_path, speech_dir):
    manifest = tmp_path / "m.jsonl"
    manifest.write_text(
        json.dumps(
            {
                "audio": str(speech_dir / "hello.wav"),
                "text": "x",
                "duration": 1.0,
                "speaker": "s",
                "source": "tts",
            }
        )
        + "\n"
    )
    out = tmp_path / "out"
    payload = run_rtf_bench(str(manifest), str(out), model_path="ds2")
    assert {r["setting"] for r in payload["rows"]} == {"cloud (all threads)", "edge (1 thread)"}
    assert all(r["rtf"] > 0 for r in payload["rows"])
    assert json.loads((out / "results.json").read_text())["benchmark"] == "rtf"
    assert (out / "table.md").read_text().count("|") > 10
    assert (out / "rtf.png").read_bytes()[:4] == b"\x89PNG"
    heads = payload["heads_edge_1_thread"]
    assert [h["point"] for h in heads] == load_model("ds2").split_points[1:]
    assert all(h["head_s"] > 0 for h in heads) and heads[0]["ratio_to_full"] < heads[-1]["ratio_to_full"]


def test_rtf_bench_length_filter_refuses_an_empty_selection(tmp_path, speech_dir):
    manifest = tmp_path / "m.jsonl"
    row = {"audio": str(speech_dir / "hello.wav"), "text": "x", "duration": 1.0}
    manifest.write_text(json.dumps({**row, "speaker": "s", "source": "tts"}) + "\n")
    with pytest.raises(ValueError, match="no utterance between 2"):
        run_rtf_bench(str(manifest), str(tmp_path / "out"), min_seconds=2, max_seconds=6)
