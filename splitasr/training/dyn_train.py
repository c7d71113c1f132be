"""Audio-context fine-tuning of Whisper tiny.en (``whisper-tiny.en-dyn``):
``splitasr train --config configs/whisper-tiny.en-dyn.toml``.

Whisper pads every input to 30 s; run on the audio frames only, its decoder loops
(docs/whisper.md). FUTO's remedy, done here on the package's own
:class:`~splitasr.model.whisper.WhisperModel`:

* a frozen **reference**, the padded ``whisper-tiny.en``, gives for each training clip its
  greedy transcript (prompt + tokens, at most ``max_target_tokens``) and, teacher-forced on
  it, the text decoder's hidden states ``(5, T, 384)``: the output of each of the 4 decoder
  blocks and the final LayerNorm;
* the **student** is the trimmed model (``trim=True``) whose encoder blocks 1-4 (with
  ``ln_post``) learn; the front end, the stem and the text decoder are frozen, so the
  ``features``/``stem`` split points and their codecs serve both models. It runs on the
  clip's ``J`` stem frames plus a random margin of ``-margin_neg .. +margin`` frames (at most
  ``J // 3`` either way), exactly as ``variant(trim=True, trim_margin=m)`` would;
* loss: the mean squared difference of the student's decoder hidden states, teacher-forced
  on the same tokens, to the reference's (per value, over all tokens of the batch).

No labels are used, so any audio serves. A clip is made from the training manifests'
utterances and FSDD single digits (takes 5-49 of the configured speakers, never ``lucas``,
the held-out speaker): one utterance, a run of digits, a concatenation with pauses up to
``max_seconds``, speech between long silences, noise alone or one or two short digits
(``short_frac``); speed 0.9/1.0/1.1 by resampling, a random peak gain, coloured noise at
5-40 dB SNR. Clip ``k`` of phase ``p`` is drawn from ``numpy.random.default_rng([seed, p,
k])`` and every step's choices from ``[seed, step, ...]``, so a run is a function of its
recipe, and a resumed run draws what the uninterrupted one would have.

Labelling (the padded encoder and a greedy decode per clip) costs more than a training
step, so as on the GPU each labelled clip is used several times: at phase step ``s`` the
batch is drawn from the ``pool`` clips ``s * fresh_per_step ..``; labels are computed when
first drawn and kept while their clip is in the window (a resumed run labels again).

Every ``epoch_steps`` steps (an epoch) the student is validated: greedy transcripts of the
first ``val_limit`` utterances of ``dev`` by the trimmed student (margin 0) against the
padded reference's (WER between the two, and each against the manifest's text), and the
number of outputs the loop guard cut or that reached the token limit. Then the blocks are
written as float16 safetensors (``<out>/whisper-tiny.en-dyn.safetensors``, the format
:func:`~splitasr.model.whisper.weights.load_whisper_dyn` reads, the recipe in its metadata).

Checkpoints (``<out>/dyn-checkpoint.safetensors``: the trained blocks in float32, Adam's
moments, the step and the recipe; no pickle) every ``checkpoint_every`` steps and at each
epoch's end; a run finding one continues from it. One JSON line per ``log_every`` steps
and per validation in ``<out>/dyn-train.jsonl``.

Device: CUDA when there (bf16 autocast for the student), else the CPU. The reference and
the greedy decoding (labelling, validation) always run on the CPU: the decoder builds its
prompts there; on a GPU that makes labelling the slow part.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np
import torch

from splitasr.errors import ConfigError
from splitasr.model.whisper.decoding import WhisperDecoder

DYN_KIND = "whisper-dyn"
CHECKPOINT = "dyn-checkpoint.safetensors"
LOG = "dyn-train.jsonl"
HELD_OUT_SPEAKERS = ("lucas",)  # FSDD's test speaker (docs/whisper.md): never trained on
FIRST_TRAIN_TAKE = 5  # FSDD takes 0-4 of the training speakers are the dev set's (corpus.build)
SAMPLE_RATE = 16000
SPEEDS = (1.0, 0.9, 1.1)
SPEED_P = (0.5, 0.25, 0.25)
# sentence, digit run, concatenation, speech between silences, no speech (short commands: short_frac)
KIND_P = (0.25, 0.25, 0.30, 0.15, 0.05)
N_STATES = 5  # decoder hidden states compared: 4 blocks and the final LayerNorm
# Recipe keys a checkpoint must share with the run that continues it (they decide the data).
DATA_KEYS = ("seed", "train", "limit_per_manifest", "fsdd", "fsdd_speakers", "max_seconds", "fresh_per_step")


@dataclass
class Phase:
    """A stretch of training with its own schedule: linear warm-up over ``warmup`` steps to
    ``lr``, then a cosine to ``min_lr_frac * lr`` at its last step; a fresh Adam and a fresh
    pool of ``pool`` clips, ``short_frac`` of them one or two short digits."""

    steps: int = 100
    lr: float = 1e-5
    warmup: int = 50
    short_frac: float = 0.0
    pool: int = 12288


@dataclass
class DynTrainConfig:
    """A ``whisper-dyn`` recipe (TOML: ``kind = "whisper-dyn"``, top-level keys, one
    ``[[phases]]`` table per :class:`Phase`); see ``configs/whisper-tiny.en-dyn.toml``."""

    kind: str = DYN_KIND
    train: list[str] = field(default_factory=list)  # manifests whose utterances are the speech
    limit_per_manifest: int = 0  # first N utterances of each (0: all)
    fsdd: str = ""  # FSDD recordings folder for digit runs ("" : none)
    fsdd_speakers: list[str] = field(default_factory=lambda: ["george", "jackson", "nicolas"])
    dev: str = "data/corpus/dev.jsonl"  # validation manifest ("" : no validation)
    val_limit: int = 50
    validate_first: bool = False  # also validate before the first step
    out: str = "runs/whisper-dyn"
    init: str = ""  # a whisper-tiny.en-dyn blocks file to start from ("" : the base blocks)
    phases: list[Phase] = field(default_factory=lambda: [Phase()])
    epoch_steps: int = 100
    epochs: int = 0  # stop after this many epochs (0: when the phases end); rerun to go on
    batch: int = 64
    fresh_per_step: int = 4  # new clips entering the pool per step
    margin: int = 64  # student frames past the audio: up to this many (at most J // 3)
    margin_neg: int = 32  # ... or up to this many cut from its end (at most J // 3)
    max_seconds: float = 29.0
    max_target_tokens: int = 160
    clip: float = 1.0  # gradient norm
    min_lr_frac: float = 0.1
    label_batch: int = 8  # clips the reference labels at once
    seed: int = 0
    threads: int = 0  # torch threads (0: torch's default)
    device: str = "auto"  # "auto" (cuda if available), "cpu" or "cuda"
    amp: bool = True  # bf16 autocast for the student on CUDA (never on the CPU)
    log_every: int = 10
    checkpoint_every: int = 50

    @property
    def steps(self) -> int:
        """All phases' steps."""
        return sum(p.steps for p in self.phases)

    @classmethod
    def from_toml(cls, path: str | Path) -> DynTrainConfig:
        from splitasr.training.trainer import read_toml

        path = Path(path)
        raw = read_toml(path)
        phases = raw.pop("phases", None)
        unknown = sorted(set(raw) - {f.name for f in fields(cls)})
        if phases is not None and not (isinstance(phases, list) and all(isinstance(p, dict) for p in phases)):
            raise ConfigError(f"{path}: phases must be [[phases]] tables")
        names = {f.name for f in fields(Phase)}
        unknown += sorted({f"phases.{k}" for p in phases or [] for k in set(p) - names})
        if unknown:
            raise ConfigError(f"{path}: unknown keys {unknown}")
        cfg = cls(**_typed(cls, raw, path))
        if phases is not None:
            cfg.phases = [Phase(**_typed(Phase, p, path)) for p in phases]
        cfg.check(str(path))
        return cfg

    def check(self, where: str = "recipe") -> None:
        """Refuse a recipe that cannot run, in one line."""
        if self.kind != DYN_KIND:
            raise ConfigError(f"{where}: kind must be {DYN_KIND!r}")
        if not self.train:
            raise ConfigError(f"{where}: names no training manifests (train = [...])")
        held = sorted(set(self.fsdd_speakers) & set(HELD_OUT_SPEAKERS))
        if held:
            raise ConfigError(f"{where}: FSDD speaker {held[0]!r} is held out for testing; never train on it")
        if not self.phases or any(p.steps < 1 or p.lr <= 0 or p.pool < 1 for p in self.phases):
            raise ConfigError(f"{where}: needs [[phases]] with steps >= 1, lr > 0 and pool >= 1")
        if any(not 0 <= p.short_frac <= 1 for p in self.phases):
            raise ConfigError(f"{where}: short_frac must be within 0..1")
        if min(self.batch, self.epoch_steps, self.fresh_per_step, self.log_every, self.checkpoint_every) < 1:
            raise ConfigError(
                f"{where}: batch, epoch_steps, fresh_per_step, log_every and checkpoint_every must be >= 1"
            )
        if not 0.5 <= self.max_seconds <= 29.5:
            raise ConfigError(f"{where}: max_seconds must be within 0.5..29.5 (one 30-s window)")
        if self.device not in ("auto", "cpu", "cuda"):
            raise ConfigError(f"{where}: device must be auto, cpu or cuda")


def _typed(cls, raw: dict, where: Path) -> dict:
    """``raw`` when each value has its field's type (that of the default; an int passes
    for a float), else a one-line ConfigError."""
    kinds = {bool: (bool,), int: (int,), float: (int, float), str: (str,), list: (list,)}
    defaults = asdict(cls())
    for key, value in raw.items():
        want = kinds.get(type(defaults[key]), (object,))
        if not isinstance(value, want) or (isinstance(value, bool) and bool not in want):
            raise ConfigError(f"{where}: {key} must be of type {want[-1].__name__}, not {value!r}")
        if isinstance(value, list) and not all(isinstance(v, str) for v in value):
            raise ConfigError(f"{where}: {key} must be a list of strings")
    return raw


# ----------------------------------------------------------------- training clips --


@dataclass(frozen=True)
class Sources:
    """Where clips come from: the manifests' utterances, and FSDD single digits by speaker."""

    utterances: list[Path]
    digits: list[list[Path]]  # per speaker: its takes from FIRST_TRAIN_TAKE on, every digit


def load_sources(cfg: DynTrainConfig) -> Sources:
    """The recipe's audio files (read lazily, clip by clip)."""
    from splitasr.corpus.digits import index_fsdd
    from splitasr.manifest import read_manifest

    utterances = []
    for m in cfg.train:
        root = Path(m).parent
        utts = read_manifest(m, cfg.limit_per_manifest)
        held = [u for u in utts if u.speaker.removeprefix("fsdd-") in HELD_OUT_SPEAKERS]
        if held:
            raise ConfigError(f"{m}: holds utterances of the held-out speaker {held[0].speaker!r}")
        utterances += [u.resolve(root) for u in utts]
    digits = []
    if cfg.fsdd:
        if not Path(cfg.fsdd).is_dir():
            raise ConfigError(f"fsdd = {cfg.fsdd!r}: not a folder")
        table = index_fsdd(cfg.fsdd)
        for spk in cfg.fsdd_speakers:
            if spk not in table:
                raise ConfigError(f"fsdd: no recordings of speaker {spk!r} in {cfg.fsdd}")
            digits.append([p for takes in table[spk].values() for p in takes[FIRST_TRAIN_TAKE:]])
    if not utterances:
        raise ConfigError("the training manifests hold no utterances")
    return Sources(utterances, digits)


def _clip(path: Path, speed: float) -> np.ndarray:
    """One file at 16 kHz, silence trimmed, played ``speed`` times faster."""
    from splitasr.audio import load_audio
    from splitasr.corpus.augment import change_speed
    from splitasr.corpus.digits import trim_silence

    wave = trim_silence(load_audio(path))
    return wave if speed == 1.0 else change_speed(wave, speed)


def make_clip(
    sources: Sources, rng: np.random.Generator, max_seconds: float, short_frac: float
) -> np.ndarray:
    """One training waveform ``(S,)`` float32 at 16 kHz, 0.5 s .. ``max_seconds`` (the GPU
    script's mix, see the module docstring)."""
    from splitasr.corpus.augment import coloured_noise

    def silence(lo: float, hi: float) -> np.ndarray:
        return np.zeros(int(SAMPLE_RATE * rng.uniform(lo, hi)), np.float32)

    speed = SPEEDS[int(rng.choice(len(SPEEDS), p=SPEED_P))]

    def utterance() -> np.ndarray:
        return _clip(sources.utterances[int(rng.integers(len(sources.utterances)))], speed)

    def digit_run(k: int) -> np.ndarray:
        if not sources.digits:  # no FSDD: an utterance stands in
            return utterance()
        takes = sources.digits[int(rng.integers(len(sources.digits)))]
        parts = []
        for _ in range(k):
            parts += [_clip(takes[int(rng.integers(len(takes)))], speed), silence(0.0, 0.5)]
        return np.concatenate(parts)

    p = np.array([*(q * (1 - short_frac) for q in KIND_P), short_frac])
    kind = int(rng.choice(len(p), p=p / p.sum()))
    if kind == 0:  # one utterance
        parts = [utterance()]
    elif kind == 1:  # connected digits, one speaker
        parts = [digit_run(int(rng.integers(1, 11)))]
    elif kind == 2:  # utterances and digit runs with pauses, up to max_seconds
        target, parts, total = rng.uniform(min(3.0, max_seconds), max_seconds), [], 0.0
        while total < target:
            seg = utterance() if rng.random() < 0.6 else digit_run(int(rng.integers(1, 8)))
            if parts and total + len(seg) / SAMPLE_RATE > max_seconds - 0.5:
                break
            parts += [seg, silence(0.1, 1.5)]
            total += (len(parts[-2]) + len(parts[-1])) / SAMPLE_RATE
    elif kind == 3:  # speech between long silences
        seg = utterance() if rng.random() < 0.5 else digit_run(int(rng.integers(1, 6)))
        parts = [silence(0.0, 3.0), seg, silence(0.5, 6.0)]
    elif kind == 4:  # no speech: the noise below only
        parts = [silence(0.5, 10.0)]
    else:  # a short command: one or two digits, tight silences
        parts = [digit_run(int(rng.integers(1, 3)))[: -int(SAMPLE_RATE * 0.01)]]
    if rng.random() < 0.5:
        parts.insert(0, silence(0.0, 0.5))
    if rng.random() < 0.7:  # recordings usually end with some silence
        parts.append(silence(0.0, 0.6))
    wave = np.concatenate(parts)[: int(max_seconds * SAMPLE_RATE)]
    if len(wave) < SAMPLE_RATE // 2:
        wave = np.concatenate([wave, np.zeros(SAMPLE_RATE // 2 - len(wave), np.float32)])
    peak = float(np.abs(wave).max())
    if peak > 1e-3:  # gain: a random peak level
        wave = wave * (rng.uniform(0.05, 0.95) / peak)
    if kind == 4 or rng.random() < 0.5:  # coloured noise at 5-40 dB SNR
        rms = 0.05 if kind == 4 else float(np.sqrt(np.mean(wave**2)))
        wave = wave + coloured_noise(len(wave), rng) * (max(rms, 1e-4) / 10 ** (rng.uniform(5, 40) / 20))
    return np.clip(wave, -1.0, 1.0).astype(np.float32)


# ----------------------------------------------------------------- reference and student --


@dataclass
class Target:
    """A labelled clip: ``mel (c, 80)`` float16, its Whisper log-mel (audio frames only);
    ``tokens (T,)`` int64, prompt + the reference's greedy transcript; ``states (5, T, 384)``
    float16, the reference's decoder hidden states teacher-forced on ``tokens``."""

    mel: torch.Tensor
    tokens: torch.Tensor
    states: torch.Tensor


def decoder_states(text, memory: torch.Tensor, tokens: torch.Tensor) -> list[torch.Tensor]:
    """The text decoder teacher-forced on ``tokens (1, T)`` over ``memory (1, S, 384)``:
    the outputs of its 4 blocks and of its final LayerNorm, each ``(1, T, 384)`` (causal
    self-attention; float32 weights: the model must be loaded with the float32 decoder)."""
    cross = [b.cross_attn.kv(memory) for b in text.blocks]
    x = text.token_embedding(tokens) + text.positions[: tokens.shape[1]]
    states = []
    for block, kv in zip(text.blocks, cross, strict=True):
        x = block(x, {}, kv)
        states.append(x)
    states.append(text.ln(x))
    return states


def label(reference, decoder: WhisperDecoder, waves: list[np.ndarray], cfg: DynTrainConfig) -> list[Target]:
    """The padded reference's transcripts and hidden states for ``waves`` (CPU, no grad)."""
    from splitasr.audio import whisper_log_mel

    out = []
    with torch.no_grad():
        mels = [whisper_log_mel(torch.from_numpy(w)) for w in waves]
        for a in range(0, len(mels), cfg.label_batch):
            part = mels[a : a + cfg.label_batch]
            lens = torch.tensor([m.shape[0] for m in part])
            x = torch.nn.utils.rnn.pad_sequence(part, batch_first=True)
            memory, _ = reference.tail(x, lens, "features")  # padding restored: (n, 1500, 384)
            ids = decoder.tokens_batch([memory[i] for i in range(len(part))])
            for i, mel in enumerate(part):
                tokens = torch.tensor([*decoder.prompt, *ids[i][: cfg.max_target_tokens]])
                states = decoder_states(reference.text_decoder, memory[i : i + 1], tokens[None])
                out.append(Target(mel.to(torch.float16), tokens, torch.cat(states).to(torch.float16)))
    return out


def student_memory(student, mel: torch.Tensor, margin: int) -> torch.Tensor:
    """The trimmed encoder's output ``(1, L, 384)`` for ``mel (c, 80)`` with ``margin``
    frames past the audio (negative: cut), ``L = clip(J + margin, 1, 1500)``.

    The frozen stem runs (float32, no grad) on the mel followed by zero frames, Whisper's
    padding, up to ``2L - 2`` frames: what ``variant(trim_margin=margin)`` computes for
    ``margin >= 0``; then the trained blocks (``student.tail`` at ``stem``)."""
    from splitasr.model.whisper.model import WINDOW_FRAMES, WhisperStem

    c = mel.shape[0]
    n_ctx = student.config.n_audio_ctx
    length = int(np.clip(WhisperStem.frames(c, n_ctx) + margin, 1, n_ctx))
    frames = min(max(c, 2 * length - 2), WINDOW_FRAMES)
    x = torch.nn.functional.pad(mel.float(), (0, 0, 0, frames - c))[None]
    with torch.no_grad(), torch.autocast(device_type=x.device.type, enabled=False):
        h, _ = student.stages["stem"](x, torch.tensor([frames]))
    memory, _ = student.tail(h[:, :length], torch.tensor([length]), "stem")
    return memory


def _margins(cfg: DynTrainConfig, targets: list[Target], rng: np.random.Generator) -> list[int]:
    from splitasr.model.whisper.model import WhisperStem

    out = []
    for t in targets:
        j = WhisperStem.frames(t.mel.shape[0])
        lo, hi = min(cfg.margin_neg, j // 3), min(cfg.margin, j // 3)
        out.append(int(rng.integers(-lo, hi + 1)))
    return out


def batch_loss(student, targets: list[Target], margins: list[int], device: torch.device, amp: bool) -> float:
    """Forward and backward over ``targets`` (gradients accumulate in the student's
    blocks); the batch's mean squared error per hidden value."""
    total = sum(t.tokens.shape[0] for t in targets) * N_STATES * student.config.d_model
    loss_sum = 0.0
    for t, m in zip(targets, margins, strict=True):
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=amp):
            memory = student_memory(student, t.mel.to(device), m)
            states = decoder_states(student.text_decoder, memory, t.tokens.to(device)[None])
        target = t.states.to(device).float()
        sse = sum(((s[0].float() - target[k]) ** 2).sum() for k, s in enumerate(states))
        (sse / total).backward()
        loss_sum += float(sse.detach())
    return loss_sum / total


# ----------------------------------------------------------------- validation --


class _LoopCountingDecoder(WhisperDecoder):
    """Greedy :class:`WhisperDecoder` that counts the windows the loop guard (or the full
    text context) ended, and those that reached ``max_new_tokens``: the loops."""

    def __init__(self, model):
        super().__init__(model, beam=1)
        self.loops = 0

    def _greedy_next(self, out: list[int], token: int, step: int) -> list[int] | None:
        done = super()._greedy_next(out, token, step)
        if done is not None and token != self.config.eot:
            self.loops += 1
        return done

    def tokens(self, memory: torch.Tensor) -> list[int]:
        ids = super().tokens(memory)
        if len(ids) >= self.config.max_new_tokens:
            self.loops += 1
        return ids


def transcribe_counting(model, waves: list[torch.Tensor]) -> tuple[list[str], int]:
    """Greedy texts of ``waves`` by ``model`` (CPU) and how many of them looped."""
    decoder = _LoopCountingDecoder(model)
    texts, looped = [], 0
    with torch.inference_mode():
        for w in waves:
            before = decoder.loops
            out, lens = model.head(w[None], torch.tensor([w.shape[0]]), model.split_points[-1])
            texts.append(decoder.decode(out[0], int(lens[0])))
            looped += decoder.loops > before
    return texts, looped


@dataclass
class ValSet:
    """The validation utterances, with the padded reference's greedy transcripts."""

    waves: list[torch.Tensor]
    texts: list[str]  # the manifest's
    reference: list[str]
    reference_loops: int


def load_val(cfg: DynTrainConfig, reference) -> ValSet | None:
    from splitasr.audio import load_audio
    from splitasr.manifest import read_manifest

    if not cfg.dev or cfg.val_limit < 1:
        return None
    root = Path(cfg.dev).parent
    utts = read_manifest(cfg.dev)[: cfg.val_limit]
    waves = [torch.from_numpy(load_audio(u.resolve(root))) for u in utts]
    ref, loops = transcribe_counting(reference, waves)
    return ValSet(waves, [u.text for u in utts], ref, loops)


def validate(student, val: ValSet) -> dict:
    """The trimmed student's greedy WER against the padded reference's transcripts (and
    both against the manifest's texts), and the loops; the student must be on the CPU."""
    from splitasr.wer import error_rates

    t0 = time.time()
    hyps, loops = transcribe_counting(student, val.waves)
    return {
        "utterances": len(hyps),
        "wer_vs_reference": round(error_rates(val.reference, hyps)["wer"], 4),
        "exact_vs_reference": sum(h == r for h, r in zip(hyps, val.reference, strict=True)),
        "loops": loops,
        "reference_loops": val.reference_loops,
        "wer": round(error_rates(val.texts, hyps)["wer"], 4),
        "reference_wer": round(error_rates(val.texts, val.reference)["wer"], 4),
        "seconds": round(time.time() - t0, 1),
    }


# ----------------------------------------------------------------- files --


def trained_parameters(student) -> dict[str, torch.nn.Parameter]:
    """The parameters that learn: encoder blocks 1-4 and ``ln_post`` (by state-dict name)."""
    return {k: p for k, p in student.named_parameters() if k.startswith("stages.block")}


def save_blocks(student, path: Path, recipe: dict) -> Path:
    """The trained blocks as float16 safetensors in the shipped ``whisper-tiny.en-dyn``
    format (metadata: ``format``, ``base``, ``base_sha256``, ``recipe``)."""
    from safetensors.torch import save_file

    from splitasr.model.whisper.ct2 import PINNED_SHA256
    from splitasr.model.whisper.model import NAME
    from splitasr.model.whisper.weights import DYN_FORMAT

    blocks = {
        k: v.detach().to("cpu", torch.float16).contiguous()
        for k, v in student.state_dict().items()
        if k.startswith("stages.block") and not k.endswith(".positions")
    }
    meta = {
        "format": DYN_FORMAT,
        "base": NAME,
        "base_sha256": PINNED_SHA256["model.bin"],
        "recipe": json.dumps(recipe),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    save_file(blocks, str(tmp), metadata=meta)
    os.replace(tmp, path)
    return path


def save_checkpoint(path: Path, student, opt: torch.optim.Optimizer, step: int, cfg: DynTrainConfig) -> None:
    """Blocks (float32), Adam's moments and step, the run's step and recipe (safetensors)."""
    from safetensors.torch import save_file

    tensors, adam_step = {}, 0
    for name, p in trained_parameters(student).items():
        tensors[f"w.{name}"] = p.detach().to("cpu", torch.float32).contiguous()
        st = opt.state.get(p)
        if st:
            tensors[f"adam.{name}.exp_avg"] = st["exp_avg"].detach().cpu().contiguous()
            tensors[f"adam.{name}.exp_avg_sq"] = st["exp_avg_sq"].detach().cpu().contiguous()
            adam_step = int(st["step"])
    meta = {
        "step": str(step),
        "adam_step": str(adam_step),
        "seed": str(cfg.seed),
        "recipe": json.dumps(_recipe(cfg)),
    }
    tmp = path.with_suffix(".tmp")
    save_file(tensors, str(tmp), metadata=meta)
    os.replace(tmp, path)


def load_checkpoint(path: Path, student, opt: torch.optim.Optimizer, cfg: DynTrainConfig) -> int:
    """Restore a checkpoint into ``student`` and ``opt``; the step it was taken at.

    Raises:
        ConfigError: the checkpoint was made with other data settings (:data:`DATA_KEYS`).
        CheckpointError: it is unreadable or holds other tensors.
    """
    from safetensors import safe_open
    from safetensors.torch import load_file

    from splitasr.errors import CheckpointError

    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
        tensors = load_file(str(path))
        step, adam_step, recipe = int(meta["step"]), int(meta["adam_step"]), json.loads(meta["recipe"])
    except Exception as exc:
        raise CheckpointError(f"{path}: not a whisper-dyn checkpoint ({exc})") from None
    mine = _recipe(cfg)
    changed = [k for k in DATA_KEYS if recipe.get(k) != mine.get(k)]
    if changed:
        raise ConfigError(f"{path} was made with other {', '.join(changed)}; delete it or use --no-resume")
    params = trained_parameters(student)
    if {k[2:] for k in tensors if k.startswith("w.")} != set(params):
        raise CheckpointError(f"{path}: its tensors are not Whisper tiny.en's encoder blocks")
    with torch.no_grad():
        for name, p in params.items():
            p.copy_(tensors[f"w.{name}"])
            if f"adam.{name}.exp_avg" in tensors:
                opt.state[p] = {
                    "step": torch.tensor(float(adam_step)),
                    "exp_avg": tensors[f"adam.{name}.exp_avg"].to(p.device),
                    "exp_avg_sq": tensors[f"adam.{name}.exp_avg_sq"].to(p.device),
                }
    return step


def _recipe(cfg: DynTrainConfig) -> dict:
    return asdict(cfg)


# ----------------------------------------------------------------- the run --


def phase_at(cfg: DynTrainConfig, step: int) -> tuple[int, int]:
    """``(phase index, step within it)`` of global step ``step`` (0-based)."""
    start = 0
    for i, p in enumerate(cfg.phases):
        if step < start + p.steps:
            return i, step - start
        start += p.steps
    return len(cfg.phases) - 1, step - start + cfg.phases[-1].steps


def learning_rate(cfg: DynTrainConfig, step: int) -> float:
    """Warm-up then cosine within the phase of global step ``step``."""
    i, s = phase_at(cfg, step)
    p = cfg.phases[i]
    warm = min(1.0, (s + 1) / max(p.warmup, 1))
    cos = 0.5 * (1 + math.cos(math.pi * min(s / max(p.steps - 1, 1), 1.0)))
    return p.lr * warm * (cfg.min_lr_frac + (1 - cfg.min_lr_frac) * cos)


def batch_clips(cfg: DynTrainConfig, step: int) -> list[tuple[int, int]]:
    """The ``(phase, clip index)`` pairs of global step ``step``: ``batch`` distinct clips
    of the phase's sliding pool."""
    i, s = phase_at(cfg, step)
    pool = cfg.phases[i].pool
    rng = np.random.default_rng([cfg.seed, step, 1])
    picks = rng.choice(pool, size=min(cfg.batch, pool), replace=False)
    return [(i, s * cfg.fresh_per_step + int(k)) for k in picks]


def _device(cfg: DynTrainConfig) -> torch.device:
    if cfg.device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if cfg.device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device = 'cuda' but torch sees no CUDA device")
    return torch.device(cfg.device)


def load_student(init: str):
    """The trimmed model whose blocks learn: ``init``'s blocks (a ``whisper-tiny.en-dyn``
    file, checked by :func:`load_whisper_dyn`) or the base model's; every other
    parameter frozen."""
    from splitasr.model.whisper import load_whisper
    from splitasr.model.whisper.model import NAME
    from splitasr.model.whisper.weights import DYN_NAME, load_whisper_dyn

    student = (  # float32: the loss backpropagates through the decoder into the blocks
        load_whisper_dyn(init, decoder_precision="float32")
        if init
        else load_whisper(trim=True, name=DYN_NAME, base=NAME, decoder_precision="float32")
    )
    trained = set(trained_parameters(student).values())
    for p in student.parameters():
        p.requires_grad_(p in trained)
    return student


class LabelPool:
    """The labelled clips of the current phase's sliding window (see the module
    docstring): :meth:`targets` labels what a step draws and has not been labelled yet."""

    def __init__(self, cfg: DynTrainConfig, sources: Sources, reference):
        self.cfg, self.sources, self.reference = cfg, sources, reference
        self.decoder = WhisperDecoder(reference, beam=1)
        self.cache: dict[tuple[int, int], Target] = {}
        self.labelled, self.seconds = 0, 0.0  # clips labelled by this process, and the time it took

    def targets(self, step: int) -> list[Target]:
        """The batch of global step ``step``, labelled."""
        cfg = self.cfg
        keys = batch_clips(cfg, step)
        phase, s = phase_at(cfg, step)
        low = s * cfg.fresh_per_step  # clips below left the window
        self.cache = {k: v for k, v in self.cache.items() if k[0] == phase and k[1] >= low}
        todo = [k for k in keys if k not in self.cache]
        if todo:
            t0 = time.time()
            waves = [
                make_clip(
                    self.sources,
                    np.random.default_rng([cfg.seed, p, k]),
                    cfg.max_seconds,
                    cfg.phases[p].short_frac,
                )
                for p, k in todo
            ]
            self.cache.update(zip(todo, label(self.reference, self.decoder, waves, cfg), strict=True))
            self.labelled += len(todo)
            self.seconds += time.time() - t0
        return [self.cache[k] for k in keys]


def _write(log_path: Path, row: dict) -> None:
    with log_path.open("a") as f:
        f.write(json.dumps(row) + "\n")


def train_dyn(cfg: DynTrainConfig, resume: bool = True, progress: bool = True) -> dict:
    """Run (or continue) the recipe; returns a report with the output file, the steps
    done, the last validation and the seconds per step."""
    from tqdm import tqdm

    from splitasr.model.whisper.weights import DYN_NAME
    from splitasr.training.codec_train import frozen_model

    cfg.check()
    device = _device(cfg)
    amp = cfg.amp and device.type == "cuda"
    sources = load_sources(cfg)
    reference = frozen_model("whisper-tiny.en", cfg.seed, cfg.threads)  # padded, CPU
    student = load_student(cfg.init).to(device)  # before Adam, whose state lives beside it
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    log_path, ckpt_path, blocks_path = out / LOG, out / CHECKPOINT, out / f"{DYN_NAME}.safetensors"
    params = list(trained_parameters(student).values())

    def new_adam() -> torch.optim.Optimizer:
        return torch.optim.Adam(params, lr=cfg.phases[0].lr, betas=(0.9, 0.98), eps=1e-8)

    opt = new_adam()
    step = load_checkpoint(ckpt_path, student, opt, cfg) if resume and ckpt_path.is_file() else 0
    if step == 0:  # a new run: a new log and no stale checkpoint
        ckpt_path.unlink(missing_ok=True)
        log_path.unlink(missing_ok=True)
    stop = min(cfg.steps, cfg.epochs * cfg.epoch_steps) if cfg.epochs else cfg.steps
    _write(
        log_path, {"kind": "start", "step": step, "stop": stop, "resumed": step > 0, "device": str(device)}
    )
    val = load_val(cfg, reference)
    last_val: dict | None = None

    def run_validation(at: int) -> dict | None:
        if val is None:
            return None
        student.cpu().eval()
        row = {"kind": "val", "step": at, "epoch": round(at / cfg.epoch_steps, 2), **validate(student, val)}
        student.to(device)
        _write(log_path, row)
        if progress:
            tqdm.write(json.dumps(row))
        return row

    if cfg.validate_first and step == 0:
        last_val = run_validation(0)
    pool = LabelPool(cfg, sources, reference)
    bar = tqdm(total=stop, initial=step, desc="whisper-dyn", unit="step", disable=not progress, mininterval=5)
    t0, steps_done, window = time.time(), 0, []
    while step < stop:
        phase, s = phase_at(cfg, step)
        if s == 0 and step > 0:
            opt = new_adam()  # each phase starts a fresh Adam, as each GPU run did
        targets = pool.targets(step)
        lr = learning_rate(cfg, step)
        for g in opt.param_groups:
            g["lr"] = lr
        student.train()
        opt.zero_grad(set_to_none=True)
        loss = batch_loss(
            student, targets, _margins(cfg, targets, np.random.default_rng([cfg.seed, step, 2])), device, amp
        )
        gnorm = float(torch.nn.utils.clip_grad_norm_(params, cfg.clip))
        opt.step()
        step += 1
        steps_done += 1
        window.append((loss, gnorm))
        bar.set_postfix(loss=f"{loss:.5f}", lr=f"{lr:.1e}", labelled=pool.labelled)
        bar.update()
        if step % cfg.log_every == 0 or step == stop:
            row = {
                "kind": "train",
                "step": step,
                "phase": phase + 1,
                "loss": float(np.mean([w[0] for w in window])),
                "grad_norm": round(float(np.mean([w[1] for w in window])), 4),
                "lr": lr,
                "labelled": pool.labelled,
                "label_seconds": round(pool.seconds, 1),
                "seconds_per_step": round((time.time() - t0) / steps_done, 2),
            }
            window = []
            _write(log_path, row)
        epoch_end = step % cfg.epoch_steps == 0 or step == stop
        if step % cfg.checkpoint_every == 0 or epoch_end:
            save_checkpoint(ckpt_path, student, opt, step, cfg)
        if epoch_end:
            last_val = run_validation(step) or last_val
            save_blocks(student, blocks_path, {**_recipe(cfg), "steps_done": step, "validation": last_val})
    bar.close()
    if steps_done == 0:  # nothing left to train: the output reflects the checkpoint
        save_blocks(student, blocks_path, {**_recipe(cfg), "steps_done": step, "validation": last_val})
    return {
        "blocks": str(blocks_path),
        "checkpoint": str(ckpt_path),
        "log": str(log_path),
        "steps": step,
        "of": cfg.steps,
        "validation": last_val,
        "seconds_per_step": round((time.time() - t0) / max(steps_done, 1), 2) if steps_done else None,
    }
