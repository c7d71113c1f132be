"""Real-time factor of the whole model on this CPU (``splitasr bench rtf``).

RTF = compute time / audio duration, for feature extraction + network + greedy decoding,
per utterance. Measured with all threads (the cloud-side figure) and with one thread
(the emulated edge device, which runs on this machine's cores).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import torch

from splitasr.audio import load_audio
from splitasr.bench.report import machine_description, markdown_table, write_results
from splitasr.manifest import read_manifest
from splitasr.model.registry import load_model
from splitasr.pipeline import Edge, recognise


def _time_all(model, waves, threads: int, repeats: int = 3) -> list[float]:
    """Best-of-``repeats`` seconds to transcribe each wave (features to text)."""
    torch.set_num_threads(threads)
    decoder = model.make_decoder(beam=1)
    recognise(model, waves[0], decoder)  # warm-up
    out = []
    for w in waves:
        best = float("inf")
        for _ in range(repeats):
            t0 = time.perf_counter()
            recognise(model, w, decoder)
            best = min(best, time.perf_counter() - t0)
        out.append(best)
    return out


def _time_heads(model, waves, repeats: int = 3) -> dict[str, float]:
    """Total best-of-``repeats`` seconds of ``model.head`` at each split point, 1 thread."""
    torch.set_num_threads(1)
    edge = Edge(model)
    totals = {}
    with torch.inference_mode():
        for point in model.split_points[1:]:
            edge.head(waves[0], point)  # warm-up
            total = 0.0
            for w in waves:
                best = float("inf")
                for _ in range(repeats):
                    t0 = time.perf_counter()
                    edge.head(w, point)
                    best = min(best, time.perf_counter() - t0)
                total += best
            totals[point] = total
    return totals


def run_rtf_bench(
    manifest: str,
    out: str,
    model_path: str | None = None,
    limit: int = 100,
    threads: int | None = None,
    min_seconds: float = 0.0,
    max_seconds: float = float("inf"),
    repeats: int = 3,
) -> dict:
    """RTF of the whole model (all threads and 1 thread) and of the head at each split point
    on the emulated edge (1 thread), over the first ``limit`` utterances of ``manifest``
    between ``min_seconds`` and ``max_seconds`` long."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    model = load_model(model_path)
    root = Path(manifest).parent
    utts = [u for u in read_manifest(manifest) if min_seconds <= u.duration <= max_seconds][:limit]
    if not utts:
        raise ValueError(f"{manifest}: no utterance between {min_seconds} and {max_seconds} s")
    waves = [torch.from_numpy(load_audio(u.resolve(root))) for u in utts]
    secs = np.array([len(w) / model.sample_rate for w in waves])
    all_threads = threads or torch.get_num_threads()
    rows, series = [], {}
    for label, n in (("cloud (all threads)", all_threads), ("edge (1 thread)", 1)):
        t = np.array(_time_all(model, waves, n, repeats))
        series[label] = t / secs
        rows.append(
            {
                "setting": label,
                "threads": n,
                "utterances": len(waves),
                "audio_s": float(secs.sum()),
                "compute_s": float(t.sum()),
                "rtf": float(t.sum() / secs.sum()),
                "rtf_p90": float(np.percentile(t / secs, 90)),
            }
        )
    edge_total = rows[-1]["compute_s"]
    heads = [
        {"point": p, "head_s": t, "rtf": t / secs.sum(), "ratio_to_full": t / edge_total}
        for p, t in _time_heads(model, waves, repeats).items()
    ]
    torch.set_num_threads(all_threads)
    payload = {
        "benchmark": "rtf",
        "model": model.name,
        "manifest": manifest,
        "seconds_range": [min_seconds, max_seconds if np.isfinite(max_seconds) else None],
        "machine": machine_description(),
        "rows": rows,
        "heads_edge_1_thread": heads,
    }
    table = markdown_table(
        rows,
        [
            ("setting", "setting", "s"),
            ("threads", "threads", "d"),
            ("utterances", "utts", "d"),
            ("audio_s", "audio s", ".1f"),
            ("compute_s", "compute s", ".2f"),
            ("rtf", "RTF", ".4f"),
            ("rtf_p90", "RTF p90", ".4f"),
        ],
    )
    table += "\n\nHead alone at each split point on the emulated edge (1 thread of this CPU):\n\n"
    table += markdown_table(
        heads,
        [
            ("point", "split point", "s"),
            ("head_s", "head s", ".2f"),
            ("rtf", "head RTF", ".4f"),
            ("ratio_to_full", "x full model", ".3f"),
        ],
    )
    outp = Path(out)
    write_results(outp, payload, table, "splitasr " + " ".join(sys.argv[1:]))
    fig, ax = plt.subplots(figsize=(6, 4))
    for label, r in series.items():
        ax.scatter(secs, r, s=10, label=label)
    ax.axhline(0.05, color="k", ls="--", lw=1, label="target 0.05")
    ax.set_xlabel("utterance length (s)")
    ax.set_ylabel("real-time factor")
    ax.set_title(f"Full {model.name} model, greedy decoding")
    ax.legend()
    fig.tight_layout()
    fig.savefig(outp / "rtf.png", dpi=120)
    plt.close(fig)
    print(table)
    return payload
