"""The benchmarks' child processes: a splitasr command started, waited for until it says
where it listens, and stopped (``bench load``, ``bench e2e``, the planner's validation)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

LISTENING = re.compile(r"listening on ([\w.\-]+):(\d+)")


def splitasr_command(*args: str) -> list[str]:
    """``splitasr ARGS`` run by this interpreter (no console script needed)."""
    return [sys.executable, "-c", "import sys; from splitasr.cli import main; sys.exit(main())", *args]


def spawn(cmd: list[str], log_path: Path, timeout_s: float = 180) -> tuple[subprocess.Popen, int]:
    """Start a splitasr command that prints ``listening on HOST:PORT``: (process, port).
    Its stderr goes to ``log_path``."""
    log = open(log_path, "w")  # noqa: SIM115 - closed with the process
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=log, text=True, env=os.environ.copy())
    proc._splitasr_log = log  # type: ignore[attr-defined]
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        m = LISTENING.search(line)
        if m:
            return proc, int(m.group(2))
    stop(proc)
    raise RuntimeError(f"{' '.join(cmd[3:6])} did not start; see {log_path}")


def stop(proc: subprocess.Popen, timeout_s: float = 30) -> str:
    """SIGTERM, wait, then kill; returns what the process still had to say on stdout."""
    rest = ""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            rest, _ = proc.communicate(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            rest, _ = proc.communicate()
    proc._splitasr_log.close()  # type: ignore[attr-defined]
    return rest or ""
