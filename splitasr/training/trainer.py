"""Training: ``splitasr train --config configs/ds2-default.toml``.

CTC loss on characters, SpecAugment, AdamW with a one-cycle schedule, several corpora
mixed by sampling weight, duration-bucketed batches, a checkpoint every epoch (resumable),
validation WER every epoch, and the best model saved as safetensors. Uses CUDA when there.

Features are computed once at start-up (the front end has no parameters) and kept in
memory as float16, so an epoch costs only the model's own compute.
"""

from __future__ import annotations

import math
import os
import random
import time
import tomllib
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np
import torch
from torch import nn

from splitasr.audio import load_audio, log_mel
from splitasr.decoding import GreedyDecoder
from splitasr.errors import ConfigError
from splitasr.manifest import read_manifest
from splitasr.model.checkpoint import save_model
from splitasr.model.ds2 import DS2Config, DS2Model
from splitasr.text import CharTokenizer
from splitasr.wer import error_rates


@dataclass
class TrainConfig:
    """A training recipe; read from TOML (see ``configs/ds2-default.toml``)."""

    kind: str = "ds2"  # the recipe kind (cli.cmd_train dispatches on it)
    train: dict[str, float] = field(default_factory=dict)  # manifest path -> sampling weight
    dev: list[str] = field(default_factory=list)
    out: str = "runs/ds2"
    model: DS2Config = field(default_factory=DS2Config)
    epochs: int = 3
    utts_per_epoch: int = 0  # 0: as many as the training manifests hold
    batch_seconds: float = 60.0  # audio per batch
    lr: float = 2e-3
    weight_decay: float = 1e-2
    warmup: float = 0.08  # fraction of steps
    grad_clip: float = 5.0
    freq_masks: int = 2
    freq_mask_width: int = 15
    time_masks: int = 2
    time_mask_frac: float = 0.05
    seed: int = 0
    threads: int = 0  # 0: all cores
    max_dev_utts: int = 400

    @classmethod
    def from_toml(cls, path: str | Path) -> TrainConfig:
        path = Path(path)
        raw = read_toml(path)
        known = {f.name for f in fields(cls)}
        unknown = set(raw) - known
        if unknown:
            raise ConfigError(f"{path}: unknown keys {sorted(unknown)}")
        model = DS2Config(**raw.pop("model", {}))
        base = path.parent
        cfg = cls(model=model, **raw)
        cfg.train = {str(_rel(base, k)): float(v) for k, v in cfg.train.items()}
        cfg.dev = [str(_rel(base, p)) for p in cfg.dev]
        return cfg


def read_toml(path: Path) -> dict:
    """A recipe file's contents; ConfigError (one line) when missing or not TOML."""
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    try:
        return tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML ({exc})") from None


def _rel(base: Path, p: str) -> Path:
    path = Path(os.path.expandvars(p))
    return path if path.is_absolute() or path.exists() else (base / path)


@dataclass
class Example:
    feats: torch.Tensor  # (T, 80) float16
    labels: torch.Tensor  # (L,) int
    text: str
    source: str


def load_examples(
    manifest: str | Path, tokenizer: CharTokenizer, desc: str, limit: int | None = None
) -> list[Example]:
    """Read a manifest and compute log-mel features for every utterance."""
    from tqdm import tqdm

    root = Path(manifest).parent
    utts = read_manifest(manifest)[:limit]
    out = []
    for utt in tqdm(utts, desc=f"features {desc}", unit="utt", leave=False):
        wave = torch.from_numpy(load_audio(utt.resolve(root)))
        feats = log_mel(wave.unsqueeze(0))[0].to(torch.float16)
        out.append(Example(feats, torch.tensor(tokenizer.encode(utt.text)), utt.text, str(manifest)))
    return out


def spec_augment(
    feats: torch.Tensor, lens: torch.Tensor, cfg: TrainConfig, gen: torch.Generator
) -> torch.Tensor:
    """SpecAugment masks on normalised-scale features ``(N, T, F)`` (in place, returns it)."""
    n, _, f = feats.shape
    fill = feats.mean()
    for i in range(n):
        for _ in range(cfg.freq_masks):
            w = int(torch.randint(0, cfg.freq_mask_width + 1, (1,), generator=gen))
            f0 = int(torch.randint(0, max(f - w, 1), (1,), generator=gen))
            feats[i, :, f0 : f0 + w] = fill
        t_len = int(lens[i])
        for _ in range(cfg.time_masks):
            w = int(torch.randint(0, max(int(t_len * cfg.time_mask_frac), 1) + 1, (1,), generator=gen))
            t0 = int(torch.randint(0, max(t_len - w, 1), (1,), generator=gen))
            feats[i, t0 : t0 + w, :] = fill
    return feats


def make_batches(
    examples: list[Example], order: list[int], batch_frames: int, rng: random.Random
) -> list[list[int]]:
    """Group example indices of similar length into batches of at most ``batch_frames``."""
    lengths = [e.feats.shape[0] for e in examples]
    batches = pack_by_length(sorted(order, key=lambda i: lengths[i]), lengths, batch_frames)
    rng.shuffle(batches)
    return batches


def pack_by_length(order: list[int], lengths: list[int], max_frames: int) -> list[list[int]]:
    """Cut ``order`` (indices, sorted by length) into consecutive batches whose padded size,
    longest length x batch size, stays within ``max_frames`` (a longer item goes alone)."""
    batches, cur, longest = [], [], 0
    for i in order:
        t = lengths[i]
        if cur and max(longest, t) * (len(cur) + 1) > max_frames:
            batches.append(cur)
            cur, longest = [], 0
        cur.append(i)
        longest = max(longest, t)
    if cur:
        batches.append(cur)
    return batches


def collate(examples: list[Example], idx: list[int]):
    """Pad a batch: feats ``(N, T, F)``, feat_lens ``(N,)``, labels ``(N, L)``, label_lens ``(N,)``."""
    feats = nn.utils.rnn.pad_sequence([examples[i].feats.float() for i in idx], batch_first=True)
    feat_lens = torch.tensor([examples[i].feats.shape[0] for i in idx])
    labels = nn.utils.rnn.pad_sequence([examples[i].labels for i in idx], batch_first=True)
    label_lens = torch.tensor([len(examples[i].labels) for i in idx])
    return feats, feat_lens, labels, label_lens


def evaluate_examples(
    model: DS2Model, examples: list[Example], device: torch.device, batch_frames: int
) -> dict:
    """Greedy WER/CER of ``model`` on pre-featurised examples."""
    model.eval()
    decoder = GreedyDecoder()
    refs, hyps = [], []
    with torch.no_grad():
        for idx in make_batches(examples, list(range(len(examples))), batch_frames, random.Random(0)):
            feats, lens, _, _ = collate(examples, idx)
            logits, out_lens = model.tail(feats.to(device), lens.to(device), "features")
            hyps += decoder.decode_batch(logits.cpu(), out_lens.cpu())
            refs += [examples[i].text for i in idx]
    return error_rates(refs, hyps)


def train(cfg: TrainConfig, resume: bool = True, progress: bool = True) -> Path:
    """Run the recipe; returns the path of the best model (``<out>/best.safetensors``)."""
    from tqdm import tqdm

    if not cfg.train:
        raise ConfigError("the config names no training manifests ([train] table)")
    torch.manual_seed(cfg.seed)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = CharTokenizer()

    pools = [(load_examples(m, tokenizer, Path(m).stem), w) for m, w in cfg.train.items()]
    dev = [e for m in cfg.dev for e in load_examples(m, tokenizer, Path(m).stem, cfg.max_dev_utts)]
    examples = [e for pool, _ in pools for e in pool]
    offsets = np.cumsum([0] + [len(p) for p, _ in pools])

    model = DS2Model(cfg.model)
    allf = torch.cat([e.feats.float() for e in examples[:: max(len(examples) // 2000, 1)]])
    model.set_feature_stats(allf.mean(0), allf.std(0))
    model.to(device)
    frames_per_batch = int(cfg.batch_seconds * 100)
    n_epoch = cfg.utts_per_epoch or len(examples)
    avg_frames = float(np.mean([e.feats.shape[0] for e in examples]))
    steps_per_epoch = max(int(math.ceil(n_epoch * avg_frames * 1.15 / frames_per_batch)), 1)
    total_steps = steps_per_epoch * cfg.epochs

    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt,
        max_lr=cfg.lr,
        total_steps=total_steps + steps_per_epoch,
        pct_start=cfg.warmup,
        anneal_strategy="cos",
    )
    ctc = nn.CTCLoss(blank=tokenizer.blank, zero_infinity=True)
    start_epoch, best_wer, history = 0, float("inf"), []
    state_path = out / "last.pt"
    if resume and state_path.is_file():
        state = torch.load(state_path, map_location=device, weights_only=True)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        sched.load_state_dict(state["sched"])
        start_epoch, best_wer = int(state["epoch"]), float(state["best_wer"])
        history = [dict(zip(state["history_keys"], row, strict=False)) for row in state["history"].tolist()]
        print(f"resumed from {state_path} at epoch {start_epoch}")

    gen = torch.Generator().manual_seed(cfg.seed)
    weights = np.array([w for _, w in pools], dtype=np.float64)
    sizes = np.array([len(p) for p, _ in pools], dtype=np.float64)
    probs = np.repeat(weights / weights.sum() / sizes, sizes.astype(int))
    probs /= probs.sum()
    t_start = time.time()
    for epoch in range(start_epoch, cfg.epochs):
        rng = random.Random(cfg.seed * 1000 + epoch)
        np_rng = np.random.default_rng(cfg.seed * 1000 + epoch)
        order = np_rng.choice(offsets[-1], size=n_epoch, replace=True, p=probs).tolist()
        batches = make_batches(examples, order, frames_per_batch, rng)[:steps_per_epoch]
        model.train()
        bar = tqdm(batches, desc=f"epoch {epoch + 1}/{cfg.epochs}", disable=not progress, unit="batch")
        losses = []
        for idx in bar:
            feats, lens, labels, label_lens = collate(examples, idx)
            feats = spec_augment(feats, lens, cfg, gen)
            logits, out_lens = model.tail(feats.to(device), lens.to(device), "features")
            loss = ctc(
                logits.log_softmax(-1).transpose(0, 1), labels.to(device), out_lens, label_lens.to(device)
            )
            opt.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            opt.step()
            sched.step()
            losses.append(loss.item())
            bar.set_postfix(loss=f"{np.mean(losses[-50:]):.3f}", lr=f"{sched.get_last_lr()[0]:.2e}")
        rates = (
            evaluate_examples(model, dev, device, frames_per_batch)
            if dev
            else {"wer": float("nan"), "cer": float("nan")}
        )
        row = {
            "epoch": epoch + 1,
            "loss": float(np.mean(losses)),
            "dev_wer": rates["wer"],
            "dev_cer": rates["cer"],
            "minutes": (time.time() - t_start) / 60,
        }
        history.append(row)
        print(f"epoch {epoch + 1}: loss {row['loss']:.3f} dev WER {rates['wer']:.2%} CER {rates['cer']:.2%}")
        meta = {"train_config": _jsonable(cfg), "history": history}
        if rates["wer"] <= best_wer or math.isnan(rates["wer"]):
            best_wer = rates["wer"]
            save_model(model.cpu(), out / "best.safetensors", meta)
            model.to(device)
        save_model(model.cpu(), out / "last.safetensors", meta)
        model.to(device)
        keys = list(history[0].keys())
        torch.save(
            {
                "model": model.state_dict(),
                "opt": opt.state_dict(),
                "sched": sched.state_dict(),
                "epoch": epoch + 1,
                "best_wer": best_wer,
                "history_keys": keys,
                "history": torch.tensor([[r[k] for k in keys] for r in history], dtype=torch.float64),
            },
            state_path,
        )
    return out / "best.safetensors"


def _jsonable(cfg: TrainConfig) -> dict:
    d = asdict(cfg)
    return d
