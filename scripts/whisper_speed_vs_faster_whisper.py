"""Speed and accuracy of splitasr's Whisper models against faster-whisper, same files, same threads.

One run over the same utterances, every system on the same thread count, each warmed up
on the first file and then timed once per file (waveform in, text out):

* faster-whisper (CTranslate2) on the package's tiny.en files, ``compute_type`` float32
  and int8 (loaded as :mod:`whisper_parity` does: no download, no timestamps, VAD,
  temperature fallback or previous-text prompt);
* splitasr ``whisper-tiny.en`` (padded, exact) and ``whisper-tiny.en-dyn`` (trimmed
  encoder), each with a float32, float16 (the default) and int8 text decoder, with their
  default loop guard;

greedy and beam search (``--beams``, default ``1,5``). Per system and beam: real-time
factor, WER against the manifest's texts (jiwer through :func:`splitasr.wer.error_rates`,
normalised text) and the share of normalised transcripts identical to faster-whisper
float32's at the same beam. Writes results.json (with every transcript) and table.md.

    python scripts/whisper_speed_vs_faster_whisper.py \\
        --manifest data/corpus/test_sentences_heldout_voices.jsonl --limit 100 --threads 2

faster-whisper is a test/benchmark dependency only (pip install '.[dev]').
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

SPLITASR_MODELS = ("whisper-tiny.en", "whisper-tiny.en-dyn")
PRECISIONS = ("float32", "float16", "int8")  # splitasr's text decoder
COMPUTE_TYPES = ("float32", "int8")  # faster-whisper's (CTranslate2 has no float16 on this CPU)
REFERENCE = "faster-whisper float32"  # the transcripts the others are compared with


@dataclass
class System:
    """One recogniser under test: ``transcribe(wave (S,) float32 16 kHz, beam) -> text``."""

    name: str
    runtime: str  # "faster-whisper" or "splitasr"
    model: str
    precision: str
    transcribe: Callable[[np.ndarray, int], str]


def load_systems(threads: int) -> list[System]:
    """faster-whisper float32/int8, then splitasr's Whisper models with float32/float16/int8
    decoders."""
    import torch
    from whisper_parity import faster_whisper_model, faster_whisper_transcript

    from splitasr.model.registry import load_model
    from splitasr.pipeline import recognise

    torch.set_num_threads(threads)
    systems = []
    for compute_type in COMPUTE_TYPES:
        fw = faster_whisper_model(threads, compute_type)
        systems.append(
            System(
                f"faster-whisper {compute_type}",
                "faster-whisper",
                "tiny.en",
                compute_type,
                lambda wave, beam, fw=fw: faster_whisper_transcript(fw, wave, beam),
            )
        )
    for name in SPLITASR_MODELS:
        for precision in PRECISIONS:
            model = load_model(name, decoder_precision=precision)
            decoders = {}  # beam -> decoder, built once

            def transcribe(wave, beam, model=model, decoders=decoders):
                if beam not in decoders:
                    decoders[beam] = model.make_decoder(beam=beam)
                return recognise(model, torch.from_numpy(wave), decoders[beam])

            systems.append(System(f"splitasr {name} {precision}", "splitasr", name, precision, transcribe))
    return systems


def run(waves: list[np.ndarray], refs: list[str] | None, systems: list[System], beams: list[int]) -> dict:
    """Every system x beam over ``waves``: rows and every transcript."""
    from splitasr.text import normalize
    from splitasr.wer import error_rates

    audio_s = sum(len(w) for w in waves) / 16000
    rows, texts = [], {}
    for beam in beams:
        for system in systems:
            system.transcribe(waves[0], beam)  # warm-up
            hyps, compute_s = [], 0.0
            for wave in waves:
                t0 = time.perf_counter()
                hyps.append(system.transcribe(wave, beam))
                compute_s += time.perf_counter() - t0
            texts[(system.name, beam)] = hyps
            rates = error_rates(refs, hyps) if refs else None
            same = [normalize(a) == normalize(b) for a, b in zip(hyps, texts[(REFERENCE, beam)], strict=True)]
            rows.append(
                {
                    "system": system.name,
                    "runtime": system.runtime,
                    "model": system.model,
                    "precision": system.precision,
                    "beam": beam,
                    "utterances": len(waves),
                    "audio_s": audio_s,
                    "compute_s": compute_s,
                    "rtf": compute_s / audio_s,
                    "wer": rates["wer"] if rates else None,
                    "wer_pct": 100 * rates["wer"] if rates else None,
                    "identical_vs_reference": sum(same) / len(same),
                }
            )
            print(
                f"{system.name:38s} beam {beam}: RTF {compute_s / audio_s:.4f}"
                + (f"  WER {100 * rates['wer']:.2f} %" if rates else "")
                + f"  identical to {REFERENCE}: {sum(same)}/{len(same)}",
                flush=True,
            )
    return {"rows": rows, "texts": {f"{name} beam{beam}": t for (name, beam), t in texts.items()}}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--manifest", type=Path, default=Path("data/corpus/test_sentences_heldout_voices.jsonl"))
    p.add_argument("--limit", type=int, default=100, help="first N utterances of the manifest")
    p.add_argument("--threads", type=int, default=2, help="CPU threads of every system")
    p.add_argument("--beams", default="1,5", help="comma-separated beam widths (1: greedy)")
    p.add_argument("--out", type=Path, default=Path("results/fw-speed"))
    args = p.parse_args(argv)
    try:
        beams = [int(b) for b in args.beams.split(",")]
    except ValueError:
        p.error(f"--beams {args.beams!r}: give comma-separated beam widths, e.g. 1,5")
    if not beams or min(beams) < 1 or args.threads < 1 or args.limit < 1:
        p.error("--beams, --threads and --limit must be positive")
    if not args.manifest.is_file():
        p.error(f"{args.manifest}: no such manifest")
    import ctranslate2
    import faster_whisper

    from splitasr.audio import load_audio
    from splitasr.bench.report import machine_description, markdown_table, write_results
    from splitasr.manifest import read_manifest

    utts = read_manifest(args.manifest)[: args.limit]
    if not utts:
        p.error(f"{args.manifest}: no utterances")
    waves = [load_audio(u.resolve(args.manifest.parent)) for u in utts]
    refs = [u.text for u in utts] if all(u.text for u in utts) else None
    result = run(waves, refs, load_systems(args.threads), beams)
    payload = {
        "benchmark": "whisper-speed-vs-faster-whisper",
        "manifest": str(args.manifest),
        "threads": args.threads,
        "reference": REFERENCE,
        "versions": {"faster_whisper": faster_whisper.__version__, "ctranslate2": ctranslate2.__version__},
        "machine": machine_description(),
        "audio": [u.audio for u in utts],
        **result,
    }
    table = markdown_table(
        result["rows"],
        [
            ("system", "system", "s"),
            ("beam", "beam", "d"),
            ("utterances", "utts", "d"),
            ("audio_s", "audio s", ".1f"),
            ("compute_s", "compute s", ".2f"),
            ("rtf", "RTF", ".4f"),
            ("wer_pct", "WER %", ".2f"),
            ("identical_vs_reference", f"identical to {REFERENCE}", ".1%"),
        ],
    )
    table += (
        f"\n\n{args.threads} thread(s) for every system; one timed run per file after a warm-up; "
        f"faster-whisper {faster_whisper.__version__}, CTranslate2 {ctranslate2.__version__}.\n"
    )
    write_results(args.out, payload, table, "python " + " ".join(sys.argv))
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
