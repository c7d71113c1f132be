"""Evaluate audio-context fine-tuned encoder blocks (finetune_dyn.py) on the CPU.

Loads Whisper tiny.en as splitasr does, overwrites ``stages.block1..4`` (incl. ln_post)
with the float16 weights of ``--weights``, and compares, with greedy and beam search:

* ``padded``: the base model, standard 30-s padding (the reference);
* ``dyn``: the fine-tuned blocks, trimmed encoder (audio frames only, ``--margin``);
* ``base-trimmed`` (``--with-base-trimmed``): the base model trimmed (loops, slow).

Data: FSDD ``lucas`` digits (default; reference text = the digit word) or ``--manifest``.
WER through splitasr.wer (numerals normalised); ``loops`` = outputs where the loop guard
fired (a unit of 1-10 tokens repeated 4 times) or the token limit was hit.

    PYTHONPATH=. python scripts/gpu/apply_dyn_weights.py --weights dyn_blocks.safetensors --limit 60
        [--decoder-precision int8]
    PYTHONPATH=. python scripts/gpu/apply_dyn_weights.py --weights ... \
        --manifest data/corpus/test_sentences_heldout_voices.jsonl --limit 40
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from safetensors.torch import load_file

import splitasr.model.whisper as W
import splitasr.model.whisper.decoding as WD
from splitasr import audio
from splitasr.wer import error_rates

DIGITS = "zero one two three four five six seven eight nine".split()
FIRED = [0]
_orig_cut = WD._cut_repeat


def _counting_cut(ids, times):
    if times and WD._repeat(ids, times):
        FIRED[0] += 1
    return _orig_cut(ids, times)


WD._cut_repeat = _counting_cut  # count loop-guard firings (greedy and beam)


def load_dyn(weights: str, margin: int = 0, precision: str = "float32") -> W.WhisperModel:
    model = W.load_whisper(trim=True, decoder_precision=precision)
    sd = load_file(weights)
    own = model.state_dict()
    bad = [k for k in sd if k not in own or not k.startswith("stages.block") or own[k].shape != sd[k].shape]
    if bad:
        raise SystemExit(f"{weights}: unexpected tensors {bad[:5]}")
    missing = [k for k in own if k.startswith("stages.block") and k != "stages.block1.positions" and k not in sd]
    if missing:
        raise SystemExit(f"{weights}: missing tensors {missing[:5]}")
    model.load_state_dict({k: v.float() for k, v in sd.items()}, strict=False)
    return model.eval().prepare().variant(trim_margin=margin)


def data(args) -> list[tuple[str, str]]:
    if args.manifest:
        from splitasr.manifest import read_manifest

        root = Path(args.manifest).parent
        items = [(str(u.resolve(root)), u.text) for u in read_manifest(args.manifest)]
    else:
        files = sorted(Path(args.fsdd).glob("*_lucas_*.wav"), key=lambda p: (int(p.stem.split("_")[2]), p.stem))
        items = [(str(p), DIGITS[int(p.stem.split("_")[0])]) for p in files]
    items = items[:: args.every]
    return items[: args.limit] if args.limit else items


def run(model, items, beam: int, waves) -> dict:
    dec = model.make_decoder(beam=beam)
    FIRED[0] = 0
    hyps, limit_hits, t_enc, t_dec = [], 0, 0.0, 0.0
    with torch.inference_mode():
        for (path, _), x in zip(items, waves, strict=True):
            t0 = time.perf_counter()
            h, hl = model(x[None], torch.tensor([x.shape[0]]))
            t1 = time.perf_counter()
            hyps.append(dec.decode(h[0], int(hl[0])))
            t_dec += time.perf_counter() - t1
            t_enc += t1 - t0
            limit_hits += len(dec.tokenizer.encode(hyps[-1]).ids) >= model.config.max_new_tokens - 2
    r = error_rates([t for _, t in items], hyps)
    return {
        "wer": r["wer"],
        "loops": FIRED[0] + limit_hits,
        "encoder_s": round(t_enc, 2),
        "decoder_s": round(t_dec, 2),
        "hyps": hyps,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--weights", required=True)
    ap.add_argument("--manifest", default="")
    ap.add_argument("--fsdd", default="/work/shared/data/fsdd/recordings")
    ap.add_argument("--limit", type=int, default=0)
    ap.add_argument("--every", type=int, default=1, help="every k-th utterance")
    ap.add_argument("--beams", default="1,5")
    ap.add_argument("--margin", type=int, default=0, help="padding frames the trimmed encoder keeps")
    ap.add_argument("--with-base-trimmed", action="store_true")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--decoder-precision", default="float32", help="float32 or int8 text decoder (both models)")
    ap.add_argument("--out", default="", help="write the results as JSON here")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    items = data(args)
    waves = [torch.from_numpy(audio.load_audio(p)) for p, _ in items]
    precision = args.decoder_precision
    models = {
        "padded": W.load_whisper(trim=False, decoder_precision=precision),
        "dyn": load_dyn(args.weights, args.margin, precision),
    }
    if args.with_base_trimmed:
        models["base-trimmed"] = W.load_whisper(trim=True)
    print(f"{len(items)} utterances ({'manifest ' + args.manifest if args.manifest else 'FSDD lucas digits'}), "
          f"{sum(len(w) for w in waves) / 16000:.0f} s audio")
    results = {}
    print(f"{'model':14s} {'beam':>4s} {'WER %':>7s} {'loops':>5s} {'enc s':>6s} {'dec s':>6s}")
    for beam in [int(b) for b in args.beams.split(",")]:
        for name, model in models.items():
            r = run(model, items, beam, waves)
            results[f"{name}/beam{beam}"] = r
            print(f"{name:14s} {beam:4d} {100 * r['wer']:7.2f} {r['loops']:5d} {r['encoder_s']:6.1f} {r['decoder_s']:6.1f}", flush=True)
        p, d = results[f"padded/beam{beam}"], results[f"dyn/beam{beam}"]
        print(f"  beam {beam}: dyn - padded = {100 * (d['wer'] - p['wer']):+.2f} WER points (target <= +0.5), "
              f"encoder time x{d['encoder_s'] / max(p['encoder_s'], 1e-9):.2f}")
        diff = [(i, a, b) for i, (a, b) in enumerate(zip(p["hyps"], d["hyps"], strict=True)) if a != b]
        for i, a, b in diff[:5]:
            print(f"    {Path(items[i][0]).name}: padded {a!r} | dyn {b!r}")
    if args.out:
        Path(args.out).write_text(json.dumps({"items": [p for p, _ in items], "results": results}, indent=1))


if __name__ == "__main__":
    main()
