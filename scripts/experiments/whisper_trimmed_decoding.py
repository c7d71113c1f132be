"""Can Whisper tiny.en decode from a *trimmed* encoder (audio frames only)? Three experiments.

A trimmed encoder is 3-5x cheaper than the padded one (1500 frames per window), which is
what a real-time factor of 0.05 would need, but the decoder then often loops. These are
the measurements behind docs/whisper.md ("Trimming the encoder"); none is shipped.

    S=scripts/experiments/whisper_trimmed_decoding.py
    M=data/corpus/test_digits_heldout_speaker.jsonl
    # 1. pad the trimmed encoder output with what padding alone gives at block4
    python $S approx --manifest $M --step 10 --limit 30
    # 2. Whisper's own remedy: detect a loop, fall back to the padded encoder
    python $S fallback --manifest $M --step 10 --limit 30
    # 3. learn "end of audio" frames appended to the trimmed memory, plus the decoder's
    #    cross-attention LayerNorms and queries, distilled from the padded model's tokens
    python $S prepare --out /tmp/end.npz --sentences 500 --digits 300
    python $S train --data /tmp/end.npz --out /tmp/end.pt
    python $S end-frames --adapter /tmp/end.pt --manifest $M --step 10 --limit 30
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from splitasr.audio import load_audio
from splitasr.model.whisper import load_whisper
from splitasr.text import normalize
from splitasr.wer import error_rates


def _utterances(manifest: str, step: int, limit: int) -> list[tuple[torch.Tensor, str]]:
    root = Path(manifest).parent
    rows = [json.loads(line) for line in open(manifest)][::step][:limit]
    return [(torch.as_tensor(load_audio(root / r["audio"])), r["text"]) for r in rows]


def _encode(model, wave: torch.Tensor, trim: bool) -> torch.Tensor:
    """Encoder output ``(T, 384)`` of one wave, trimmed or padded."""
    h, lens = model.variant(trim=trim)(wave[None])
    return h[0, : int(lens[0])]


def _greedy(decoder, memory: torch.Tensor, cap: int, stop=None) -> tuple[list[int], bool]:
    """Greedy tokens from ``memory (T, C)``, at most ``cap``; ``stop(ids)`` ends early.
    Returns the tokens and whether the end token came."""
    logits, caches, cross = decoder._start(memory, 1)
    out: list[int] = []
    offset = len(decoder.prompt)
    for step in range(cap):
        token = int(decoder._mask(logits[0], step).argmax())
        if token == decoder.config.eot:
            return out, True
        out.append(token)
        if stop is not None and stop(out):
            return out, False
        logits = decoder.text(torch.tensor([[token]]), caches, cross, offset + step)[:, -1]
    return out, False


def _looping(ids: list[int]) -> bool:
    """The last 1-5 tokens repeated four times in a row."""
    for n in range(1, 6):
        if len(ids) >= 4 * n and all(ids[-n * (k + 1) : len(ids) - n * k] == ids[-n:] for k in range(1, 4)):
            return True
    return False


def _report(name: str, refs: list[str], padded: list[str], other: list[str], t_pad: float, t_other: float):
    for p, o, r in zip(padded, other, refs, strict=True):
        if p != o:
            print(f"padded : {p}\n{name:7}: {o}\nref    : {r}")
    wer_p, wer_o = error_rates(refs, padded)["wer"], error_rates(refs, other)["wer"]
    same = sum(p == o for p, o in zip(padded, other, strict=True))
    print(
        f"{len(refs)} utts: padded WER {100 * wer_p:.1f} % ({t_pad:.1f} s), {name} {100 * wer_o:.1f} % "
        f"({t_other:.1f} s), same transcript {same}/{len(refs)}"
    )


def run_compare(args, variant) -> None:
    model = load_whisper().eval()
    decoder = model.make_decoder(beam=1)
    refs, padded, other, t_pad, t_other = [], [], [], 0.0, 0.0
    with torch.inference_mode():
        for wave, text in _utterances(args.manifest, args.step, args.limit):
            t0 = time.perf_counter()
            a = decoder.decode(_encode(model, wave, trim=False))
            t1 = time.perf_counter()
            b = variant(model, decoder, wave)
            t_pad, t_other = t_pad + t1 - t0, t_other + time.perf_counter() - t1
            refs.append(normalize(text))
            padded.append(normalize(a))
            other.append(normalize(b))
    _report(args.command, refs, padded, other, t_pad, t_other)


def approx(model, decoder, wave):
    h = _encode(model, wave, trim=True)
    full, lens = model.restore_padding(h[None], torch.tensor([h.shape[0]]), "block4", approximate=True)
    return decoder.decode(full[0], int(lens[0]))


def fallback(model, decoder, wave):
    h = _encode(model, wave, trim=True)
    ids, ended = _greedy(decoder, h, int(8 * wave.shape[0] / 16000) + 10, _looping)
    return decoder.text_of(ids) if ended else decoder.decode(_encode(model, wave, trim=False))


def prepare(args) -> None:
    """Trimmed encoder outputs, the padded model's frames after the audio, its greedy tokens."""
    root = Path("data/corpus")
    rng = random.Random(0)
    sent = [json.loads(line) for line in open(root / "train_sentences.jsonl")]
    dig = [json.loads(line) for line in open(root / "train_digits.jsonl")]
    rows = [r for r in rng.sample(sent, args.sentences) + rng.sample(dig, args.digits) if r["duration"] <= 12]
    model = load_whisper().eval()
    decoder = model.make_decoder(beam=1)
    mems, ids, after = [], [], []
    with torch.inference_mode():
        for i, r in enumerate(rows):
            wave = torch.as_tensor(load_audio(root / r["audio"]))
            h = _encode(model, wave, trim=True)
            padded = _encode(model, wave, trim=False)
            mems.append(h.numpy().astype(np.float16))
            ids.append(np.array(decoder.tokens(padded) + [decoder.config.eot], np.int32))
            after.append(padded[h.shape[0] : h.shape[0] + 32].numpy())
            if i % 50 == 0:
                print(i, len(rows), flush=True)
    np.savez(
        args.out,
        mem=np.concatenate(mems),
        mem_lens=np.array([len(a) for a in mems]),
        ids=np.concatenate(ids),
        id_lens=np.array([len(a) for a in ids]),
        post=np.mean(after, 0),
    )


def train(args) -> None:
    """Teacher-forced cross-entropy on the padded model's tokens; only the end frames, the
    cross-attention LayerNorms and query projections learn; the last 40 utterances validate."""
    torch.manual_seed(0)
    z = np.load(args.data)
    mem = torch.from_numpy(z["mem"].astype(np.float32))
    ids = torch.from_numpy(z["ids"]).long()
    mo = np.concatenate([[0], np.cumsum(z["mem_lens"])])
    io = np.concatenate([[0], np.cumsum(z["id_lens"])])
    model = load_whisper().eval()
    text = model.text_decoder
    for p in text.parameters():
        p.requires_grad_(False)
    end = torch.nn.Parameter(torch.from_numpy(z["post"][: args.frames]).float().clone())
    extra = []
    for b in text.blocks:
        for p in [*b.cross_attn_ln.parameters(), *b.cross_attn.query.parameters()]:
            p.requires_grad_(True)
            extra.append(p)
    opt = torch.optim.Adam([{"params": [end], "lr": 5e-3}, {"params": extra, "lr": 1e-3}])
    prompt = [model.config.sot, model.config.no_timestamps]
    n = len(z["mem_lens"])
    train_ids, val_ids = list(range(n - 40)), list(range(n - 40, n))

    def loss_of(i: int):
        memory = torch.cat([mem[mo[i] : mo[i + 1]], end])[None]
        target = ids[io[i] : io[i + 1]]
        tokens = torch.tensor(prompt + target[:-1].tolist())[None]
        logits = text(tokens, [{} for _ in text.blocks], text.cross_kv(memory), 0)[0, len(prompt) - 1 :]
        return F.cross_entropy(logits, target), (logits.argmax(-1) == target).float().mean()

    def validate() -> tuple[float, float]:
        with torch.no_grad():
            out = [loss_of(i) for i in val_ids]
        return float(np.mean([float(a) for a, _ in out])), float(np.mean([float(b) for _, b in out]))

    print("before: val loss, token accuracy", validate(), flush=True)
    g = torch.Generator().manual_seed(0)
    for epoch in range(args.epochs):
        order = [train_ids[k] for k in torch.randperm(len(train_ids), generator=g)]
        for s in range(0, len(order), 8):
            opt.zero_grad()
            for i in order[s : s + 8]:
                (loss_of(i)[0] / 8).backward()
            opt.step()
        print(epoch, "val loss, token accuracy", validate(), flush=True)
    keep = {k: v for k, v in text.state_dict().items() if "cross_attn_ln" in k or "cross_attn.query" in k}
    torch.save({"E": end.detach(), "dec": keep}, args.out)


def run_end_frames(args) -> None:
    adapter = torch.load(args.adapter, weights_only=True)
    adapted = load_whisper().eval()
    adapted.text_decoder.load_state_dict(adapter["dec"], strict=False)
    adapted_decoder = adapted.make_decoder(beam=1)

    def variant(model, decoder, wave):
        h = torch.cat([_encode(model, wave, trim=True), adapter["E"]])
        ids, _ = _greedy(adapted_decoder, h, int(10 * wave.shape[0] / 16000) + 10)
        return decoder.text_of(ids)

    run_compare(args, variant)


def main() -> None:
    torch.set_num_threads(2)
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="command", required=True)
    for name in ("approx", "fallback", "end-frames"):
        p = sub.add_parser(name)
        p.add_argument("--manifest", required=True)
        p.add_argument("--step", type=int, default=10, help="every Nth utterance")
        p.add_argument("--limit", type=int, default=30)
        if name == "end-frames":
            p.add_argument("--adapter", required=True)
    p = sub.add_parser("prepare")
    p.add_argument("--out", required=True)
    p.add_argument("--sentences", type=int, default=500)
    p.add_argument("--digits", type=int, default=300)
    p = sub.add_parser("train")
    p.add_argument("--data", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--frames", type=int, default=16)
    p.add_argument("--epochs", type=int, default=6)
    args = ap.parse_args()
    if args.command == "approx":
        run_compare(args, approx)
    elif args.command == "fallback":
        run_compare(args, fallback)
    elif args.command == "end-frames":
        run_end_frames(args)
    elif args.command == "prepare":
        prepare(args)
    else:
        train(args)


if __name__ == "__main__":
    main()
