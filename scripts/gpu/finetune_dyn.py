"""Audio-context fine-tuning of Whisper tiny.en (issue 16), for one GPU under a hard budget.

A frozen reference runs the standard padded encoder (3000 feature frames, 1500 encoder
frames); a trained copy of encoder blocks 1-4 (incl. ln_post) runs on the audio frames only
(``J = (c + 1) // 2 + 1`` stem frames, plus a random margin of -32..+64 frames, at most a
third of ``J`` either way; FUTO used +-64, but our clips end tightly, so a deep cut would
remove words). With teacher forcing on the reference's own greedy transcript, the loss is
the mean squared difference of the decoder hidden states (outputs of the 4 decoder blocks
and the final LayerNorm). Stem, front end and decoder stay frozen.

Data (all made here from ``--data``, see pack_data.py): worker processes build random
examples from TTS sentences and FSDD digits (george/jackson/nicolas): single clips,
connected digits, concatenations with pauses up to 29 s, long silences, noise-only clips;
speed 0.9/1.0/1.1, gain, additive noise. The GPU labels chunks of them with the padded
reference (batched greedy over the packed vocabulary, then the teacher-forced hidden
states, float32/TF32), keeps them in a pool and refreshes the pool during training.

Only torch, numpy, scipy and safetensors are needed; run from the repo root:

    PYTHONUNBUFFERED=1 python3 scripts/gpu/finetune_dyn.py --data .gpu --out $OUT --max-minutes 7

``--max-minutes`` bounds the whole script (data, labelling, training, evaluation, saving),
counted from its start. Writes ``OUT/dyn_blocks.safetensors`` (blocks 1-4, float16,
splitasr names ``stages.blockN.*``; also every ``--ckpt-every`` s), ``OUT/metrics.json``
and ``OUT/log.txt``.
"""

from __future__ import annotations

import time

T_START = time.time()

import argparse  # noqa: E402
import copy  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import multiprocessing as mp  # noqa: E402
import os  # noqa: E402
import queue  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
from scipy.signal import resample_poly  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from dyn_model import N_CTX, WINDOW_FRAMES, block_state, load_packed, log_mel, stem_frames  # noqa: E402

SR = 16000
LOG_FILE = None


def log(msg: str) -> None:
    line = f"[{time.time() - T_START:6.1f}s] {msg}"
    print(line, flush=True)
    if LOG_FILE is not None:
        with open(LOG_FILE, "a") as f:
            f.write(line + "\n")


# ------------------------------------------------------------------ data (CPU, numpy) --


def decode_audio(codes: np.ndarray) -> np.ndarray:
    if codes.dtype == np.int16:
        return codes.astype(np.float32) / 32767
    y = codes.astype(np.float32) / 255 * 2 - 1
    return (np.sign(y) * ((256.0 ** np.abs(y)) - 1) / 255).astype(np.float32)


def split(npz) -> list[np.ndarray]:
    audio, off = decode_audio(npz["audio"]), npz["offsets"]
    return [audio[off[i] : off[i + 1]] for i in range(len(off) - 1)]


SPEEDS = ((1, 1), (10, 9), (10, 11))  # (up, down): speed 1.0, 0.9, 1.1


class Clips:
    """Base clips at 16 kHz in three speeds: ``tts[i][s]``, ``digits[spk][i][s]``."""

    def __init__(self, folder: Path):
        tts = split(np.load(folder / "tts.npz"))
        fz = np.load(folder / "fsdd.npz")
        fsdd = split(fz)
        spk = fz["speaker"]

        def speeds(w):
            return [w if u == d else resample_poly(w, u, d).astype(np.float32) for u, d in SPEEDS]

        self.tts = [speeds(_trim(w)) for w in tts]
        self.digits = [[] for _ in range(int(spk.max()) + 1)]
        for w, s in zip(fsdd, spk, strict=True):
            self.digits[int(s)].append(speeds(_trim(resample_poly(w, 2, 1).astype(np.float32))))


def _trim(w: np.ndarray, thr: float = 0.01) -> np.ndarray:
    """Cut leading/trailing near-silence (keep 30 ms)."""
    idx = np.nonzero(np.abs(w) > thr * max(np.abs(w).max(), 1e-6))[0]
    if not len(idx):
        return w
    a, b = max(idx[0] - 480, 0), min(idx[-1] + 480, len(w))
    return w[a:b]


KIND_P = (0.25, 0.25, 0.30, 0.15, 0.05, 0.0)  # sentence, digits, concatenation, silences, no speech, short


def make_example(clips: Clips, rng: np.random.Generator, max_s: float) -> np.ndarray:
    """One random training waveform (16 kHz float32), 0.5 .. max_s seconds."""

    def sil(lo, hi):
        return np.zeros(int(SR * rng.uniform(lo, hi)), np.float32)

    speed = int(rng.choice(3, p=(0.5, 0.25, 0.25)))

    def sentence():
        return clips.tts[rng.integers(len(clips.tts))][speed]

    def digit_run(k):
        spk = clips.digits[rng.integers(len(clips.digits))]
        parts = []
        for _ in range(k):
            parts += [spk[rng.integers(len(spk))][speed], sil(0.0, 0.5)]
        return np.concatenate(parts)

    kind = rng.choice(6, p=KIND_P)
    if kind == 5:  # a single short command: one or two isolated digits, tight silences
        parts = [digit_run(int(rng.integers(1, 3)))[: -int(SR * 0.01) or None]]
    elif kind == 0:  # one sentence
        parts = [sentence()]
    elif kind == 1:  # connected digits, one speaker
        parts = [digit_run(int(rng.integers(1, 11)))]
    elif kind == 2:  # concatenation of sentences and digit runs with pauses, up to max_s
        target = rng.uniform(3.0, max_s)
        parts, total = [], 0.0
        while total < target:
            seg = sentence() if rng.random() < 0.6 else digit_run(int(rng.integers(1, 8)))
            if parts and total + len(seg) / SR > max_s - 0.5:
                break
            parts += [seg, sil(0.1, 1.5)]
            total += len(parts[-2]) / SR + len(parts[-1]) / SR
    elif kind == 3:  # speech with long silences around it
        seg = sentence() if rng.random() < 0.5 else digit_run(int(rng.integers(1, 6)))
        parts = [sil(0.0, 3.0), seg, sil(0.5, 6.0)]
    else:  # no speech: silence or noise only
        parts = [sil(0.5, 10.0) + 1e-4]
    if rng.random() < 0.5:
        parts.insert(0, sil(0.0, 0.5))
    if rng.random() < 0.7:  # recordings usually end with some silence
        parts.append(sil(0.0, 0.6))
    wave = np.concatenate(parts)[: int(max_s * SR)]
    if len(wave) < SR // 2:
        wave = np.concatenate([wave, np.zeros(SR // 2 - len(wave), np.float32)])
    peak = np.abs(wave).max()
    if peak > 1e-3:
        wave = wave * (rng.uniform(0.05, 0.95) / peak)
    if kind == 4 or rng.random() < 0.5:  # additive noise: white or low-passed
        noise = rng.standard_normal(len(wave)).astype(np.float32)
        if rng.random() < 0.5:
            a = rng.uniform(0.8, 0.99)
            from scipy.signal import lfilter

            noise = lfilter([1 - a], [1, -a], noise).astype(np.float32)
            noise /= max(noise.std(), 1e-6)
        speech_rms = float(np.sqrt(np.mean(wave**2))) if kind != 4 else 0.05
        snr = rng.uniform(5, 40)
        wave = wave + noise * (max(speech_rms, 1e-4) / (10 ** (snr / 20)))
    return np.clip(wave, -1, 1).astype(np.float32)


CLIPS: Clips | None = None  # set in the parent before the workers fork


def worker(seed: int, q, chunk: int, max_s: float) -> None:
    torch.set_num_threads(1)
    rng = np.random.default_rng(seed)
    while True:
        waves = []
        while len(waves) < chunk:
            try:
                waves.append(make_example(CLIPS, rng, max_s))
            except Exception as exc:  # a bad draw must not stop the worker
                print(f"worker {seed}: example failed: {exc!r}", flush=True)
        q.put([np.round(w * 32767).astype(np.int16) for w in waves])


# ------------------------------------------------------------------ GPU side --------


class Item:
    __slots__ = ("mel", "c", "J", "tokens", "target")

    def __init__(self, mel, tokens, target):
        self.mel = mel  # (c, 80) fp16 on device
        self.c = mel.shape[0]
        self.J = stem_frames(self.c)
        self.tokens = tokens  # (T,) long on device: prompt + transcript rows
        self.target = target  # (5, T, 384) fp16 on device


def mels_of(waves, filters, device) -> list[torch.Tensor]:
    out = []
    for w in waves:
        x = torch.from_numpy(w.astype(np.float32) / (32767 if w.dtype == np.int16 else 1)).to(device)
        out.append(log_mel(x, filters))
    return out


def padded_batch(mels: list[torch.Tensor], frames: int) -> torch.Tensor:
    """Zero-padded ``(B, frames, 80)`` float32 (zeros: Whisper's padding value)."""
    x = mels[0].new_zeros((len(mels), frames, mels[0].shape[1]), dtype=torch.float32)
    for i, m in enumerate(mels):
        n = min(m.shape[0], frames)
        x[i, :n] = m[:n].float()
    return x


def reference_memory(model, mels):
    stem = model.stages["stem"](padded_batch(mels, WINDOW_FRAMES), N_CTX)
    return model.encode(stem)


def student_memory(model, blocks, mels, lens):
    """Trimmed encoder: each item's first ``lens[i]`` stem frames only (key-padding mask)."""
    lmax = int(max(lens))
    with torch.no_grad(), torch.autocast(device_type=mels[0].device.type, enabled=False):
        stem = model.stages["stem"](padded_batch(mels, 2 * lmax + 1), lmax)  # frozen, float32
    lt = torch.tensor(lens, device=stem.device)
    return model.encode(stem, lt, blocks), lt


def frame_mask(lens: torch.Tensor, total: int) -> torch.Tensor:
    return torch.arange(total, device=lens.device)[None, :] < lens[:, None]


def greedy(model, memory, mask, info, max_tokens):
    return model.text_decoder.greedy(
        memory, mask, info["prompt"], info["suppress"], info["suppress_begin"], info["eot_row"], max_tokens
    )


@torch.no_grad()
def label(model, info, mels, args, device) -> tuple[list[Item], int]:
    """Reference greedy transcripts and teacher-forced hidden states for ``mels``."""
    items, looped = [], 0
    for a in range(0, len(mels), args.teacher_batch):
        part = mels[a : a + args.teacher_batch]
        memory = reference_memory(model, part)
        seqs, hit = greedy(model, memory, None, info, args.teacher_max_tokens)
        keep = [i for i in range(len(part)) if not hit[i]]
        looped += len(part) - len(keep)
        if not keep:
            continue
        toks = [info["prompt"] + seqs[i][: args.max_target_tokens] for i in keep]
        tmax = max(map(len, toks))
        tt = torch.full((len(keep), tmax), info["eot_row"], dtype=torch.long, device=device)
        for r, t in enumerate(toks):
            tt[r, : len(t)] = torch.tensor(t, device=device)
        states = model.text_decoder.hidden(tt, memory[keep])
        stacked = torch.stack(states, 1).to(torch.float16)  # (B, 5, T, C)
        for r, i in enumerate(keep):
            items.append(Item(part[i].to(torch.float16), tt[r, : len(toks[r])].clone(), stacked[r, :, : len(toks[r])].clone()))
    return items, looped


def repeat_loop(ids: list[int], times: int = 4, unit_max: int = 10) -> bool:
    for n in range(1, unit_max + 1):
        if len(ids) < n * times:
            break
        unit = ids[-n:]
        if all(ids[len(ids) - n * (k + 1) : len(ids) - n * k] == unit for k in range(1, times)):
            return True
    return False


def edit_distance(a: list[int], b: list[int]) -> int:
    prev = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        cur = [i] + [0] * len(b)
        for j, y in enumerate(b, 1):
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (x != y))
        prev = cur
    return prev[-1]


@torch.no_grad()
def evaluate(model, blocks, info, eval_mels, ref_seqs, args, tag):
    """Student trimmed (margin 0) vs reference padded greedy tokens on the eval set."""
    t0 = time.time()
    seqs, hits = [], []
    for a in range(0, len(eval_mels), args.eval_batch):
        part = eval_mels[a : a + args.eval_batch]
        lens = [stem_frames(m.shape[0]) for m in part]
        memory, lt = student_memory(model, blocks, part, lens)
        s, h = greedy(model, memory, frame_mask(lt, memory.shape[1]), info, args.eval_max_tokens)
        seqs += s
        hits += h
    exact = sum(s == r for s, r in zip(seqs, ref_seqs, strict=True))
    errs = sum(edit_distance(r, s) for s, r in zip(seqs, ref_seqs, strict=True))
    words = sum(max(len(r), 1) for r in ref_seqs)
    loops = sum(repeat_loop(s) for s in seqs)
    vs = info["meta"]["vocab_strings"]
    res = {
        "exact_match": exact / len(seqs),
        "exact": exact,
        "n": len(seqs),
        "hit_token_limit": int(sum(hits)),
        "repeat_loops": int(loops),
        "token_error_rate_vs_reference": errs / words,
        "seconds": round(time.time() - t0, 2),
        "examples": [
            {"ref": "".join(vs[t] for t in r), "student": "".join(vs[t] for t in s)[:200]}
            for r, s in list(zip(ref_seqs, seqs, strict=True))[:: max(len(seqs) // 6, 1)]
        ],
    }
    kinds = info["meta"]["eval_kinds"]
    for k in sorted(set(kinds)):
        idx = [i for i, kk in enumerate(kinds) if kk == k]
        res[f"exact_{k}"] = f"{sum(seqs[i] == ref_seqs[i] for i in idx)}/{len(idx)}"
        res[f"hit_limit_{k}"] = int(sum(hits[i] for i in idx))
    log(
        f"eval {tag}: exact {exact}/{len(seqs)} (tts {res.get('exact_tts')}, digits {res.get('exact_digits')}), "
        f"hit token limit {res['hit_token_limit']}, repeat loops {loops}, "
        f"token err vs ref {res['token_error_rate_vs_reference']:.3f} ({res['seconds']} s)"
    )
    for e in res["examples"][:3]:
        log(f"   ref: {e['ref'][:90]!r}\n          stu: {e['student'][:90]!r}")
    return res


def batches_of(pool: list[Item], batch: int, rng: np.random.Generator):
    """Length-bucketed batches over a random permutation of the pool."""
    perm = rng.permutation(len(pool))
    group = batch * 16
    out = []
    for a in range(0, len(perm), group):
        g = sorted(perm[a : a + group], key=lambda i: pool[i].J)
        out += [[pool[i] for i in g[b : b + batch]] for b in range(0, len(g), batch)]
    rng.shuffle(out)
    return out


def train_step(model, blocks, opt, items, args, rng, device, amp, want_acc=False):
    lens = []
    for it in items:
        lo, hi = min(args.margin_neg, it.J // 3), min(args.margin, it.J // 3)
        lens.append(int(np.clip(it.J + rng.integers(-lo, hi + 1), 1, N_CTX)))
    tmax = max(it.tokens.shape[0] for it in items)
    tt = torch.full((len(items), tmax), 0, dtype=torch.long, device=device)
    tgt = torch.zeros((len(items), 5, tmax, items[0].target.shape[-1]), dtype=torch.float16, device=device)
    tmask = torch.zeros((len(items), tmax), dtype=torch.bool, device=device)
    for i, it in enumerate(items):
        n = it.tokens.shape[0]
        tt[i, :n], tgt[i, :, :n], tmask[i, :n] = it.tokens, it.target, True
    with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=amp):
        memory, lt = student_memory(model, blocks, [it.mel for it in items], lens)
        states = model.text_decoder.hidden(tt, memory, frame_mask(lt, memory.shape[1]))
    w = tmask[:, None, :, None].float()
    denom = w.sum() * 5 * states[0].shape[-1]
    loss = sum(((s.float() - tgt[:, k].float()) ** 2 * w[:, 0]).sum() for k, s in enumerate(states)) / denom
    opt.zero_grad(set_to_none=True)
    loss.backward()
    gnorm = torch.nn.utils.clip_grad_norm_([p for b in blocks for p in b.parameters()], args.clip)
    opt.step()
    acc = None
    if want_acc:
        with torch.no_grad():
            logits = model.text_decoder.logits(states[-1].float()).masked_fill(args.suppress, float("-inf"))
            nxt = torch.cat([tt[:, 1:], torch.zeros_like(tt[:, :1])], 1)
            # the position after the last token predicts the end token
            last = tmask.sum(1) - 1
            nxt[torch.arange(len(items)), last] = -1
            ok = (logits.argmax(-1) == nxt) | ((nxt == -1) & (logits.argmax(-1) == args.eot_row))
            valid = tmask & (torch.arange(tmax, device=device)[None] >= 1)  # from the 2nd prompt token on
            acc = float((ok & valid).sum() / valid.sum())
    return loss, gnorm, acc


def save_ckpt(blocks, out: Path, metrics: dict) -> None:
    from safetensors.torch import save_file

    tmp = out / "dyn_blocks.safetensors.tmp"
    save_file(block_state(blocks), str(tmp), metadata={"what": "whisper-tiny.en encoder blocks 1-4 (audio-context fine-tuned)"})
    os.replace(tmp, out / "dyn_blocks.safetensors")
    (out / "metrics.json").write_text(json.dumps(metrics, indent=1))


def main() -> None:
    global LOG_FILE, CLIPS, KIND_P
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default=".gpu")
    ap.add_argument("--out", default=os.environ.get("OUT", "out_dyn"))
    ap.add_argument("--max-minutes", type=float, default=7.0, help="wall budget of the whole script")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--lr", type=float, default=1e-5, help="peak Adam learning rate")
    ap.add_argument("--min-lr-frac", type=float, default=0.1, help="cosine (over wall time) ends at this x peak")
    ap.add_argument("--warmup", type=int, default=50, help="linear warm-up steps")
    ap.add_argument("--clip", type=float, default=1.0)
    ap.add_argument("--margin", type=int, default=64, help="student frames: up to this many past the audio (at most J // 3)")
    ap.add_argument("--margin-neg", type=int, default=32, help="... and up to this many cut from its end (at most J // 3)")
    ap.add_argument("--pool", type=int, default=12288, help="labelled examples before training starts")
    ap.add_argument("--pool-max", type=int, default=24576, help="pool size kept while refreshing")
    ap.add_argument("--pool-minutes", type=float, default=1.5, help="stop the initial labelling after this")
    ap.add_argument("--refresh-steps", type=int, default=60, help="label one fresh chunk every this many steps")
    ap.add_argument("--chunk", type=int, default=256, help="examples per worker chunk")
    ap.add_argument("--workers", type=int, default=max(1, min(12, (os.cpu_count() or 2) - 2)))
    ap.add_argument("--max-seconds", type=float, default=29.0)
    ap.add_argument("--teacher-batch", type=int, default=256)
    ap.add_argument("--teacher-max-tokens", type=int, default=224)
    ap.add_argument("--max-target-tokens", type=int, default=160)
    ap.add_argument("--eval-batch", type=int, default=64)
    ap.add_argument("--eval-max-tokens", type=int, default=224)
    ap.add_argument("--eval-limit", type=int, default=0, help="first N eval clips only (0: all)")
    ap.add_argument("--ckpt-every", type=float, default=120.0, help="seconds")
    ap.add_argument("--log-every", type=float, default=10.0, help="seconds")
    ap.add_argument("--no-amp", action="store_true", help="student in float32 (TF32) instead of bf16 autocast")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--init-delta", default="", help="file in --data: int8 block deltas to start from")
    ap.add_argument("--short-frac", type=float, default=0.0, help="share of single short commands (1-2 digits)")
    args = ap.parse_args()
    if args.short_frac > 0:  # the other kinds keep their proportions
        KIND_P = tuple(p * (1 - args.short_frac) for p in KIND_P[:5]) + (args.short_frac,)
    deadline = T_START + 60 * args.max_minutes
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    LOG_FILE = out / "log.txt"
    LOG_FILE.write_text("")
    data = Path(args.data)
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    log(f"args {vars(args)}")

    # base clips, then fork the example workers before CUDA starts
    CLIPS = Clips(data)
    log(f"clips: {len(CLIPS.tts)} tts, {sum(map(len, CLIPS.digits))} fsdd digits (3 speeds)")
    ctx = mp.get_context("fork")
    q = ctx.Queue(maxsize=max(4, args.workers))
    procs = [ctx.Process(target=worker, args=(args.seed * 1000 + k + 1, q, args.chunk, args.max_seconds), daemon=True) for k in range(args.workers)]
    for p in procs:
        p.start()

    device = torch.device(args.device)
    if device.type == "cuda":
        torch.set_float32_matmul_precision("high")  # TF32 matmuls for the float32 reference
        torch.backends.cudnn.allow_tf32 = True
        log(f"device {torch.cuda.get_device_name(device)}, torch {torch.__version__}")
    model, info = load_packed(data, device)
    args.eot_row = info["eot_row"]
    args.suppress = info["suppress"]
    filters = torch.from_numpy(np.load(data / "mel_filters.npy")).to(device)
    amp = device.type == "cuda" and not args.no_amp
    metrics: dict = {"args": {k: v for k, v in vars(args).items() if k != "suppress"}, "device": str(device)}

    # eval set and the reference's transcripts of it
    ez = np.load(data / "eval.npz")
    eval_waves = split(ez)
    if args.eval_limit:
        eval_waves = eval_waves[: args.eval_limit]
        info["meta"]["eval_kinds"] = info["meta"]["eval_kinds"][: args.eval_limit]
    eval_mels = mels_of(eval_waves, filters, device)
    ref_seqs, ref_hits = [], []
    with torch.no_grad():
        for a in range(0, len(eval_mels), args.eval_batch):
            part = eval_mels[a : a + args.eval_batch]
            s, h = greedy(model, reference_memory(model, part), None, info, args.eval_max_tokens)
            ref_seqs += s
            ref_hits += h
    log(f"reference (padded) on {len(eval_mels)} eval clips: {sum(ref_hits)} hit the token limit")
    metrics["reference_hit_token_limit"] = int(sum(ref_hits))
    student = [copy.deepcopy(b).float().requires_grad_(True).train() for b in model.blocks]
    if args.init_delta:  # continue from an earlier run: int8 per-tensor deltas over the base blocks
        from safetensors.torch import load_file

        delta = load_file(str(Path(args.data) / args.init_delta))
        n = 0
        with torch.no_grad():
            for i, b in enumerate(student):
                for k, v in b.state_dict().items():
                    key = f"stages.block{i + 1}.{k}"
                    if key in delta:
                        v.add_(delta[key].to(device).float() * delta[key + ".scale"].to(device).float())
                        n += 1
        log(f"init: {n} tensors moved by the deltas of {args.init_delta}")
    t_eval = time.time()
    metrics["eval_before"] = evaluate(model, student, info, eval_mels, ref_seqs, args, "before")
    eval_cost = time.time() - t_eval
    reserve = 1.5 * eval_cost + 15.0
    train_end = deadline - reserve

    # initial pool
    pool: list[Item] = []
    chunks: list[list[Item]] = []
    looped_total, labelled = 0, 0
    t_pool = time.time()
    pool_end = min(time.time() + 60 * args.pool_minutes, train_end - 30)
    while len(pool) < args.pool and time.time() < pool_end:
        waves = q.get(timeout=120)
        items, looped = label(model, info, mels_of(waves, filters, device), args, device)
        chunks.append(items)
        pool += items
        looped_total += looped
        labelled += len(waves)
        log(f"pool {len(pool)} (labelled {labelled}, reference looped on {looped_total}, {time.time() - t_pool:.0f} s)")
    if not pool:
        raise SystemExit("no training examples were labelled in time")
    lengths = np.array([it.c / 100 for it in pool])
    ntok = np.array([it.tokens.shape[0] - 2 for it in pool])
    log(
        f"pool ready: {len(pool)} examples, {lengths.sum() / 3600:.2f} h audio, length mean {lengths.mean():.1f} s "
        f"(p10 {np.percentile(lengths, 10):.1f}, p90 {np.percentile(lengths, 90):.1f}, max {lengths.max():.1f}), "
        f"tokens mean {ntok.mean():.1f} max {ntok.max()}, empty transcripts {(ntok == 0).sum()}"
    )
    metrics["pool"] = {"initial": len(pool), "hours": float(lengths.sum() / 3600), "mean_seconds": float(lengths.mean())}

    params = [p for b in student for p in b.parameters()]
    fused = device.type == "cuda"
    opt = torch.optim.Adam(params, lr=args.lr, betas=(0.9, 0.98), eps=1e-8, fused=fused)
    step, seen, t_train = 0, 0, time.time()
    curve: list = []
    loss_acc, loss_n, last_log, last_ckpt = 0.0, 0, time.time(), time.time()
    t_label = 0.0
    plan: list = []
    log(f"training until {train_end - T_START:.0f} s (reserve {reserve:.0f} s for eval + save)")
    while time.time() < train_end:
        if not plan:
            plan = batches_of(pool, args.batch, rng)
        items = plan.pop()
        frac = min(max((time.time() - t_train) / max(train_end - t_train, 1.0), 0.0), 1.0)
        lr = args.lr * min(1.0, (step + 1) / args.warmup)
        lr *= args.min_lr_frac + (1 - args.min_lr_frac) * 0.5 * (1 + math.cos(math.pi * frac))
        for g in opt.param_groups:
            g["lr"] = lr
        want = time.time() - last_log >= args.log_every
        loss, gnorm, acc = train_step(model, student, opt, items, args, rng, device, amp, want)
        step += 1
        seen += len(items)
        loss_acc += loss.detach()
        loss_n += 1
        if want:
            dt = time.time() - last_log
            mean_loss = float(loss_acc) / loss_n
            curve.append({"t": round(time.time() - T_START, 1), "step": step, "seen": seen, "loss": mean_loss, "lr": lr, "acc": acc})
            log(
                f"step {step} seen {seen} loss {mean_loss:.5f} acc {acc:.4f} gnorm {float(gnorm):.3f} "
                f"lr {lr:.2e} {1000 * dt / loss_n:.0f} ms/step pool {len(pool)} labelling {t_label:.0f} s"
            )
            loss_acc, loss_n, last_log = 0.0, 0, time.time()
        if step % args.refresh_steps == 0 and time.time() < train_end - 20:
            try:
                waves = q.get_nowait()
            except queue.Empty:
                waves = None
            if waves is not None:
                t0 = time.time()
                items_new, looped = label(model, info, mels_of(waves, filters, device), args, device)
                looped_total += looped
                labelled += len(waves)
                chunks.append(items_new)
                pool += items_new
                while len(pool) > args.pool_max and len(chunks) > 1:
                    old = chunks.pop(0)
                    drop = {id(it) for it in old}
                    pool = [it for it in pool if id(it) not in drop]
                t_label += time.time() - t0
        if time.time() - last_ckpt >= args.ckpt_every:
            metrics.update(steps=step, seen=seen, curve=curve)
            save_ckpt(student, out, metrics)
            last_ckpt = time.time()
            log(f"checkpoint at step {step}")
    for p in procs:
        p.terminate()
    train_s = time.time() - t_train
    metrics.update(
        steps=step,
        seen=seen,
        curve=curve,
        train_seconds=round(train_s, 1),
        labelled=labelled,
        reference_looped_in_labelling=looped_total,
        labelling_seconds_during_training=round(t_label, 1),
        final_lr=lr if step else None,
    )
    save_ckpt(student, out, metrics)
    log(f"trained {step} steps, {seen} examples ({seen / max(len(pool), 1):.1f} x pool) in {train_s:.0f} s; saved")
    for b in student:
        b.eval()
    metrics["eval_after"] = evaluate(model, student, info, eval_mels, ref_seqs, args, "after")
    metrics["total_seconds"] = round(time.time() - T_START, 1)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=1))
    log(f"done in {metrics['total_seconds']} s -> {out}/dyn_blocks.safetensors, metrics.json, log.txt")


if __name__ == "__main__":
    main()
