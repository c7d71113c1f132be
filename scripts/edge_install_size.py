"""The edge install's size on disk: every distribution in a virtual environment, and the
package's own files, against the target of 150 MB (issue 14).

    python scripts/edge_install_size.py [--venv .venv-edge] [--out results/edge-install]

Run with any Python 3.11: the venv is read, not imported. Each distribution's files are the
ones its ``RECORD`` lists (the installed files, ``.pyc`` compiled by pip included), sized
as ``du`` does (allocated blocks; the apparent bytes as well). ``pip``, ``setuptools`` and
``wheel`` (what ``python -m venv`` puts in every venv, which a device image would not
carry) are reported and left out of the edge total. An editable install's package files
live in the source tree, so ``splitasr`` is counted from its folder (``__pycache__`` left
out, as a wheel carries it), with the part the edge never reads (the whole models' weights
and the word LM, used by ``--runtime torch`` only) shown apart. Writes ``results.json``
and ``table.md``; prints the table. Sizes in MB = 10**6 bytes.
"""

from __future__ import annotations

import argparse
import csv
import json
import platform
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

TARGET_MB = 150.0
NOT_ON_A_DEVICE = {"pip", "setuptools", "wheel"}  # the venv's own installers
INSTALLER_FOLDERS = {"pip", "setuptools", "wheel", "pkg_resources", "_distutils_hack"}
# Package files only the whole local model reads (--runtime torch, mode edge, the server).
WHOLE_MODEL_ONLY = (
    "assets/ds2-small.safetensors",
    "assets/whisper-tiny.en-dyn.safetensors",
    "assets/lm-words.arpa",
)
ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Size:
    """One distribution (or the package's own files): files, bytes on disk, apparent bytes."""

    name: str
    version: str
    files: int
    disk_bytes: int
    bytes: int


def _sizes(paths: list[Path]) -> tuple[int, int, int]:
    """``(files, disk bytes, apparent bytes)`` of the regular files among ``paths``."""
    n = disk = size = 0
    seen: set[tuple[int, int]] = set()
    for p in paths:
        try:
            st = p.lstat()
        except FileNotFoundError:
            continue
        if not p.is_file() or p.is_symlink() or (st.st_dev, st.st_ino) in seen:
            continue
        seen.add((st.st_dev, st.st_ino))
        n, disk, size = n + 1, disk + st.st_blocks * 512, size + st.st_size
    return n, disk, size


def site_packages(venv: Path) -> Path:
    found = sorted(venv.glob("lib/python3*/site-packages"))
    if not found:
        raise SystemExit(f"{venv}: no lib/python3*/site-packages (make edge-venv builds .venv-edge)")
    return found[0]


def distributions(site: Path) -> list[Size]:
    """Every ``*.dist-info`` in ``site`` by its ``RECORD``: the files it installed."""
    out = []
    for info in sorted(site.glob("*.dist-info")):
        meta = {}
        for line in (info / "METADATA").read_text(errors="replace").splitlines():
            if not line.strip():
                break
            key, _, value = line.partition(": ")
            meta.setdefault(key, value)
        record = info / "RECORD"
        rows = list(csv.reader(record.read_text().splitlines())) if record.is_file() else []
        paths = [(site / row[0]).resolve() for row in rows if row]
        paths += [p for p in info.iterdir()]  # RECORD itself and anything pip added after
        out.append(Size(meta.get("Name", info.name), meta.get("Version", "?"), *_sizes(paths)))
    return out


def package_files(package: Path) -> tuple[Size, Size]:
    """The package's own files as a wheel carries them (no ``__pycache__``), and the part of
    them that only the whole local model reads."""
    files = [p for p in package.rglob("*") if "__pycache__" not in p.parts]
    whole = [package / rel for rel in WHOLE_MODEL_ONLY]
    own = Size("splitasr (package files)", "", *_sizes(files))
    return own, Size("  of which whole-model only", "", *_sizes(whole))


def measure(venv: Path) -> dict:
    site = site_packages(venv)
    dists = distributions(site)
    own, whole = package_files(ROOT / "splitasr")
    everything = _sizes([p for p in venv.rglob("*")])
    installers = [d for d in dists if d.name.lower() in NOT_ON_A_DEVICE]
    device = [d for d in dists if d.name.lower() not in NOT_ON_A_DEVICE]
    deps_mb = sum(d.disk_bytes for d in device) / 1e6
    pyc = [p for p in site.rglob("*.pyc") if p.parts[len(site.parts)] not in INSTALLER_FOLDERS]
    edge_mb = deps_mb + own.disk_bytes / 1e6
    return {
        "venv": str(venv),
        "python": platform.python_version(),
        "machine": platform.machine(),
        "target_mb": TARGET_MB,
        "venv_dir_mb": round(everything[1] / 1e6, 1),
        "installers_mb": round(sum(d.disk_bytes for d in installers) / 1e6, 1),
        "dependencies_mb": round(deps_mb, 1),
        "dependencies_pyc_mb": round(_sizes(pyc)[1] / 1e6, 1),
        "package_mb": round(own.disk_bytes / 1e6, 1),
        "package_whole_model_only_mb": round(whole.disk_bytes / 1e6, 1),
        "edge_install_mb": round(edge_mb, 1),
        "edge_install_without_whole_model_files_mb": round(edge_mb - whole.disk_bytes / 1e6, 1),
        "has_torch": any(d.name.lower() == "torch" for d in dists),
        "distributions": [asdict(d) for d in sorted(dists, key=lambda d: -d.disk_bytes)],
        "package": asdict(own),
        "package_whole_model_only": asdict(whole),
    }


def _row(d: dict, mark: str = "") -> str:
    mb, apparent = d["disk_bytes"] / 1e6, d["bytes"] / 1e6
    return f"| {d['name']}{mark} | {d['version']} | {d['files']} | {mb:.1f} | {apparent:.1f} |"


def table(r: dict) -> str:
    lines = [
        f"Edge install ({r['venv']}, Python {r['python']}, {r['machine']}); MB = 10^6 bytes on disk",
        "",
        "| distribution | version | files | MB on disk | MB apparent |",
        "| --- | --- | ---: | ---: | ---: |",
    ]
    for d in r["distributions"]:
        mark = " (not on a device)" if d["name"].lower() in NOT_ON_A_DEVICE else ""
        lines.append(_row(d, mark))
    lines += [_row(r["package"]), _row(r["package_whole_model_only"])]
    met = "met" if r["edge_install_mb"] < r["target_mb"] else "NOT met"
    lines += [
        "",
        f"- dependencies (site-packages, without pip/setuptools/wheel): {r['dependencies_mb']} MB",
        f"  ({r['dependencies_pyc_mb']} MB of it .pyc compiled at install: `pip install --no-compile`"
        " leaves them out)",
        f"- pip/setuptools/wheel (left out): {r['installers_mb']} MB;"
        f" the whole venv folder: {r['venv_dir_mb']} MB",
        f"- the package's own files: {r['package_mb']} MB ({r['package_whole_model_only_mb']} MB of them only"
        " for the whole local model)",
        f"- **edge install: {r['edge_install_mb']} MB** ({r['edge_install_without_whole_model_files_mb']} MB"
        f" without the whole-model files); target < {r['target_mb']:g} MB: {met}",
        f"- torch installed: {r['has_torch']}",
    ]
    return "\n".join(lines) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--venv", default=str(ROOT / ".venv-edge"), help="the edge venv (make edge-venv)")
    ap.add_argument("--out", default=str(ROOT / "results" / "edge-install"), help="folder for the results")
    args = ap.parse_args()
    r = measure(Path(args.venv))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(r, indent=2) + "\n")
    (out / "table.md").write_text(table(r))
    sys.stdout.write(table(r))
    return 0


if __name__ == "__main__":
    sys.exit(main())
