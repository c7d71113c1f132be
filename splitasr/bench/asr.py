"""Accuracy of whole models on several test sets (``splitasr bench asr``).

For each model spec (``NAME`` or ``NAME:PRECISION``, :mod:`splitasr.bench.specs`), each
manifest and each decoder (greedy, and beam search, with the word LM for ds2, when the
beam is > 1): WER, CER, edit counts, real-time factor and the WER difference from the
first model on the same test set and decoder, written as results.json, table.md and a
bar chart.
"""

from __future__ import annotations

import sys
from pathlib import Path

from splitasr.bench.report import machine_description, markdown_table, write_results
from splitasr.bench.specs import ModelSpec, decoder_precision, load_specs
from splitasr.decoding import Decoder
from splitasr.evaluate import evaluate_manifest
from splitasr.model.registry import DEFAULT_MODEL


def run_asr_bench(
    manifests: list[str],
    out: str,
    model_path: str | None = None,
    beam: int | None = None,
    limit: int | None = None,
    models: list[ModelSpec] | None = None,
) -> dict:
    """Rows per model spec x test set x decoder; ``models`` default to ``model_path`` with
    its default precision, ``beam`` to each model's own width (Whisper 5, ds2 32).

    ``delta_wer_pts`` is the row's WER minus the first model's on the same test set and
    decoder label, in percentage points (``None`` where the first model has no such row,
    e.g. ds2's ``beam32`` against Whisper's ``beam5``). Every model is loaded before any
    test set runs (a bad spec fails at once)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    specs = models or [ModelSpec(model_path or DEFAULT_MODEL)]
    rows = []
    for spec, model in load_specs(specs):
        width = model.default_beam if beam is None else beam
        decoders: list[tuple[str, Decoder]] = [("greedy", model.make_decoder(beam=1))]
        if width > 1:
            decoders.append((f"beam{width}", model.make_decoder(beam=width)))
        for manifest in manifests:
            for label, decoder in decoders:
                r = evaluate_manifest(model, manifest, decoder, limit=limit, progress=True)
                rows.append(
                    {
                        "spec": spec.label,
                        "model": model.name,
                        "precision": decoder_precision(model),
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
    first = {(r["test_set"], r["decoder"]): r["wer"] for r in rows if r["spec"] == specs[0].label}
    for r in rows:
        ref = first.get((r["test_set"], r["decoder"]))
        r["delta_wer_pts"] = None if ref is None else 100 * (r["wer"] - ref)
    payload = {
        "benchmark": "asr",
        "model": specs[0].name,
        "models": [s.label for s in specs],
        "machine": machine_description(),
        "rows": rows,
    }
    table = markdown_table(
        [{**r, "wer_pct": 100 * r["wer"], "cer_pct": 100 * r["cer"]} for r in rows],
        [
            ("spec", "model", "s"),
            ("test_set", "test set", "s"),
            ("decoder", "decoder", "s"),
            ("utterances", "utts", "d"),
            ("words", "words", "d"),
            ("wer_pct", "WER %", ".2f"),
            ("delta_wer_pts", f"WER pts vs {specs[0].label}", "+.2f"),
            ("cer_pct", "CER %", ".2f"),
            ("sub", "S", "d"),
            ("del", "D", "d"),
            ("ins", "I", "d"),
            ("rtf", "RTF", ".4f"),
        ],
    )
    outp = Path(out)
    write_results(outp, payload, table, "splitasr " + " ".join(sys.argv[1:]))
    _plot_wer(plt, outp / "wer.png", rows)
    print(table)
    return payload


def _plot_wer(plt, path: Path, rows: list[dict]) -> None:
    """Bars grouped by test set, one bar per (model spec, decoder)."""
    sets = list(dict.fromkeys(r["test_set"] for r in rows))
    bars = list(dict.fromkeys((r["spec"], r["decoder"]) for r in rows))
    fig, ax = plt.subplots(figsize=(max(7, 1.2 * len(sets) * len(bars) / 2), 4))
    width = 0.8 / len(bars)
    for j, (spec, decoder) in enumerate(bars):
        wer = {r["test_set"]: 100 * r["wer"] for r in rows if (r["spec"], r["decoder"]) == (spec, decoder)}
        xs = [i + j * width for i, s in enumerate(sets) if s in wer]
        ax.bar(xs, [wer[s] for s in sets if s in wer], width, label=f"{spec} {decoder}")
    ax.set_xticks([i + width * (len(bars) - 1) / 2 for i in range(len(sets))], sets, rotation=10, fontsize=8)
    ax.set_ylabel("WER (%)")
    ax.set_title("Word error rate per test set")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
