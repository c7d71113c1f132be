"""scripts/merge_profile_codecs.py: a later-measured codec's rows join a shipped profile or
workload, and nothing already there is replaced."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from splitasr.planner.profiles import load_profile
from splitasr.planner.workload import load_workload

DATA = Path("splitasr/planner/data")
LRD = ["lrd@0+ans", "lrd@1+ans", "lrd@2+ans"]


def _merge(new: Path, shipped: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [
            sys.executable,
            "scripts/merge_profile_codecs.py",
            str(new),
            str(shipped),
            "--codecs",
            ",".join(LRD),
            *extra,
        ],
        capture_output=True,
        text=True,
    )


def _without_lrd(d: dict) -> dict:
    d = json.loads(json.dumps(d))
    d["source"] = d["source"].split("; rows ")[0]
    for rows in [d["codecs"]] if "codecs" in d else [i["codecs"] for i in d["inputs"]]:
        rows[:] = [r for r in rows if r["codec"] not in LRD]
    return d


@pytest.mark.parametrize("kind", ["profiles", "workloads"])
def test_rows_are_added_once_and_the_file_still_loads(tmp_path, kind):
    full = json.loads((DATA / kind / "ds2-edge.json").read_text())
    shipped = tmp_path / "shipped.json"
    shipped.write_text(json.dumps(_without_lrd(full)))
    r = _merge(DATA / kind / "ds2-edge.json", shipped)
    assert r.returncode == 0, r.stderr
    merged = json.loads(shipped.read_text())
    if kind == "profiles":
        p = load_profile(shipped)
        assert [c.codec for c in p.codecs if c.codec in LRD] == LRD
        assert merged["codecs"] == full["codecs"]
    else:
        w = load_workload(shipped)
        assert len(w.inputs) == 50 and [i["codecs"] for i in merged["inputs"]] == [
            i["codecs"] for i in full["inputs"]
        ]
    assert "rows proj lrd@0+ans" in merged["source"]
    again = _merge(DATA / kind / "ds2-edge.json", shipped)
    assert (
        again.returncode == 1 and again.stderr.strip().startswith("error: ") and "already has" in again.stderr
    )
    assert "Traceback" not in again.stderr


@pytest.mark.parametrize("kind", ["profiles", "workloads"])
def test_replace_swaps_a_retrained_codecs_rows_and_its_note(tmp_path, kind):
    """``--replace``: the shipped rows of the codecs give way to the new file's (here with
    every byte count doubled), in place of the old ones, and the note that added the old
    rows goes with them; the other rows are untouched."""
    full = json.loads((DATA / kind / "ds2-edge.json").read_text())
    shipped = tmp_path / "shipped.json"
    shipped.write_text(json.dumps(full))
    new = json.loads(json.dumps(full))
    new["source"] = "remeasured"
    for rows in [new["codecs"]] if kind == "profiles" else [i["codecs"] for i in new["inputs"]]:
        for r in rows:
            if r["codec"] in LRD:
                if kind == "profiles":
                    r["payload_bytes"]["a"] *= 2
                else:
                    r["bytes"] *= 2
    (tmp_path / "new.json").write_text(json.dumps(new))
    r = _merge(tmp_path / "new.json", shipped, "--replace")
    assert r.returncode == 0, r.stderr
    merged = json.loads(shipped.read_text())
    assert (
        merged["source"]
        == full["source"].split("; rows ")[0]
        + "; rows proj lrd@0+ans, proj lrd@1+ans, proj lrd@2+ans added from: remeasured"
    )
    rows = merged["codecs"] if kind == "profiles" else merged["inputs"][0]["codecs"]
    before = full["codecs"] if kind == "profiles" else full["inputs"][0]["codecs"]
    want = new["codecs"] if kind == "profiles" else new["inputs"][0]["codecs"]
    assert [x for x in rows if x["codec"] not in LRD] == [x for x in before if x["codec"] not in LRD]
    assert [x for x in rows if x["codec"] in LRD] == [x for x in want if x["codec"] in LRD]
    (load_profile if kind == "profiles" else load_workload)(shipped)


def test_a_merge_that_would_not_load_leaves_the_file_as_it_was(tmp_path):
    shipped = tmp_path / "shipped.json"
    before = json.dumps(_without_lrd(json.loads((DATA / "profiles" / "ds2-edge.json").read_text())))
    shipped.write_text(before)
    new = json.loads((DATA / "profiles" / "ds2-edge.json").read_text())
    new["source"] = "x" * 990  # the merged source would pass the loader's 1000 characters
    (tmp_path / "new.json").write_text(json.dumps(new))
    r = _merge(tmp_path / "new.json", shipped)
    assert r.returncode == 1 and "at most 1000 characters" in r.stderr
    assert shipped.read_text() == before and sorted(p.name for p in tmp_path.iterdir()) == [
        "new.json",
        "shipped.json",
    ]


def test_another_model_or_role_is_refused_in_one_line(tmp_path):
    shipped = tmp_path / "shipped.json"
    shipped.write_text((DATA / "profiles" / "ds2-edge.json").read_text())
    r = _merge(DATA / "profiles" / "ds2-cloud.json", shipped)
    assert r.returncode == 1 and r.stderr.count("\n") == 1 and "role differs" in r.stderr


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ("duplicate", "input .*: the new file lists a \\(point, codec\\) row twice"),
        ("drop", "input .*: the new workload has no rows of"),
    ],
)
def test_a_workload_input_with_a_duplicate_or_missing_row_is_refused(tmp_path, change, message):
    import re

    full = json.loads((DATA / "workloads" / "ds2-edge.json").read_text())
    shipped = tmp_path / "shipped.json"
    before = json.dumps(_without_lrd(full))
    shipped.write_text(before)
    new = json.loads(json.dumps(full))
    rows = new["inputs"][7]["codecs"]
    if change == "duplicate":
        rows.append(next(r for r in rows if r["codec"] == "lrd@1+ans"))
    else:
        rows[:] = [r for r in rows if r["codec"] not in LRD]
    (tmp_path / "new.json").write_text(json.dumps(new))
    r = _merge(tmp_path / "new.json", shipped)
    assert r.returncode == 1 and r.stderr.count("\n") == 1 and re.search(message, r.stderr), r.stderr
    assert shipped.read_text() == before
