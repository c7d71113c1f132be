"""``splitasr bench load`` end to end on a tiny manifest: servers in their own processes or
a running ``--target``, closed and open loop, every reply's text equal to the single-request
text, nothing lost, three files written; bad ``--servers`` specs refused with one line."""

from __future__ import annotations

import json

import pytest

from splitasr.bench.load import parse_servers
from splitasr.bench.procs import spawn, splitasr_command, stop
from splitasr.cli import main
from splitasr.errors import ConfigError

COMMON = ["--model", "ds2", "--point", "proj", "--codec", "q8+ans", "--max-seconds", "60"]


def test_bench_load_starts_each_server_and_writes_results_table_and_chart(speech_manifest, tmp_path):
    out = tmp_path / "load"
    args = ["bench", "load", "--manifest", str(speech_manifest), *COMMON, "--clients", "1,2"]
    args += ["--requests", "4", "--servers", "embedded:1,embedded:4", "--max-wait-ms", "20"]
    args += ["--out", str(out)]
    assert main(args) == 0
    for name in ("results.json", "table.md", "load.png"):
        assert (out / name).stat().st_size > 0, name
    got = json.loads((out / "results.json").read_text())
    assert [(r["server"], r["clients"]) for r in got["rows"]] == [
        ("embedded, max batch 1", 1),
        ("embedded, max batch 1", 2),
        ("embedded, max batch 4", 1),
        ("embedded, max batch 4", 2),
    ]
    for row in got["rows"]:
        assert row["sent"] == row["completed"] == 4, row
        assert row["mismatches"] == row["errors"] == row["lost"] == 0
        assert row["p99_ms"] >= row["p95_ms"] >= row["p50_ms"] > 0
        assert len(row["queue_depth_series"]) == 4
    assert got["rows"][0]["mean_batch"] == 1.0 and got["beam"] == 32
    table = (out / "table.md").read_text()
    assert "bench load" in table and "2 clients" in table and "p99 ms" in table


def test_bench_load_drives_a_running_target_open_loop(speech_manifest, tmp_path):
    args = ["serve", "--models", "ds2", "--host", "127.0.0.1", "--port", "0", "--max-batch", "4"]
    args += ["--token", "s3cret"]
    proc, port = spawn(splitasr_command(*args), tmp_path / "server.log", timeout_s=120)
    try:
        out = tmp_path / "open"
        cmd = ["bench", "load", "--manifest", str(speech_manifest), *COMMON, "--target", f"127.0.0.1:{port}"]
        cmd += ["--token", "s3cret", "--rate", "20", "--requests", "6", "--label", "mine", "--out", str(out)]
        assert main(cmd) == 0
        got = json.loads((out / "results.json").read_text())
        (row,) = got["rows"]
        assert row["server"] == "mine" and row["load"] == "rate" and row["rate_rps"] == 20.0
        assert row["sent"] == row["completed"] == 6 and row["mismatches"] == row["lost"] == row["shed"] == 0

        wrong = ["bench", "load", "--manifest", str(speech_manifest), *COMMON]
        wrong += [
            "--target",
            f"127.0.0.1:{port}",
            "--token",
            "wrong",
            "--clients",
            "2",
            "--requests",
            "2",
            "--out",
            str(tmp_path / "w"),
        ]
        assert main(wrong) != 0  # the warm-up's UNAUTHENTICATED ends the run with one line
    finally:
        stop(proc)


@pytest.mark.parametrize("spec", ["gpu:2", "ray:0", "embedded:x", ","])
def test_parse_servers_refuses_bad_specs(spec):
    with pytest.raises(ConfigError):
        parse_servers(spec, max_batch=8, max_wait_ms=5, workers=2, threads=1)


def test_parse_servers_maps_ray_replicas_and_embedded_batch():
    ray, emb = parse_servers("ray:2,embedded:8", max_batch=16, max_wait_ms=5, workers=2, threads=1)
    assert ray.args[:4] == ("--backend", "ray", "--replicas", "2") and "16" in ray.args
    assert emb.name == "embedded, max batch 8" and emb.args[:2] == ("--max-batch", "8")
