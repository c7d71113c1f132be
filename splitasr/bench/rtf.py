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
from splitasr.corpus.manifest import read_manifest
from splitasr.model.checkpoint import load_model
from splitasr.transcribe import transcribe_wave


def _time_all(model, waves, threads: int, repeats: int = 3) -> list[float]:
    torch.set_num_threads(threads)
    decoder = model.make_decoder()
    transcribe_wave(model, waves[0], decoder)  # warm-up
    out = []
    for w in waves:
        best = float("inf")
        for _ in range(repeats):
            t0 = time.perf_counter()
            transcribe_wave(model, w, decoder)
            best = min(best, time.perf_counter() - t0)
        out.append(best)
    return out


def run_rtf_bench(
    manifest: str, out: str, model_path: str | None = None, limit: int = 100, threads: int | None = None
) -> dict:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    model = load_model(model_path)
    root = Path(manifest).parent
    utts = read_manifest(manifest)[:limit]
    waves = [torch.from_numpy(load_audio(u.resolve(root))) for u in utts]
    secs = np.array([len(w) / model.sample_rate for w in waves])
    all_threads = threads or torch.get_num_threads()
    rows, series = [], {}
    for label, n in (("cloud (all threads)", all_threads), ("edge (1 thread)", 1)):
        t = np.array(_time_all(model, waves, n))
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
    torch.set_num_threads(all_threads)
    payload = {"benchmark": "rtf", "manifest": manifest, "machine": machine_description(), "rows": rows}
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
    outp = Path(out)
    write_results(outp, payload, table, "splitasr " + " ".join(sys.argv[1:]))
    fig, ax = plt.subplots(figsize=(6, 4))
    for label, r in series.items():
        ax.scatter(secs, r, s=10, label=label)
    ax.axhline(0.05, color="k", ls="--", lw=1, label="target 0.05")
    ax.set_xlabel("utterance length (s)")
    ax.set_ylabel("real-time factor")
    ax.set_title("Full DS2 model, greedy decoding")
    ax.legend()
    fig.tight_layout()
    fig.savefig(outp / "rtf.png", dpi=120)
    plt.close(fig)
    print(table)
    return payload
