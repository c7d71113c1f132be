"""``splitasr bench load`` end to end on a tiny manifest: servers in their own processes,
two clients, every reply's text equal to the single-request text, three files written."""

from __future__ import annotations

import json

from splitasr.cli import main


def test_bench_load_writes_results_table_and_chart(speech_manifest, tmp_path):
    out = tmp_path / "load"
    args = ["bench", "load", "--model", "ds2", "--manifest", str(speech_manifest), "--point", "proj"]
    args += ["--codec", "q8+ans", "--clients", "2", "--requests", "4", "--max-batch", "1,4"]
    args += ["--max-wait-ms", "20", "--out", str(out), "--max-seconds", "60"]
    assert main(args) == 0
    for name in ("results.json", "table.md", "load.png"):
        assert (out / name).stat().st_size > 0, name
    got = json.loads((out / "results.json").read_text())
    assert [r["max_batch"] for r in got["rows"]] == [1, 4]
    for row in got["rows"]:
        assert row["completed"] == 4 and row["mismatches"] == 0 and row["errors"] == 0
        assert row["throughput_rps"] > 0 and row["p95_ms"] >= row["p50_ms"] > 0
    assert got["rows"][0]["mean_batch"] == 1.0 and got["beam"] == 32
    table = (out / "table.md").read_text()
    assert "bench load" in table and "loopback" in table and "| 4 |" in table
