"""Issue 16 groundwork: Whisper's text decoder blocks with int8 Linear layers
(``torch.ao.quantization.quantize_dynamic``) against float32, on real speech.

    python scripts/whisper_int8_decoder_check.py [--manifest data/corpus/test_digits_heldout_speaker.jsonl]
        [--limit 100] [--threads 2]

Greedy transcripts of the whole model before and after quantising the decoder blocks (the
tied output layer is not a Linear and stays float32): WER of each against the references
(numerals normalised) and how many normalised transcripts are identical.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--manifest", default="data/corpus/test_digits_heldout_speaker.jsonl")
    ap.add_argument("--limit", type=int, default=100)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    import torch

    from splitasr.audio import load_audio
    from splitasr.manifest import read_manifest
    from splitasr.model.registry import load_model
    from splitasr.pipeline import recognise
    from splitasr.text import normalize
    from splitasr.wer import error_rates

    warnings.filterwarnings("ignore", category=DeprecationWarning)
    torch.set_num_threads(args.threads)
    model = load_model("whisper-tiny.en")
    decoder = model.make_decoder(beam=1)
    manifest = Path(args.manifest)
    utts = read_manifest(manifest)[: args.limit]
    waves = [torch.from_numpy(load_audio(u.resolve(manifest.parent))) for u in utts]
    refs = [normalize(u.text) for u in utts]
    fp32 = [normalize(recognise(model, w, decoder)) for w in waves]
    blocks = model.text_decoder.blocks
    quantize = torch.ao.quantization.quantize_dynamic
    model.text_decoder.blocks = quantize(blocks, {torch.nn.Linear}, dtype=torch.qint8)
    int8 = [normalize(recognise(model, w, decoder)) for w in waves]
    print("float32 blocks", error_rates(refs, fp32))
    print("int8 blocks   ", error_rates(refs, int8))
    same = sum(a == b for a, b in zip(fp32, int8, strict=True))
    print(f"identical normalised transcripts: {same}/{len(utts)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
