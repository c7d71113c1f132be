"""Accuracy of the whole model on several test sets (``splitasr bench asr``).

For each manifest and each decoder (greedy, and beam search with the word LM when
``beam > 1``): WER, CER, edit counts and real-time factor, written as results.json,
table.md and a bar chart.
"""

from __future__ import annotations

import sys
from pathlib import Path

from splitasr.bench.report import machine_description, markdown_table, write_results
from splitasr.decoding import Decoder
from splitasr.evaluate import evaluate_manifest
from splitasr.model.registry import load_model


def run_asr_bench(
    manifests: list[str],
    out: str,
    model_path: str | None = None,
    beam: int | None = None,
    limit: int | None = None,
) -> dict:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    model = load_model(model_path)
    beam = model.default_beam if beam is None else beam
    decoders: list[tuple[str, Decoder]] = [("greedy", model.make_decoder(beam=1))]
    if beam > 1:
        decoders.append((f"beam{beam}", model.make_decoder(beam=beam)))
    rows = []
    for manifest in manifests:
        for label, decoder in decoders:
            r = evaluate_manifest(model, manifest, decoder, limit=limit, progress=True)
            rows.append(
                {
                    "test_set": Path(manifest).stem,
                    "decoder": label,
                    "utterances": r.utterances,
                    "words": r.words,
                    "wer": r.wer,
                    "cer": r.cer,
                    "sub": r.substitutions,
                    "del": r.deletions,
                    "ins": r.insertions,
                    "rtf": r.rtf,
                }
            )
    payload = {
        "benchmark": "asr",
        "model": model.name,
        "machine": machine_description(),
        "rows": rows,
    }
    table = markdown_table(
        [{**r, "wer_pct": 100 * r["wer"], "cer_pct": 100 * r["cer"]} for r in rows],
        [
            ("test_set", "test set", "s"),
            ("decoder", "decoder", "s"),
            ("utterances", "utts", "d"),
            ("words", "words", "d"),
            ("wer_pct", "WER %", ".2f"),
            ("cer_pct", "CER %", ".2f"),
            ("sub", "S", "d"),
            ("del", "D", "d"),
            ("ins", "I", "d"),
            ("rtf", "RTF", ".4f"),
        ],
    )
    outp = Path(out)
    write_results(outp, payload, table, "splitasr " + " ".join(sys.argv[1:]))
    sets = list(dict.fromkeys(r["test_set"] for r in rows))
    fig, ax = plt.subplots(figsize=(7, 4))
    width = 0.8 / len(decoders)
    for j, (label, _) in enumerate(decoders):
        vals = [
            100 * next(r["wer"] for r in rows if r["test_set"] == s and r["decoder"] == label) for s in sets
        ]
        ax.bar([i + j * width for i in range(len(sets))], vals, width, label=label)
    ax.set_xticks(
        [i + width * (len(decoders) - 1) / 2 for i in range(len(sets))], sets, rotation=10, fontsize=8
    )
    ax.set_ylabel("WER (%)")
    ax.set_title(f"{model.name}: word error rate per test set")
    ax.legend()
    fig.tight_layout()
    fig.savefig(outp / "wer.png", dpi=120)
    plt.close(fig)
    print(table)
    return payload
