import json

from splitasr.bench.rtf import run_rtf_bench


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
    payload = run_rtf_bench(str(manifest), str(out))
    assert {r["setting"] for r in payload["rows"]} == {"cloud (all threads)", "edge (1 thread)"}
    assert all(r["rtf"] > 0 for r in payload["rows"])
    assert json.loads((out / "results.json").read_text())["benchmark"] == "rtf"
    assert (out / "table.md").read_text().count("|") > 10
    assert (out / "rtf.png").read_bytes()[:4] == b"\x89PNG"
