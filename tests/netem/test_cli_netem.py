"""``splitasr netem`` as a program: it forwards through the profile's delay, says where it
listens, stops on SIGTERM with exit 0; bad arguments are one line and exit 2."""

from __future__ import annotations

import os
import signal
import socket
import socketserver
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from splitasr.cli import main

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    "args,message",
    [
        (["--profile", "5g"], "unknown link profile '5g'; choose from loopback, wifi, lte, 3g"),
        (["--profile", "lte", "--loss", "1.5"], "loss 1.5 must be in [0, 1)"),
        (["--trace", "/nonexistent.csv"], "cannot read trace"),
        (["--trace", "TRACE", "--one-way-ms", "5"], "only --jitter-ms and --loss apply"),
        (["--profile", "lte", "--listen", "nohost"], "--listen 'nohost': expected HOST:PORT"),
    ],
)
def test_bad_arguments_are_one_line_and_exit_2(capsys, args, message):
    args = [a.replace("TRACE", str(ROOT / "splitasr/netem/traces/paper001_100_200_300.csv")) for a in args]
    argv = ["netem", "--target", "127.0.0.1:9", *args]
    if "--listen" not in args:
        argv += ["--listen", "127.0.0.1:0"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err, err


class _Echo(socketserver.BaseRequestHandler):
    def handle(self):
        while data := self.request.recv(65536):
            self.request.sendall(data)


def test_netem_program_forwards_with_the_profile_delay_and_stops_on_sigterm():
    with socketserver.ThreadingTCPServer(("127.0.0.1", 0), _Echo) as echo:
        threading.Thread(target=echo.serve_forever, daemon=True).start()
        target = f"127.0.0.1:{echo.server_address[1]}"
        cmd = [sys.executable, "-c", "import sys; from splitasr.cli import main; sys.exit(main())"]
        cmd += ["netem", "--listen", "127.0.0.1:0", "--target", target, "--profile", "lte"]
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        try:
            line = proc.stdout.readline()
            assert line.startswith("splitasr netem: listening on 127.0.0.1:") and "profile lte" in line
            port = int(line.split()[4].rsplit(":", 1)[1])
            with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
                sock.sendall(b"warm")
                assert sock.recv(4) == b"warm"
                t0 = time.perf_counter()
                sock.sendall(b"ping")
                assert sock.recv(4) == b"ping"
                assert time.perf_counter() - t0 == pytest.approx(0.050, rel=0.1)
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=10) == 0
            assert "8 B up, 8 B down" in proc.stderr.read()
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            echo.shutdown()
