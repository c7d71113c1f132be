"""``splitasr bench e2e``: end-to-end latency of the product, edge to cloud through an
emulated link, with the server, the link emulator and the device as separate processes.

What runs:

* one ``splitasr serve`` process with every model benchmarked (loopback, an ephemeral port);
* one ``splitasr netem`` process per link profile (``wifi``, ``lte``, ``3g``), each a TCP
  proxy to the server imposing that profile's delay and bandwidth;
* one device process per (model, slowdown): the model at one PyTorch thread, an
  :class:`~splitasr.transport.client.EdgeClient` emulating a device ``slowdown`` times slower
  than this machine. For each profile it sends the manifest's utterances, one after another,
  in every configuration: edge-only, cloud-only (the audio as PCM, FLAC, Opus), and split at
  a point with a codec. Each utterance's timings (device compute, encode, network, the
  server's queue, decode, tail and text decoding), message sizes and transcript are written
  as one JSON line.

Then **paper 000's experiment**: a device transcribes N utterances one after another, joint
(split) against cloud-only PCM, and the total time after 100, 500, 1000 and 1500 utterances
is reported per profile. A run stops at ``paper000_max_seconds``; totals beyond what it
measured are extrapolated from the measured mean per utterance and marked so.

Outputs in ``out``: results.json, table.md (one table per model x slowdown x profile, the
paper-000 table, the issue's 3g checks) and PNG bar charts (latency broken into stages).
The emulator reports the TCP bytes it carried, so the protocol's bytes on the wire per
request (gRPC's HTTP/2 framing and headers included) come out of the same run.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from splitasr.bench.procs import spawn, splitasr_command, stop
from splitasr.bench.report import machine_description, markdown_table, write_results

PROFILES = ("wifi", "lte", "3g")
SLOWDOWNS = (1.0, 4.0)
PAPER000_COUNTS = (100, 500, 1000, 1500)
MANIFESTS = {  # what each model is measured on (data/corpus: `make corpus`)
    "ds2": "data/corpus/test_sentences_seen_voices.jsonl",
    "whisper-tiny.en": "data/corpus/test_digits_heldout_speaker.jsonl",
    "whisper-tiny.en-dyn": "data/corpus/test_digits_heldout_speaker.jsonl",
}
LOCAL = "none"  # the "profile" of edge-only rows: no link involved
STAGES = ("edge", "head", "encode", "network", "queue", "decode", "tail", "text")


@dataclass(frozen=True)
class Setup:
    """One way to run an utterance: ``mode`` edge|cloud|split, with ``point`` and ``codec``."""

    mode: str
    point: str | None = None
    codec: str | None = None

    @property
    def label(self) -> str:
        if self.mode == "edge":
            return "edge only"
        if self.mode == "cloud":
            return f"cloud {self.codec.split('+')[0]}"
        return f"split {self.point} {self.codec}"


def default_setups(model: str) -> list[Setup]:
    """Edge-only, cloud-only (PCM, FLAC, Opus at 8/12/16 kbit/s) and the split x codec
    settings ``bench tradeoff`` found best for the model (docs/tradeoff.md)."""
    cloud = [Setup("cloud", "audio", f"{c}+pack") for c in ("pcm16", "flac", "opus8", "opus12", "opus16")]
    if model == "ds2":
        split = [Setup("split", "proj", "deepcod+ans"), Setup("split", "features", "dct50+huffman")]
    else:
        split = [Setup("split", "stem", "deepcod+ans"), Setup("split", "features", "dct50+ans")]
    return [Setup("edge"), *cloud, *split]


def stream_setups(model: str) -> list[Setup]:
    """Streamed utterances: split at the model's deepest streamable point with a codec
    ``bench tradeoff`` keeps, and the audio itself as PCM (cloud-only streaming)."""
    split = (
        Setup("split", "proj", "deepcod+ans") if model == "ds2" else Setup("split", "features", "dct50+ans")
    )
    return [split, Setup("cloud", "audio", "pcm16+pack")]


def paper000_setups(model: str) -> tuple[Setup, Setup]:
    """(joint, cloud-only) of paper 000's experiment: the model's learned codec at its
    shipped point against the audio as 16-bit PCM."""
    point = "proj" if model == "ds2" else "stem"
    return Setup("split", point, "deepcod+ans"), Setup("cloud", "audio", "pcm16+pack")


# --------------------------------------------------------------------------- the device


def device_main(spec_path: str) -> int:
    """The device process: ``python -c 'from splitasr.bench.e2e import device_main; ...' SPEC``.

    ``SPEC`` (JSON): model, manifest, limit, warmup, slowdown, timeout_s, setups, targets
    ({profile: "host:port"}), paper000 ({counts, max_seconds} or null), out (a JSONL path).
    """
    import torch

    from splitasr.audio import load_audio
    from splitasr.manifest import read_manifest
    from splitasr.model.registry import load_model
    from splitasr.transport.client import CloudClient, EdgeClient

    spec = json.loads(Path(spec_path).read_text())
    torch.set_num_threads(1)  # the device: one core
    model = load_model(spec["model"])
    root = Path(spec["manifest"]).parent
    utts = read_manifest(spec["manifest"])
    waves = [torch.from_numpy(load_audio(u.resolve(root))) for u in utts]
    texts = [u.text for u in utts]
    decoder = model.make_decoder()
    out = open(spec["out"], "w")  # noqa: SIM115
    setups = [Setup(**s) for s in spec["setups"]]

    link = {"calls": 0, "request_bytes": 0, "reply_bytes": 0}  # of the current profile

    def run(client: EdgeClient, setup: Setup, i: int) -> dict:
        wave = waves[i % len(waves)]
        r = client.transcribe(wave, setup.point, setup.codec, mode=setup.mode, timeout_s=spec["timeout_s"])
        if r.request_bytes:
            link["calls"] += 1
            link["request_bytes"] += r.request_bytes
            link["reply_bytes"] += r.reply_bytes
        return {
            "utt": i % len(waves),
            "seconds": round(len(wave) / model.sample_rate, 4),
            "ref": texts[i % len(waves)],
            "text": r.text,
            "fallback": r.fallback,
            "bytes_up": r.bytes_up,
            "request_bytes": r.request_bytes,
            "reply_bytes": r.reply_bytes,
            "timings": r.timings,
        }

    def measure(client: EdgeClient, setup: Setup, profile: str) -> None:
        for i in range(spec["warmup"]):  # codec state, first-call costs, the connection
            run(client, setup, i)
        t0 = time.perf_counter()
        for i in range(spec["limit"]):
            row = {"kind": "utterance", "profile": profile, **asdict(setup), **run(client, setup, i)}
            out.write(json.dumps(row) + "\n")
        out.flush()
        print(
            f"  {spec['model']} x{spec['slowdown']:g} {profile:5} {setup.label:32} "
            f"{spec['limit']} in {time.perf_counter() - t0:6.1f} s",
            file=sys.stderr,
            flush=True,
        )

    long_waves = []  # utterances of exactly stream.seconds: consecutive ones joined, then cut
    if spec.get("stream"):
        n_samples = round(spec["stream"]["seconds"] * model.sample_rate)
        i = 0
        while len(long_waves) < spec["stream"]["n"] and i < 10 * len(waves):
            parts, got = [], 0
            while got < n_samples:
                parts.append(waves[i % len(waves)])
                got += parts[-1].shape[0]
                i += 1
            long_waves.append(torch.cat(parts)[:n_samples])

    try:
        # edge-only does not touch the link: measured once, shown under every profile
        local = EdgeClient(model, None, decoder=decoder, model_name=spec["model"], slowdown=spec["slowdown"])
        for setup in (s for s in setups if s.mode == "edge"):
            measure(local, setup, LOCAL)
        for profile, target in spec["targets"].items():
            link.update(calls=0, request_bytes=0, reply_bytes=0)
            with CloudClient(target, timeout_s=spec["timeout_s"]) as cloud:
                client = EdgeClient(
                    model, cloud, decoder=decoder, model_name=spec["model"], slowdown=spec["slowdown"]
                )
                for setup in (s for s in setups if s.mode != "edge"):
                    measure(client, setup, profile)
                st = spec.get("stream")
                if st and profile in st["profiles"]:
                    for setup in map(lambda s: Setup(**s), st["setups"]):
                        _streamed(client, setup, profile, st, long_waves, out)
                p0 = spec.get("paper000")
                if p0:
                    for setup in map(lambda s: Setup(**s), p0["setups"]):
                        _paper000(client, setup, run, profile, p0, out)
            out.write(json.dumps({"kind": "link", "profile": profile, **link}) + "\n")
    finally:
        out.close()
    return 0


def _streamed(client, setup: Setup, profile: str, st: dict, waves: list, out) -> None:
    """Each utterance streamed at 1x (as a microphone would give it) in ``chunk_ms`` chunks;
    the latency after the end of speech is what a user waits."""
    point = setup.point
    client.transcribe_stream(waves[0][:16000], point, setup.codec, chunk_ms=st["chunk_ms"])  # warm
    for i, wave in enumerate(waves):
        r = client.transcribe_stream(wave, point, setup.codec, chunk_ms=st["chunk_ms"], realtime=True)
        row = {
            "kind": "stream",
            "profile": profile,
            **asdict(setup),
            "utt": i,
            "seconds": wave.shape[0] / 16000,
        }
        row.update(text=r.text, fallback=r.fallback, bytes_up=r.bytes_up, timings=r.timings)
        out.write(json.dumps(row) + "\n")
    out.flush()
    print(
        f"  stream {profile:5} {setup.label:32} {len(waves)} x {st['seconds']:g} s",
        file=sys.stderr,
        flush=True,
    )


def _paper000(client, setup: Setup, run, profile: str, p0: dict, out) -> None:
    """N utterances one after another; the elapsed time after each, until N or the cap."""
    n_max, cap = max(p0["counts"]), p0["max_seconds"]
    run(client, setup, 0)  # warm
    elapsed, t0, done = [], time.perf_counter(), 0
    sums = dict.fromkeys(STAGES, 0.0)
    bytes_up = 0
    while done < n_max and time.perf_counter() - t0 < cap:
        r = run(client, setup, done)
        done += 1
        elapsed.append(round(time.perf_counter() - t0, 4))
        bytes_up += r["request_bytes"]
        for k in STAGES:
            sums[k] += r["timings"].get(k, 0.0)
    row = {"kind": "paper000", "profile": profile, **asdict(setup), "done": done, "elapsed": elapsed}
    row.update(stage_sums_ms=sums, request_bytes=bytes_up)
    out.write(json.dumps(row) + "\n")
    out.flush()
    print(
        f"  paper 000 {profile:5} {setup.label:32} {done} in {elapsed[-1]:.1f} s", file=sys.stderr, flush=True
    )


# --------------------------------------------------------------------------- summaries


def summarise(rows: list[dict]) -> dict:
    """Mean/p50/p95 total, the mean of each stage, bytes and WER of one setup's utterances."""
    from splitasr.wer import error_rates

    total = np.array([r["timings"]["total"] for r in rows])
    out = {
        "n": len(rows),
        "audio_s": round(float(np.mean([r["seconds"] for r in rows])), 3),
        "mean_ms": round(float(total.mean()), 1),
        "p50_ms": round(float(np.percentile(total, 50)), 1),
        "p95_ms": round(float(np.percentile(total, 95)), 1),
        "payload_bytes": round(float(np.mean([r["bytes_up"] for r in rows])), 1),
        "request_bytes": round(float(np.mean([r["request_bytes"] for r in rows])), 1),
        "reply_bytes": round(float(np.mean([r["reply_bytes"] for r in rows])), 1),
        "fallbacks": sum(1 for r in rows if r["fallback"]),
        "wer": round(100 * error_rates([r["ref"] for r in rows], [r["text"] for r in rows])["wer"], 2),
    }
    for k in STAGES:
        out[f"{k}_ms"] = round(float(np.mean([r["timings"].get(k, 0.0) for r in rows])), 1)
    out["compute_ms"] = round(out["edge_ms"] + out["head_ms"], 1)  # the device's model time
    return out


def summarise_stream(rows: list[dict]) -> dict:
    """Median and p95 latency after the end of speech, and its part beyond the server's
    compute (the network, the protocol and the device's last chunk)."""
    after = np.array([r["timings"]["after_speech"] for r in rows])
    server = np.array([r["timings"]["server"] for r in rows])
    beyond = after - server
    return {
        "n": len(rows),
        "seconds": round(float(np.mean([r["seconds"] for r in rows])), 2),
        "after_speech_p50_ms": round(float(np.median(after)), 1),
        "after_speech_p95_ms": round(float(np.percentile(after, 95)), 1),
        "server_p50_ms": round(float(np.median(server)), 1),
        "beyond_server_p50_ms": round(float(np.median(beyond)), 1),
        "edge_finish_p50_ms": round(float(np.median([r["timings"]["edge_finish"] for r in rows])), 1),
        "network_p50_ms": round(float(np.median([r["timings"]["network"] for r in rows])), 1),
        "total_p50_ms": round(float(np.median([r["timings"]["total"] for r in rows])), 1),
        "chunks": round(float(np.mean([r["timings"]["chunks"] for r in rows])), 1),
        "bytes_up": round(float(np.mean([r["bytes_up"] for r in rows])), 1),
        "fallbacks": sum(1 for r in rows if r["fallback"]),
    }


def paper000_table(p0_rows: list[dict], counts: tuple[int, ...]) -> list[dict]:
    """Total seconds after each count, measured where the run got that far, else
    extrapolated from the measured mean per utterance (``extrapolated`` names the counts)."""
    table = []
    for r in p0_rows:
        el, done = r["elapsed"], r["done"]
        per = el[-1] / done if done else float("nan")
        row = {
            "profile": r["profile"],
            "setup": Setup(r["mode"], r["point"], r["codec"]).label,
            "measured": done,
        }
        extra = []
        for n in counts:
            if n <= done:
                row[f"t{n}"] = round(el[n - 1], 2)
            else:
                row[f"t{n}"] = round(per * n, 1)
                extra.append(n)
        row["extrapolated"] = ",".join(map(str, extra)) or "-"
        row["network_s_per_100"] = round(r["stage_sums_ms"]["network"] / done / 10, 3) if done else 0.0
        table.append(row)
    return table


def checks_3g(summary: dict) -> list[dict]:
    """The issue's 3g targets per (model, slowdown), for each split setup: at most half the
    time of cloud-only PCM, and faster than every Opus rate at an equal or better WER (the
    split dominates Opus: quicker and no less accurate than each rate measured)."""
    out = []
    for key, by_setup in summary.items():
        model, slowdown, profile = key.split("|")
        if profile != "3g" or "cloud pcm16" not in by_setup:
            continue
        pcm = by_setup["cloud pcm16"]
        opus = {k: v for k, v in by_setup.items() if k.startswith("cloud opus")}
        fastest = min(opus.items(), key=lambda kv: kv[1]["mean_ms"]) if opus else None
        for label, split in ((k, v) for k, v in by_setup.items() if k.startswith("split")):
            faster = all(split["mean_ms"] < o["mean_ms"] for o in opus.values())
            no_worse = all(split["wer"] <= o["wer"] for o in opus.values())
            out.append(
                {
                    "model": model,
                    "slowdown": float(slowdown),
                    "split": label,
                    "split_ms": split["mean_ms"],
                    "split_wer": split["wer"],
                    "pcm_ms": pcm["mean_ms"],
                    "split_over_pcm": round(split["mean_ms"] / pcm["mean_ms"], 3),
                    "fastest_opus": fastest[0] if fastest else "none",
                    "opus_ms": fastest[1]["mean_ms"] if fastest else float("nan"),
                    "opus_wer": fastest[1]["wer"] if fastest else float("nan"),
                    "half_of_pcm": split["mean_ms"] <= 0.5 * pcm["mean_ms"],
                    "faster_than_every_opus": faster,
                    "wer_le_every_opus": no_worse,
                    "beats_opus": faster and no_worse,
                }
            )
    return out


# --------------------------------------------------------------------------- the benchmark


def run_e2e(
    models: list[str],
    out: str,
    profiles: tuple[str, ...] = PROFILES,
    slowdowns: tuple[float, ...] = SLOWDOWNS,
    manifests: dict[str, str] | None = None,
    limit: int = 20,
    warmup: int = 1,
    paper000_counts: dict[str, tuple[int, ...]] | None = None,
    paper000_slowdowns: tuple[float, ...] = (1.0,),
    paper000_max_seconds: float = 120.0,
    stream_profiles: tuple[str, ...] = ("lte",),
    stream_n: int = 6,
    stream_seconds: float = 5.0,
    server_threads: int = 2,
    timeout_s: float = 60.0,
    command: str = "",
) -> dict:
    """Run the benchmark; write results.json, table.md and PNGs to ``out``."""
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    manifests = {**MANIFESTS, **(manifests or {})}
    if paper000_counts is None:
        paper000_counts = {m: PAPER000_COUNTS if m == "ds2" else PAPER000_COUNTS[:2] for m in models}
    for m in models:
        if not Path(manifests.get(m, "")).is_file():
            raise FileNotFoundError(
                f"{m}: no manifest {manifests.get(m)!r} (make corpus, or --manifest MODEL=PATH)"
            )
    server, port = spawn(
        splitasr_command(
            "serve", "--models", ",".join(models), "--host", "127.0.0.1", "--port", "0",
            "--threads", str(server_threads), "--workers", "2",
        ),
        out_dir / "server.log",
    )  # fmt: skip
    emulators: dict[str, tuple[subprocess.Popen, int]] = {}
    jsonl: list[Path] = []
    link_bytes: dict[str, dict] = {}
    t_start = time.perf_counter()
    try:
        for p in profiles:
            emulators[p] = spawn(
                splitasr_command(
                    "netem", "--listen", "127.0.0.1:0", "--target", f"127.0.0.1:{port}", "--profile", p
                ),
                out_dir / f"netem-{p}.log",
            )
        for m in models:
            for f in slowdowns:
                path = out_dir / f"device-{m}-x{f:g}.jsonl"
                setups = default_setups(m)
                counts = paper000_counts.get(m, ())
                spec = {
                    "model": m,
                    "manifest": manifests[m],
                    "limit": limit,
                    "warmup": warmup,
                    "slowdown": f,
                    "timeout_s": timeout_s,
                    "setups": [asdict(s) for s in setups],
                    "targets": {p: f"127.0.0.1:{emulators[p][1]}" for p in profiles},
                    "paper000": (
                        {
                            "counts": list(counts),
                            "max_seconds": paper000_max_seconds,
                            "setups": [asdict(s) for s in paper000_setups(m)],
                        }
                        if counts and f in paper000_slowdowns
                        else None
                    ),
                    "stream": (
                        {
                            "profiles": [p for p in stream_profiles if p in profiles],
                            "n": stream_n,
                            "seconds": stream_seconds,
                            "chunk_ms": 200,
                            "setups": [asdict(s) for s in stream_setups(m)],
                        }
                        if stream_n > 0
                        else None
                    ),
                    "out": str(path),
                }
                spec_path = out_dir / f"device-{m}-x{f:g}.spec.json"
                spec_path.write_text(json.dumps(spec, indent=1))
                print(f"device: {m}, slowdown x{f:g}", file=sys.stderr, flush=True)
                cmd = [sys.executable, "-c", "import sys; from splitasr.bench.e2e import device_main; "
                       "sys.exit(device_main(sys.argv[1]))", str(spec_path)]  # fmt: skip
                done = subprocess.run(cmd, env=os.environ.copy())
                if done.returncode != 0:
                    raise RuntimeError(f"the device process for {m} x{f:g} failed ({done.returncode})")
                jsonl.append(path)
    finally:
        for p, (proc, _) in emulators.items():
            link_bytes[p] = _last_stats(stop(proc))
        stop(server)
    wall = time.perf_counter() - t_start
    return _report(
        profiles, jsonl, link_bytes, out_dir, limit, wall, server_threads, paper000_counts, command
    )


def rebuild_report(out: str, command: str = "") -> dict:
    """Write results.json, table.md and the PNGs again from the device files of an earlier
    run in ``out`` (after a change to the summaries; nothing is measured)."""
    out_dir = Path(out)
    old = json.loads((out_dir / "results.json").read_text())
    jsonl = sorted(out_dir.glob("device-*.jsonl"))
    profiles = tuple(dict.fromkeys(k.split("|")[2] for k in old["summary"]))
    counts = {}
    for key, table in old["paper000"].items():
        counts[key.split("|")[0]] = tuple(
            int(k[1:]) for k in table[0] if k.startswith("t") and k[1:].isdigit()
        )
    return _report(
        profiles, jsonl, old["link_stats"], out_dir, old["limit"], old["wall_s"],
        old["machine"].get("server_threads", 2), counts, old["command"],
    )  # fmt: skip


def _last_stats(stdout: str) -> dict:
    """The emulator's final ``{"event": "stats", ...}`` line, if it printed one."""
    for line in reversed(stdout.splitlines()):
        try:
            got = json.loads(line)
        except ValueError:
            continue
        if isinstance(got, dict) and got.get("event") == "stats":
            return got
    return {}


def _report(profiles, jsonl, link_bytes, out_dir, limit, wall, server_threads, p0_counts, command) -> dict:
    rows = [json.loads(line) for path in jsonl for line in path.read_text().splitlines()]
    summary: dict[str, dict[str, dict]] = {}
    for path in jsonl:
        m, f = path.stem.removeprefix("device-").rsplit("-x", 1)
        for r in (json.loads(line) for line in path.read_text().splitlines()):
            if r["kind"] == "utterance":
                key = f"{m}|{f}|{r['profile']}"
                label = Setup(r["mode"], r["point"], r["codec"]).label
                summary.setdefault(key, {}).setdefault(label, []).append(r)
    for path in jsonl:  # edge-only rows (measured once) join every profile's table
        m, f = path.stem.removeprefix("device-").rsplit("-x", 1)
        local = summary.pop(f"{m}|{f}|{LOCAL}", {})
        for key in [k for k in summary if k.startswith(f"{m}|{f}|")]:
            summary[key] = {**local, **summary[key]}
    summary = {k: {label: summarise(rs) for label, rs in v.items()} for k, v in summary.items()}
    streams: dict[str, dict[str, dict]] = {}
    for path in jsonl:
        m, f = path.stem.removeprefix("device-").rsplit("-x", 1)
        got = [json.loads(line) for line in path.read_text().splitlines()]
        by: dict[str, list] = {}
        for r in (r for r in got if r["kind"] == "stream"):
            by.setdefault(f"{r['profile']}|{Setup(r['mode'], r['point'], r['codec']).label}", []).append(r)
        for k, rs in by.items():
            streams.setdefault(f"{m}|{f}", {})[k] = summarise_stream(rs)
    p0 = {}
    for path in jsonl:
        m, f = path.stem.removeprefix("device-").rsplit("-x", 1)
        got = [json.loads(line) for line in path.read_text().splitlines()]
        got = [r for r in got if r["kind"] == "paper000"]
        if got:
            p0[f"{m}|{f}"] = paper000_table(got, tuple(p0_counts[m]))
    # bytes on the wire: what the emulator carried against the messages the devices sent
    wire = {}
    streamed = {r["profile"] for r in rows if r["kind"] == "stream"}
    for p in profiles:
        if p in streamed:  # streamed chunks are not counted as messages by the device
            continue
        stats = link_bytes.get(p) or {}
        sent = [r for r in rows if r["kind"] == "link" and r["profile"] == p]
        calls = sum(r["calls"] for r in sent)
        if stats.get("bytes_up") and calls:
            up, down = sum(r["request_bytes"] for r in sent), sum(r["reply_bytes"] for r in sent)
            wire[p] = {
                "calls": calls,
                "link_bytes_up": stats["bytes_up"],
                "link_bytes_down": stats["bytes_down"],
                "message_bytes_up": up,
                "message_bytes_down": down,
                "grpc_bytes_per_call_up": round((stats["bytes_up"] - up) / calls, 1),
                "grpc_bytes_per_call_down": round((stats["bytes_down"] - down) / calls, 1),
            }
    machine = {**machine_description(), "server_threads": server_threads}
    machine["setting"] = (
        f"{machine['cores']}-core {machine['cpu']}, torch {machine['torch']} CPU; server, link emulator and "
        f"device in separate processes on this machine (loopback); the device runs one torch thread "
        f"and is emulated as `slowdown` times slower than this machine; server {server_threads} threads"
    )
    results = {
        "command": command,
        "machine": machine,
        "limit": limit,
        "wall_s": round(wall, 1),
        "summary": summary,
        "paper000": p0,
        "streaming": streams,
        "checks_3g": checks_3g(summary),
        "link_stats": link_bytes,
        "wire": wire,
    }
    table = _markdown(results)
    write_results(out_dir, results, table, command)
    _plots(results, out_dir)
    return results


COLUMNS = [
    ("setup", "setup", "s"),
    ("mean_ms", "mean ms", ".0f"),
    ("p50_ms", "p50", ".0f"),
    ("p95_ms", "p95", ".0f"),
    ("compute_ms", "device model", ".0f"),
    ("encode_ms", "encode", ".1f"),
    ("network_ms", "network", ".0f"),
    ("queue_ms", "queue", ".1f"),
    ("decode_ms", "decode", ".1f"),
    ("tail_ms", "tail", ".0f"),
    ("text_ms", "text", ".0f"),
    ("payload_bytes", "payload B", ".0f"),
    ("request_bytes", "request B", ".0f"),
    ("reply_bytes", "reply B", ".0f"),
    ("wer", "WER %", ".2f"),
    ("fallbacks", "fallbacks", "d"),
]


def _markdown(results: dict) -> str:
    parts = [f"Setting: {results['machine']['setting']}.", ""]
    for key, by_setup in results["summary"].items():
        model, f, profile = key.split("|")
        n = next(iter(by_setup.values()))["n"]
        parts.append(f"### {model}, link `{profile}`, edge slowdown x{f} ({n} utterances each)\n")
        parts.append(markdown_table([{"setup": k, **v} for k, v in by_setup.items()], COLUMNS) + "\n")
    if results["paper000"]:
        parts.append("### Paper 000's experiment: total seconds for N utterances, one after another\n")
        for key, table in results["paper000"].items():
            model, f = key.split("|")
            counts = [k[1:] for k in table[0] if k.startswith("t") and k[1:].isdigit()]
            cols = [("profile", "link", "s"), ("setup", "setup", "s")]
            cols += [(f"t{n}", f"N={n} s", "g") for n in counts]
            cols += [("measured", "measured N", "d"), ("extrapolated", "extrapolated N", "s")]
            parts.append(f"{model}, edge slowdown x{f}:\n\n" + markdown_table(table, cols) + "\n")
    if results["streaming"]:
        parts.append("### Streaming: 1x-paced utterances, 200-ms chunks; latency after the end of speech\n")
        rows = []
        for key, by in results["streaming"].items():
            model, f = key.split("|")
            for k, v in by.items():
                profile, label = k.split("|")
                rows.append({"model": model, "slowdown": float(f), "profile": profile, "setup": label, **v})
        cols = [
            ("model", "model", "s"),
            ("slowdown", "edge x", "g"),
            ("profile", "link", "s"),
            ("setup", "setup", "s"),
            ("seconds", "audio s", ".1f"),
            ("after_speech_p50_ms", "after speech p50 ms", ".0f"),
            ("after_speech_p95_ms", "p95", ".0f"),
            ("server_p50_ms", "server p50", ".0f"),
            ("beyond_server_p50_ms", "after speech - server p50", ".0f"),
            ("edge_finish_p50_ms", "edge last chunk p50", ".0f"),
            ("network_p50_ms", "network p50", ".0f"),
            ("bytes_up", "bytes up", ".0f"),
            ("fallbacks", "fallbacks", "d"),
        ]
        parts.append(markdown_table(rows, cols) + "\n")
    if results["wire"]:
        parts.append(
            "### Bytes on the wire (TCP payload counted by the link emulator; links that also "
            "carried streams left out)\n"
        )
        rows = [{"profile": p, **w} for p, w in results["wire"].items()]
        cols = [
            ("profile", "link", "s"),
            ("calls", "calls", "d"),
            ("link_bytes_up", "up B", "d"),
            ("message_bytes_up", "messages up B", "d"),
            ("grpc_bytes_per_call_up", "gRPC/HTTP2 B per call up", ".1f"),
            ("link_bytes_down", "down B", "d"),
            ("grpc_bytes_per_call_down", "gRPC/HTTP2 B per call down", ".1f"),
        ]
        parts.append(markdown_table(rows, cols) + "\n")
    if results["checks_3g"]:
        parts.append("### 3g targets\n")
        cols = [
            ("model", "model", "s"),
            ("slowdown", "slowdown", "g"),
            ("split", "split", "s"),
            ("split_ms", "split ms", ".0f"),
            ("split_wer", "split WER", ".2f"),
            ("pcm_ms", "PCM ms", ".0f"),
            ("split_over_pcm", "split/PCM", ".2f"),
            ("fastest_opus", "fastest Opus", "s"),
            ("opus_ms", "its ms", ".0f"),
            ("opus_wer", "its WER", ".2f"),
            ("half_of_pcm", "<= half PCM", ""),
            ("faster_than_every_opus", "faster than every Opus", ""),
            ("wer_le_every_opus", "WER <= every Opus", ""),
        ]
        parts.append(markdown_table(results["checks_3g"], cols) + "\n")
    return "\n".join(parts)


def _plots(results: dict, out_dir: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    stages = [
        ("compute_ms", "device model"),
        ("encode_ms", "encode"),
        ("network_ms", "network"),
        ("queue_ms", "queue"),
        ("decode_ms", "decode"),
        ("tail_ms", "tail"),
        ("text_ms", "text"),
    ]
    groups: dict[tuple[str, str], list[str]] = {}
    for key in results["summary"]:
        model, f, profile = key.split("|")
        groups.setdefault((model, f), []).append(profile)
    for (model, f), profiles in groups.items():
        fig, axes = plt.subplots(1, len(profiles), figsize=(4.6 * len(profiles), 4.2), squeeze=False)
        for ax, profile in zip(axes[0], profiles, strict=True):
            by_setup = results["summary"][f"{model}|{f}|{profile}"]
            labels = list(by_setup)
            bottom = np.zeros(len(labels))
            for k, name in stages:
                vals = np.array([by_setup[s][k] for s in labels])
                ax.barh(labels, vals, left=bottom, label=name)
                bottom += vals
            ax.set_title(f"{profile}", fontsize=10)
            ax.set_xlabel("mean ms per utterance")
            ax.invert_yaxis()
            if ax is not axes[0][0]:
                ax.set_yticklabels([])
        axes[0][0].legend(fontsize=7, loc="lower right")
        fig.suptitle(f"{model}: end-to-end latency by stage, edge slowdown x{f}", fontsize=10)
        fig.tight_layout()
        fig.savefig(out_dir / f"e2e-{model}-x{f}.png", dpi=110)
        plt.close(fig)
    for key, table in results["paper000"].items():
        model, f = key.split("|")
        counts = [int(k[1:]) for k in table[0] if k.startswith("t") and k[1:].isdigit()]
        fig, ax = plt.subplots(figsize=(6.5, 3.6))
        width = 0.8 / len(table)
        for i, row in enumerate(table):
            x = np.arange(len(counts)) + i * width
            ax.bar(x, [row[f"t{n}"] for n in counts], width, label=f"{row['profile']}: {row['setup']}")
        ax.set_xticks(np.arange(len(counts)) + 0.4 - width / 2, [str(n) for n in counts])
        ax.set_xlabel("utterances")
        ax.set_ylabel("total seconds")
        ax.set_yscale("log")
        ax.legend(fontsize=6)
        ax.set_title(f"paper 000: {model}, joint vs cloud-only, edge x{f}", fontsize=10)
        fig.tight_layout()
        fig.savefig(out_dir / f"paper000-{model}-x{f}.png", dpi=110)
        plt.close(fig)
