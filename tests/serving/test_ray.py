"""``splitasr serve --backend ray`` in its own process: a local Ray instance, a Serve
deployment of two DS2 tail replicas, and the gRPC ingress on a loopback port.

100 requests from 8 concurrent clients each get the text ``Cloud.transcribe`` gives for
the same payload in this process, none lost, duplicated or crossed (request ids); bad
payloads sent among them get INVALID_ARGUMENT while the others succeed; a stream gets the
unary transcript; SIGTERM stops the server and leaves none of the Ray processes it
started (daemons, agents, controller, replicas) behind. A bad ``--address`` is one line
and a non-zero exit; ``--autoscale`` becomes Serve's autoscaling settings. Ray Serve is
not optional here: ``make test`` installs it, and a missing install fails with the
command that installs it.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import grpc
import pytest
import torch

from splitasr.audio import SAMPLE_RATE, load_audio
from splitasr.bench.procs import spawn, splitasr_command, stop
from splitasr.pipeline import Cloud, Edge
from splitasr.serving import RAY_EXTRA
from splitasr.transport import splitasr_pb2 as pb
from splitasr.transport.client import CloudClient, CloudError

SAMPLES = Path(__file__).resolve().parents[2] / "splitasr" / "assets" / "samples"
POINT, CODEC = "proj", "deepcod+ans"
CLIENTS, REQUESTS, REPLICAS = 8, 100, 2


def _require_ray() -> None:
    if importlib.util.find_spec("ray") is None or importlib.util.find_spec("ray.serve") is None:
        pytest.fail("Ray Serve is not installed: pip install 'splitasr[cloud,ray]' (make test installs it)")


def _processes() -> dict[int, tuple[int, str]]:
    """pid -> (parent pid, command line) of every process on this machine."""
    out = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        out[int(entry.name)] = (ppid, cmd[:160])
    return out


def _descendants(root: int) -> dict[int, str]:
    """pid -> command line of every process under ``root`` (Ray's daemons, workers, replicas)."""
    procs, found, todo = _processes(), {}, [root]
    while todo:
        parent = todo.pop()
        for pid, (ppid, cmd) in procs.items():
            if ppid == parent and pid not in found:
                found[pid] = cmd
                todo.append(pid)
    return found


@pytest.fixture(scope="module")
def jobs(model) -> list[tuple[bytes, str]]:
    """Six payloads of 1-2 s of speech (three recordings, two crops each) and the text
    the in-process Cloud gives each: ``[(payload, text)]``."""
    edge, cloud = Edge(model), Cloud(model)
    out = []
    for path in sorted(SAMPLES.glob("*.flac")):
        wave = torch.from_numpy(load_audio(path))
        for seconds in (1.2, 2.0):
            payload = edge.encode(wave[: int(seconds * SAMPLE_RATE)], POINT, CODEC).payload
            out.append((payload, cloud.transcribe(payload, POINT, CODEC).text))
    assert len(out) == 6 and all(text for _, text in out)
    return out


@pytest.fixture(scope="module")
def ray_server(tmp_path_factory):
    """The server process and its port; stopped (and checked) by the last test."""
    _require_ray()
    log = tmp_path_factory.mktemp("ray") / "serve.log"
    cmd = splitasr_command(
        "serve", "--backend", "ray", "--replicas", str(REPLICAS), "--threads", "1", "--port", "0",
        "--models", "ds2", "--max-batch", "8", "--max-wait-ms", "5", "--grace", "5",
    )  # fmt: skip
    t0 = time.monotonic()
    proc, port = spawn(cmd, log, timeout_s=120)
    started_s = time.monotonic() - t0
    yield proc, port, log, started_s
    if proc.poll() is None:
        stop(proc)


def _client_work(port: int, work: list[tuple[int, int | None]], jobs, replies: dict, errors: list) -> None:
    """Send ``work`` (request id, job index, or None for a bad payload) one after another."""
    with CloudClient(f"127.0.0.1:{port}", timeout_s=60) as client:
        for rid, job in work:
            payload = jobs[job][0] if job is not None else jobs[0][0][: len(jobs[0][0]) // 2]  # truncated
            try:
                reply = client.transcribe(payload, "ds2", POINT, CODEC, request_id=rid)
            except CloudError as exc:
                errors.append((rid, job, exc.code))
                continue
            replies.setdefault(rid, []).append((job, reply))


def test_ray_serve_answers_100_requests_from_8_clients(ray_server, jobs):
    proc, port, log, started_s = ray_server
    assert started_s < 90, f"the deployment took {started_s:.0f} s to come up"
    bad = {1000 + i for i in range(3)}  # three truncated payloads among the good ones
    work: list[list[tuple[int, int | None]]] = [[] for _ in range(CLIENTS)]
    for rid in range(REQUESTS):
        work[rid % CLIENTS].append((rid + 1, rid % len(jobs)))
    for i, rid in enumerate(sorted(bad)):
        work[i].insert(len(work[i]) // 2, (rid, None))
    replies: dict[int, list] = {}
    errors: list = []
    threads = [threading.Thread(target=_client_work, args=(port, w, jobs, replies, errors)) for w in work]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not any(t.is_alive() for t in threads), "clients still waiting after 120 s"

    assert sorted(replies) == list(range(1, REQUESTS + 1))  # none lost
    assert all(len(r) == 1 for r in replies.values())  # none twice
    for rid, [(job, reply)] in replies.items():
        assert reply.request_id == rid  # none crossed
        assert reply.text == jobs[job][1], f"request {rid}: {reply.text!r} != {jobs[job][1]!r}"
        t = reply.timings
        assert 1 <= t.batch_size <= 8 and t.total_ms >= t.tail_ms > 0 and t.queue_ms >= 0
    # with 8 clients on 2 replicas, @serve.batch runs some tails together
    assert max(r[0][1].timings.batch_size for r in replies.values()) > 1
    assert sorted(rid for rid, _, _ in errors) == sorted(bad)
    assert {code for _, _, code in errors} == {grpc.StatusCode.INVALID_ARGUMENT}


def test_ray_serve_answers_a_stream_and_refuses_unknown_models(ray_server, model, jobs):
    _, port, *_ = ray_server
    wave = torch.from_numpy(load_audio(SAMPLES / "digits-lucas-2.flac"))
    stream = Edge(model).stream(POINT, CODEC)
    payloads = [p for i in range(0, wave.shape[0], 3200) for p in stream.push(wave[i : i + 3200])]
    payloads += stream.finish()
    chunks = [pb.AudioChunk(seq=i, payload=p, last=i == len(payloads) - 1) for i, p in enumerate(payloads)]
    chunks[0].model, chunks[0].point, chunks[0].codec, chunks[0].request_id = "ds2", POINT, CODEC, 77
    want = Cloud(model).transcribe(Edge(model).encode(wave, POINT, CODEC).payload, POINT, CODEC).text
    with CloudClient(f"127.0.0.1:{port}", timeout_s=60) as client:
        reply = client.transcribe_stream(chunks)
        assert reply.text == want and reply.request_id == 77 and len(chunks) >= 2
        with pytest.raises(CloudError) as err:
            client.transcribe(jobs[0][0], "no-such-model", POINT, CODEC)
        assert err.value.code == grpc.StatusCode.NOT_FOUND
        load = client.transcribe(jobs[0][0], "ds2", POINT, CODEC).load
        assert load.queue_depth == 0 and load.open_streams == 0


def test_sigterm_stops_the_server_and_every_ray_process(ray_server):
    proc, _, log, _ = ray_server
    ours = _descendants(proc.pid)  # the local Ray instance: daemons, agents, controller, replicas
    assert sum("ServeReplica" in cmd for cmd in ours.values()) == REPLICAS, ours
    assert any("gcs_server" in cmd for cmd in ours.values()) and any("raylet" in cmd for cmd in ours.values())
    stop(proc, timeout_s=60)
    assert proc.returncode == 0, log.read_text()[-2000:]
    deadline = time.monotonic() + 20
    while True:
        alive = _processes()
        left = {pid: cmd for pid, cmd in ours.items() if pid in alive and alive[pid][1] == cmd}
        if not left or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert not left, f"Ray processes left after shutdown: {left}"


def test_a_bad_ray_address_is_one_line_and_a_non_zero_exit():
    _require_ray()
    cmd = splitasr_command("serve", "--backend", "ray", "--address", "127.0.0.1:1", "--port", "0")
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=60, env=env)
    assert done.returncode == 2
    lines = [x for x in done.stderr.splitlines() if x.startswith("splitasr: error:")]
    assert len(lines) == 1 and "no Ray cluster reachable" in lines[0], done.stderr
    assert "Traceback" not in done.stderr


def test_backend_flags_need_the_ray_backend(capsys):
    from splitasr.cli import main

    assert main(["serve", "--replicas", "2", "--port", "0"]) == 2
    assert "--replicas: only with --backend ray" in capsys.readouterr().err


def test_autoscale_maps_to_serve_autoscaling_config(capsys):
    _require_ray()
    from splitasr.cli import main
    from splitasr.serving.ray import RaySettings, TailReplica

    opts = RaySettings(
        models=("ds2",), replicas=2, threads=2, max_batch=4, autoscale=(1, 6)
    ).deployment_options()
    assert "num_replicas" not in opts and opts["ray_actor_options"] == {"num_cpus": 2}
    want = {"min_replicas": 1, "max_replicas": 6, "initial_replicas": 2, "target_ongoing_requests": 4.0}
    assert opts["autoscaling_config"] == want and opts["max_ongoing_requests"] == 8
    config = TailReplica.options(**opts)._deployment_config  # Serve validates the options here
    assert config.autoscaling_config.max_replicas == 6 and config.max_ongoing_requests == 8
    fixed = RaySettings(models=("ds2",), replicas=3).deployment_options()
    assert fixed["num_replicas"] == 3 and "autoscaling_config" not in fixed
    assert main(["serve", "--backend", "ray", "--autoscale", "4:1", "--port", "0"]) == 2
    assert "--autoscale 4:1: need 0 <= MIN <= MAX" in capsys.readouterr().err


def test_without_ray_the_backend_says_how_to_install_it(monkeypatch, capsys):
    from splitasr.cli import main

    monkeypatch.setitem(sys.modules, "ray", None)  # an import of ray now fails as if it were absent
    monkeypatch.setitem(sys.modules, "ray.serve", None)
    assert main(["serve", "--backend", "ray", "--port", "0"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["splitasr: error: --backend ray needs Ray Serve (ray.serve is missing): " + RAY_EXTRA]


def test_a_replica_loads_whispers_decoder_in_the_precision_asked_for():
    """`serve --backend ray --decoder-precision int8`: each replica's Whisper models decode
    in int8; DS2, which has no text decoder, loads as always (the replica class, no Ray)."""
    from splitasr.serving.ray import TailReplica

    replica = TailReplica.func_or_class(["whisper-tiny.en-dyn", "ds2"], 120.0, 1, 4, 5.0, "int8")
    assert replica.clouds["whisper-tiny.en-dyn"].model.text_decoder.precision == "int8"
    assert not hasattr(replica.clouds["ds2"].model, "text_decoder")
