"""``splitasr serve`` and ``splitasr edge transcribe``: the server as a program (graceful
stop on SIGTERM), the edge command in split, cloud and edge modes, its fallback, and one
line with exit 2 for bad input."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from splitasr.audio import load_audio
from splitasr.cli import main
from splitasr.pipeline import Cloud, Edge
from splitasr.transport.client import CloudClient

ROOT = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_edge_transcribe_split_gives_the_in_process_transcript_and_each_stage(
    model, server, speech_dir, capsys
):
    wav = speech_dir / "hello.wav"
    sent = Edge(model).encode(torch.from_numpy(load_audio(wav)), "proj", "q8+ans")
    want = Cloud(model).transcribe(sent.payload, "proj", "q8+ans").text
    cloud = f"127.0.0.1:{server.port}"
    args = ["edge", "transcribe", str(wav), "--cloud", cloud, "--model", "ds2"]
    assert main([*args, "--split", "proj", "--codec", "q8+ans", "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["text"] == want and r["fallback"] is None and r["bytes_up"] == len(sent.payload)
    assert {"head", "encode", "network", "queue", "decode", "tail", "text", "total"} <= set(r["timings"])
    assert main([*args, "--mode", "cloud", "--codec", "flac+pack"]) == 0
    text, breakdown = capsys.readouterr().out.splitlines()
    assert text and "flac+pack" in breakdown and "network=" in breakdown


def test_edge_transcribe_falls_back_to_the_edge_and_says_so(speech_dir, capsys):
    wav = str(speech_dir / "digits.wav")
    dead = f"127.0.0.1:{_free_port()}"
    assert main(["edge", "transcribe", wav, "--cloud", dead, "--model", "ds2", "--mode", "edge"]) == 0
    local = capsys.readouterr().out.splitlines()[0]
    args = [
        "edge",
        "transcribe",
        wav,
        "--cloud",
        dead,
        "--model",
        "ds2",
        "--split",
        "proj",
        "--codec",
        "q8+ans",
    ]
    assert main([*args, "--timeout", "2", "--json"]) == 0
    out = capsys.readouterr()
    r = json.loads(out.out)
    assert r["text"] == local and "UNAVAILABLE" in r["fallback"]
    assert "finished on the edge" in out.err


BAD = [
    (["--split", "proj"], "needs --split POINT and --codec"),
    (["--mode", "edge", "--split", "proj"], "no --split"),
    (["--split", "gru9", "--codec", "q8+ans"], "--split gru9"),
    (["--split", "proj", "--codec", "q8+ans", "--timeout", "0"], "--timeout"),
    (["--split", "proj", "--codec", "nope+ans"], "nope+ans"),
]


@pytest.mark.parametrize("extra,line", BAD)
def test_bad_edge_input_is_one_line_and_exit_2(server, speech_dir, capsys, extra, line):
    cloud = f"127.0.0.1:{server.port}"
    wav = str(speech_dir / "digits.wav")
    assert main(["edge", "transcribe", wav, "--cloud", cloud, "--model", "ds2", *extra]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and line in err


def test_a_missing_file_is_one_line_and_the_others_still_run(server, speech_dir, tmp_path, capsys):
    cloud = f"127.0.0.1:{server.port}"
    files = [str(tmp_path / "nope.wav"), str(speech_dir / "digits.wav")]
    args = ["edge", "transcribe", *files, "--cloud", cloud, "--model", "ds2", "--split", "proj"]
    assert main([*args, "--codec", "q8+ans", "--json"]) == 2
    out = capsys.readouterr()
    assert len(out.out.splitlines()) == 1 and out.err.count("\n") == 1 and "nope.wav" in out.err


def test_serve_without_a_known_model_is_one_line_and_exit_2(capsys):
    assert main(["serve", "--models", "ds3", "--port", "0"]) == 2
    assert "ds3" in capsys.readouterr().err


def test_serve_as_a_program_answers_and_stops_cleanly_on_sigterm(model, speech_dir):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "splitasr.cli", "serve", "--port", "0", "--models", "ds2", "--token", "t"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT)
    try:
        line = proc.stdout.readline()  # "splitasr serve: listening on HOST:PORT"
        assert "listening on" in line, proc.stderr.read() if proc.poll() is not None else line
        sent = Edge(model).encode(torch.from_numpy(load_audio(speech_dir / "digits.wav")), "proj", "q8+ans")
        with CloudClient(line.split()[-1], token="t", timeout_s=20) as c:
            assert c.transcribe(sent.payload, "ds2", "proj", "q8+ans").text
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
        log = [json.loads(x) for x in proc.stderr.read().splitlines() if x.startswith("{")]
        assert [x["status"] for x in log if x.get("event") == "transcribe"] == ["OK"]
        assert log[-1]["event"] == "stopping"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
