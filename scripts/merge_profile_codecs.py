"""Copy some (point, codec) rows of a newer profile or workload into a shipped one.

Why: re-measuring every row on this shared VM moves the simulator's results by more than
a new codec changes them (docs/planner.md, "Shipped profiles and workloads"). A codec
added later is measured by the same script and its rows alone are added, with a note in
``source``; nothing already there is replaced unless ``--replace`` says so (a retrained
codec under the same name: its old rows and the note that added them go).

    python scripts/merge_profile_codecs.py NEW.json SHIPPED.json --codecs lrd@0+ans,lrd@1+ans [--replace]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from splitasr.errors import ConfigError
from splitasr.planner.profiles import ProfileError, load_profile
from splitasr.planner.workload import load_workload


def _rows(rows: list[dict], codecs: set[str], where: str) -> list[dict]:
    """The rows of ``codecs``; each (point, codec) at most once."""
    out = [r for r in rows if r["codec"] in codecs]
    pairs = [(r["point"], r["codec"]) for r in out]
    if len(set(pairs)) != len(pairs):
        raise ConfigError(f"{where}: the new file lists a (point, codec) row twice")
    return out


def merge(new: dict, shipped: dict, codecs: set[str], replace: bool = False) -> dict:
    """``shipped`` with ``new``'s rows of ``codecs`` appended (a profile's ``codecs``, or
    each input's of a workload, matched by input id); with ``replace``, ``shipped``'s rows
    of ``codecs`` are dropped first."""
    for key in ("model", "role", "machine", "lengths"):  # lengths: a profile's sweep
        if new.get(key) != shipped.get(key):
            raise ConfigError(f"{key} differs: {new.get(key)!r} vs {shipped.get(key)!r}")
    out = json.loads(json.dumps(shipped))
    if replace:
        out = _drop(out, codecs)
    pairs = []
    if "inputs" in shipped:  # a per-input workload
        by_id = {i["id"]: i for i in new["inputs"]}
        for item in out["inputs"]:
            if item["id"] not in by_id:
                raise ConfigError(f"input {item['id']} not in the new workload")
            have = {(r["point"], r["codec"]) for r in item["codecs"]}
            add = _rows(by_id[item["id"]]["codecs"], codecs, f"input {item['id']}")
            if not add:
                raise ConfigError(f"input {item['id']}: the new workload has no rows of {sorted(codecs)}")
            if have & {(r["point"], r["codec"]) for r in add}:
                raise ConfigError(f"input {item['id']} already has some of {sorted(codecs)}")
            item["codecs"] += add
            pairs = [(r["point"], r["codec"]) for r in add]
    else:
        have = {(r["point"], r["codec"]) for r in out["codecs"]}
        add = _rows(new["codecs"], codecs, "profile")
        if have & {(r["point"], r["codec"]) for r in add}:
            raise ConfigError(f"already has some of {sorted(codecs)}")
        out["codecs"] += add
        pairs = [(r["point"], r["codec"]) for r in add]
    if not pairs:
        raise ConfigError(f"the new file has no rows of {sorted(codecs)}")
    measured_by = new["source"].split("; rows ")[0]  # the command that measured them
    out["source"] += f"; rows {', '.join(f'{p} {c}' for p, c in pairs)} added from: {measured_by}"
    return out


def _drop(d: dict, codecs: set[str]) -> dict:
    """``d`` without its rows of ``codecs`` and without the ``; rows ... added from: ...``
    notes that named only such rows."""
    for rows in [d["codecs"]] if "inputs" not in d else [i["codecs"] for i in d["inputs"]]:
        rows[:] = [r for r in rows if r["codec"] not in codecs]
    first, *notes = d["source"].split("; rows ")
    kept = [n for n in notes if not all(pc.split(" ")[-1] in codecs for pc in _note_pairs(n))]
    d["source"] = "; rows ".join([first, *kept])
    return d


def _note_pairs(note: str) -> list[str]:
    """The ``point codec`` pairs a ``rows ... added from: ...`` note names."""
    return note.split(" added from: ")[0].split(", ")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("new")
    ap.add_argument("shipped")
    ap.add_argument("--codecs", required=True, help="comma-separated codec names to copy")
    ap.add_argument("--replace", action="store_true", help="drop SHIPPED's rows of --codecs first")
    args = ap.parse_args(argv)
    try:
        new = json.loads(Path(args.new).read_text())
        shipped_path = Path(args.shipped)
        merged = merge(new, json.loads(shipped_path.read_text()), set(args.codecs.split(",")), args.replace)
        indent = 0 if "inputs" in merged else 1  # as save_workload and save_profile write them
        tmp = shipped_path.with_suffix(".merging.json")
        try:
            tmp.write_text(json.dumps(merged, indent=indent) + "\n")
            (load_workload if "inputs" in merged else load_profile)(tmp)  # valid before it replaces
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        tmp.replace(shipped_path)
    except KeyError as e:
        print(f"error: a file lacks the field {e}", file=sys.stderr)
        return 1
    except (ConfigError, ProfileError, OSError, ValueError, TypeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"{args.shipped}: {'replaced' if args.replace else 'added'} {args.codecs}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
