"""Writing benchmark outputs: results.json, table.md and a plot, with the machine named."""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path


def machine_description() -> dict:
    """The facts a reader needs to judge a timing."""
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
    }


def markdown_table(rows: list[dict], columns: list[tuple[str, str, str]]) -> str:
    """``columns``: (key, header, format spec); a ``None`` value (a column that does not
    apply to the row) shows as ``-``."""
    head = "| " + " | ".join(h for _, h, _ in columns) + " |"
    sep = "| " + " | ".join("---" for _ in columns) + " |"
    body = [
        "| " + " | ".join("-" if r[k] is None else format(r[k], f) for k, _, f in columns) + " |"
        for r in rows
    ]
    return "\n".join([head, sep, *body])


def write_results(out: Path, payload: dict, table: str, command: str) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(payload, indent=2))
    m = payload.get("machine", {})
    note = (
        f"Command: `{command}`  \nMachine: {m.get('cpu')}, {m.get('cores')} cores, torch {m.get('torch')}\n\n"
    )
    (out / "table.md").write_text(note + table + "\n")
