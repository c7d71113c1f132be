"""The edge head on ONNX Runtime against PyTorch (``splitasr bench onnx``).

Per model x split point x runtime (PyTorch float, ONNX Runtime float, ONNX Runtime int8;
all on one thread, the emulated edge): the head's size on disk, and its compute time per
utterance (median ms, and median ms per second of audio) on real test utterances, the
front end included (torch's STFT for PyTorch, :mod:`splitasr.onnx.frontend` for ONNX).
At each model's default split point with ``deepcod+ans`` (DS2 ``proj``, Whisper ``stem``)
the payloads of every runtime are transcribed by the same :class:`~splitasr.pipeline.Cloud`:
the share of utterances whose text equals the PyTorch float one's, and each runtime's WER.

Writes results.json, table.md and onnx.png (ms per second of audio by point and runtime).
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

from splitasr.audio import load_audio
from splitasr.bench.report import machine_description, markdown_table, write_results
from splitasr.manifest import read_manifest
from splitasr.model.registry import load_model
from splitasr.pipeline import Cloud, Edge
from splitasr.wer import error_rates

DEFAULT_MODELS = ("whisper-tiny.en", "whisper-tiny.en-dyn", "ds2")
DEFAULT_POINTS = {"ds2": "proj", "whisper-tiny.en": "stem", "whisper-tiny.en-dyn": "stem"}
DEFAULT_CODEC = "deepcod+ans"
RUNTIMES = ("torch-float", "ort-float", "ort-int8")


def _timings(fns: dict[str, object], inputs: dict[str, list], seconds: list[float], repeats: int) -> dict:
    """Per runtime ``(median ms per utterance, median ms per second of audio)``: each
    utterance runs ``repeats`` times on every runtime in turn (interleaved, so a machine
    busy for a moment slows every runtime alike) and keeps its fastest run; one warm-up
    call per runtime first."""
    for r, fn in fns.items():
        fn(inputs[r][0])
    best = {r: [float("inf")] * len(seconds) for r in fns}
    for i in range(len(seconds)):
        for _ in range(repeats):
            for r, fn in fns.items():
                t0 = time.perf_counter()
                fn(inputs[r][i])
                best[r][i] = min(best[r][i], 1000 * (time.perf_counter() - t0))
    return {
        r: (
            round(statistics.median(b), 3),
            round(statistics.median(t / s for t, s in zip(b, seconds, strict=True)), 3),
        )
        for r, b in best.items()
    }


def _onnx_size_mb(edge, point: str) -> float:
    """The files the ONNX head to ``point`` loads: its graph and the mel filter bank."""
    files = edge.manifest["files"]
    names = [edge.manifest["frontend"]["mel"]]
    if point not in ("audio", "features"):
        bundle, entry = edge._head_entry(point)
        names.append(entry["files"][edge.precision])
        files = {**files, **bundle.manifest["files"]}
    return round(sum(files[n]["bytes"] for n in names) / 1e6, 3)


def run_onnx_bench(
    manifest: str | Path,
    out: str | Path,
    models: list[str] | None = None,
    points: list[str] | None = None,
    limit: int = 100,
    onnx_dirs: dict[str, str] | None = None,
    repeats: int = 3,
    command: str = "splitasr bench onnx",
) -> dict:
    """Measure (see the module docstring); exports each model's graphs into
    ``out/onnx/<model>`` unless ``onnx_dirs[model]`` names a folder already written."""
    from splitasr.onnx.edge import OnnxEdge
    from splitasr.onnx.export import export_onnx

    torch.set_num_threads(1)
    utts = read_manifest(manifest)[:limit]
    root = Path(manifest).parent
    waves = [load_audio(u.resolve(root)) for u in utts]
    out = Path(out)
    rows, texts = [], {}
    for name in models or DEFAULT_MODELS:
        model = load_model(name)
        want = [p for p in model.split_points[1:] if points is None or p in points]
        folder = (onnx_dirs or {}).get(name)
        if folder is None:
            folder = out / "onnx" / name
            export_onnx(
                model, folder, points=want, codecs=["deepcod"] if DEFAULT_POINTS[name] in want else []
            )
        edge = Edge(model)
        onnx = {p: OnnxEdge(name, folder, p, threads=1) for p in ("float", "int8")}
        tw = [torch.from_numpy(w) for w in waves]
        seconds = [len(w) / model.sample_rate for w in waves]
        for point in want:
            info = {i.name: i for i in model.point_info()}[point]
            fns = {
                "torch-float": lambda w, e=edge, p=point: e.head(w, p),
                "ort-float": lambda w, o=onnx["float"], p=point: o.head(w, p),
                "ort-int8": lambda w, o=onnx["int8"], p=point: o.head(w, p),
            }
            inputs = {"torch-float": tw, "ort-float": waves, "ort-int8": waves}
            times = _timings(fns, inputs, seconds, repeats)
            for runtime in RUNTIMES:
                if runtime == "torch-float":
                    size = round(info.params_head * 4 / 1e6, 3)
                else:
                    size = _onnx_size_mb(onnx[runtime.split("-")[1]], point)
                ms, per_s = times[runtime]
                rows.append(
                    {
                        "model": name,
                        "point": point,
                        "runtime": runtime,
                        "size_mb": size,
                        "ms": ms,
                        "ms_per_s": per_s,
                    }
                )
                print(f"{name} {point} {runtime}: {size} MB, {ms} ms, {per_s} ms/s", file=sys.stderr)
        point = DEFAULT_POINTS[name]
        if point in want:
            texts[name] = _texts(model, edge, onnx, waves, utts, point)
    for row in rows:
        base = next(
            r
            for r in rows
            if r["model"] == row["model"] and r["point"] == row["point"] and r["runtime"] == "torch-float"
        )
        row["speedup"] = round(base["ms"] / row["ms"], 2) if row["ms"] else 0.0
    payload = {
        "machine": machine_description(),
        "manifest": str(manifest),
        "utterances": len(utts),
        "rows": rows,
        "texts": texts,
    }
    table = markdown_table(
        rows,
        [
            ("model", "model", ""),
            ("point", "point", ""),
            ("runtime", "runtime", ""),
            ("size_mb", "head MB", ".3f"),
            ("ms", "ms / utt (median)", ".2f"),
            ("ms_per_s", "ms / s audio", ".2f"),
            ("speedup", "x torch", ".2f"),
        ],
    )
    text_rows = [{"model": m, **v} for m, v in texts.items()]
    if text_rows:
        table += "\n\n" + markdown_table(
            text_rows,
            [
                ("model", "model", ""),
                ("point", "point", ""),
                ("codec", "codec", ""),
                ("same_float", "same text, ORT float", ".1%"),
                ("same_int8", "same text, ORT int8", ".1%"),
                ("wer_torch", "WER torch", ".2%"),
                ("wer_float", "WER ORT float", ".2%"),
                ("wer_int8", "WER ORT int8", ".2%"),
            ],
        )
    write_results(out, payload, table, command)
    _plot(rows, out / "onnx.png")
    print(table)
    return payload


def _texts(model, edge, onnx, waves, utts, point: str) -> dict:
    """Texts of every runtime's payloads on one Cloud: agreement with torch float, WER."""
    cloud = Cloud(model)
    hyps: dict[str, list[str]] = {r: [] for r in RUNTIMES}
    for w in waves:
        payloads = {
            "torch-float": edge.encode(torch.from_numpy(w), point, DEFAULT_CODEC).payload,
            "ort-float": onnx["float"].encode(w, point, DEFAULT_CODEC).payload,
            "ort-int8": onnx["int8"].encode(w, point, DEFAULT_CODEC).payload,
        }
        done: dict[bytes, str] = {}
        for r, p in payloads.items():
            if p not in done:
                done[p] = cloud.transcribe(p, point, DEFAULT_CODEC).text
            hyps[r].append(done[p])
    refs = [u.text for u in utts]
    base = hyps["torch-float"]
    n = max(len(base), 1)
    return {
        "point": point,
        "codec": DEFAULT_CODEC,
        "same_float": sum(a == b for a, b in zip(base, hyps["ort-float"], strict=True)) / n,
        "same_int8": sum(a == b for a, b in zip(base, hyps["ort-int8"], strict=True)) / n,
        "wer_torch": error_rates(refs, base)["wer"],
        "wer_float": error_rates(refs, hyps["ort-float"])["wer"],
        "wer_int8": error_rates(refs, hyps["ort-int8"])["wer"],
    }


def _plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = list(dict.fromkeys(r["model"] for r in rows))
    fig, axes = plt.subplots(len(models), 1, figsize=(9, 3.2 * len(models)), squeeze=False)
    for ax, m in zip(axes[:, 0], models, strict=True):
        pts = list(dict.fromkeys(r["point"] for r in rows if r["model"] == m))
        x = np.arange(len(pts))
        for i, rt in enumerate(RUNTIMES):
            vals = [
                next(
                    r["ms_per_s"] for r in rows if r["model"] == m and r["point"] == p and r["runtime"] == rt
                )
                for p in pts
            ]
            ax.bar(x + (i - 1) * 0.27, vals, 0.27, label=rt)
        ax.set_xticks(x, pts, rotation=30)
        ax.set_ylabel("head ms / s audio (1 thread)")
        ax.set_title(m)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
