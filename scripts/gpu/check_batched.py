"""Check the batched forward of dyn_model.py against splitasr's Whisper (CPU, float32).

* log-mel with the packed filter bank == ``audio.whisper_log_mel``;
* batched student (trimmed encoder, key-padding mask, margin 0 and margin m) == each item
  through ``load_whisper(trim=True)`` (``head`` at block4, alone);
* batched reference (1500 frames) == the padded model's output;
* teacher-forced decoder logits, batched with cross-attention masks == splitasr's
  ``TextDecoder`` on each item's own memory (at the packed vocabulary's ids);
* batched greedy (restricted vocabulary) == ``WhisperDecoder`` greedy, loop guard off.

    PYTHONPATH=. python scripts/gpu/check_batched.py --data /work/main/.gpu
Exit status 1 if a difference exceeds its tolerance.
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from dyn_model import N_CTX, load_packed, log_mel, stem_frames  # noqa: E402
from finetune_dyn import frame_mask, greedy, reference_memory, split, student_memory  # noqa: E402

from splitasr import audio  # noqa: E402
from splitasr.model.whisper import WhisperDecoder, load_whisper  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="/work/main/.gpu")
    ap.add_argument("--items", default="0,31,45", help="eval.npz clips to use")
    ap.add_argument("--margin", type=int, default=7)
    ap.add_argument("--max-tokens", type=int, default=60)
    args = ap.parse_args()
    torch.manual_seed(0)
    torch.set_grad_enabled(False)
    from pathlib import Path

    data = Path(args.data)
    dyn, info = load_packed(data)
    filters = torch.from_numpy(np.load(data / "mel_filters.npy"))
    waves = split(np.load(data / "eval.npz"))
    picks = [int(i) for i in args.items.split(",")]
    waves = [torch.from_numpy(waves[i]) for i in picks]
    padded, trimmed = load_whisper(trim=False), load_whisper(trim=True)
    fails = []

    def report(name, diff, tol):
        ok = diff <= tol
        print(f"{'ok  ' if ok else 'FAIL'} {name}: max abs diff {diff:.3g} (tol {tol:g})")
        if not ok:
            fails.append(name)

    mels = [log_mel(w, filters) for w in waves]
    report("log-mel vs audio.whisper_log_mel", max(float((m - audio.whisper_log_mel(w)).abs().max()) for m, w in zip(mels, waves)), 1e-4)
    print("items: seconds", [round(len(w) / 16000, 2) for w in waves], "J", [stem_frames(m.shape[0]) for m in mels])

    # student, margin 0 and margin m
    for margin in (0, args.margin):
        lens = [min(stem_frames(m.shape[0]) + margin, N_CTX) for m in mels]
        mem, lt = student_memory(dyn, dyn.blocks, mels, lens)
        with_margin = trimmed.variant(trim_margin=margin)
        diff = 0.0
        for i, w in enumerate(waves):
            h, hl = with_margin.head(w[None], torch.tensor([len(w)]), "block4")
            assert int(hl[0]) == lens[i], (int(hl[0]), lens[i])
            diff = max(diff, float((mem[i, : lens[i]] - h[0, : lens[i]]).abs().max()))
        report(f"batched student (trimmed, margin {margin}) vs load_whisper(trim=True)", diff, 2e-3)

    # reference
    ref = reference_memory(dyn, mels)
    diff = 0.0
    for i, w in enumerate(waves):
        h, _ = padded(w[None], torch.tensor([len(w)]))
        diff = max(diff, float((ref[i] - h[0]).abs().max()))
    report("batched reference vs padded model output", diff, 2e-3)

    # decoder: teacher-forced logits with masks, vs splitasr's TextDecoder one item at a time
    dec = WhisperDecoder(padded)
    dec.max_repeats = 0
    ids = info["vocab_ids"]
    lens = [stem_frames(m.shape[0]) for m in mels]
    smem, lt = student_memory(dyn, dyn.blocks, mels, lens)
    rows, seqs_full = [], []
    for i in range(len(waves)):
        toks = dec.tokens(ref[i])[: args.max_tokens]
        seqs_full.append(toks)
        rows.append(info["prompt"] + [info["row"].get(t, info["eot_row"]) for t in toks])
    tmax = max(map(len, rows))
    tt = torch.full((len(rows), tmax), info["eot_row"])
    for i, r in enumerate(rows):
        tt[i, : len(r)] = torch.tensor(r)
    for name, memory, mask in (("padded", ref, None), ("trimmed", smem, frame_mask(lt, smem.shape[1]))):
        mine = dyn.text_decoder.logits(dyn.text_decoder.hidden(tt, memory, mask)[-1])
        diff = 0.0
        for i, r in enumerate(rows):
            own = memory[i : i + 1, : (lens[i] if mask is not None else N_CTX)]
            cross = padded.text_decoder.cross_kv(own)
            full = padded.text_decoder(torch.tensor([dec.prompt + [int(ids[x]) for x in r[2:]]]), [{} for _ in range(4)], cross, 0)
            diff = max(diff, float((mine[i, : len(r)] - full[0][:, ids]).abs().max()))
        report(f"teacher-forced logits ({name} memory, batched + masked) vs splitasr TextDecoder", diff, 5e-3)

    # greedy: splitasr's decoder restricted to the packed vocabulary must agree exactly;
    # unrestricted, it may pick a token outside it (reported, not a failure)
    outside = torch.ones(padded.config.n_vocab, dtype=torch.bool)
    outside[ids] = False
    full_sup, full_beg = dec._suppress, dec._suppress_begin
    for name, memory, mask in (("padded", ref, None), ("trimmed", smem, frame_mask(lt, smem.shape[1]))):
        mine, hit = greedy(dyn, memory, mask, info, args.max_tokens)
        same = same_full = 0
        for i in range(len(waves)):
            own = memory[i, : (lens[i] if mask is not None else N_CTX)]
            got = [int(ids[x]) for x in mine[i]]
            dec._suppress, dec._suppress_begin = full_sup | outside, full_beg | outside
            theirs = dec.tokens(own)[: args.max_tokens]
            dec._suppress, dec._suppress_begin = full_sup, full_beg
            full = dec.tokens(own)[: args.max_tokens]
            same += got == theirs
            same_full += got == full
            if got != theirs:
                print(f"   item {i}: mine {dec.text_of(got)!r}\n           splitasr {dec.text_of(theirs)!r}")
            if got != full:
                print(f"   item {i} (info) full-vocabulary greedy: {dec.text_of(full)!r}")
        tag = "ok  " if same == len(waves) else "FAIL"
        print(f"{tag} batched greedy ({name}) == WhisperDecoder greedy (same vocabulary) on {same}/{len(waves)} items; "
              f"== full-vocabulary greedy on {same_full}/{len(waves)}")
        if same != len(waves):
            fails.append(f"greedy {name}")
    print("FAILED: " + ", ".join(fails) if fails else "all checks passed")
    return 1 if fails else 0


if __name__ == "__main__":
    sys.exit(main())
