"""Train a rate-distortion codec (``lrd``): ``splitasr train-codec --config configs/lrd-whisper-stem.toml``.

Loss per step, over a few utterances::

    rate + lambda x distortion

(the rate's weight ramps from 0 to 1 over the first ``rate_warmup`` steps: with a random
decoder the distortion's gradient is weak at first and the rate term alone would squeeze
the latents to almost nothing before the decoder learns to use them)

* rate: the latents' code length under the codec's learned prior
  (:class:`~splitasr.codecs.rd.FactorizedPrior`, uniform noise for rounding), in kbit per
  second of audio;
* distortion, with the recogniser frozen and the gradients flowing through it into the
  codec's decoder and encoder:

  - Whisper: KL from the text decoder's next-token distributions given the uncompressed
    encoder input to those given the decoded one, teacher-forced on the unsplit model's
    own greedy transcript (prompt + tokens + end token; nats per token, averaged), plus
    ``mse_weight`` x the reconstruction MSE (per channel, in units of its spread);
  - a CTC model (DS2): KL on the CTC posteriors per frame (as
    :mod:`~splitasr.training.codec_train` does), plus the same MSE term.

No labels are used. The frozen model gives, once per utterance, the activation at the
codec's point, the encoder output (Whisper) or CTC log-posteriors, and (Whisper) the
greedy transcript; these are cached as ``.npz`` (no pickle) under ``cache_dir``, in files
of :data:`~splitasr.training.cache.CHUNK` utterances (a long first pass resumes; a larger
``limit_per_manifest`` reuses the full chunks a smaller one computed).

An outlier utterance (one whose loss is over ``skip_factor`` times the median of the
last 200) is left out of the step and counted in the log's ``skipped``: the clipping of
the gradient's norm alone let one such batch throw a long run back by hundreds of steps.

Checkpoints (weights and Adam moments as safetensors, the step, the log and the codec home in the
metadata) go to ``<out>/lrd-checkpoint.safetensors`` every ``checkpoint_every`` steps; a
run finding one continues from it (``resume = true``); a run whose folder has none starts
from the checkpoint in ``init`` (weights, Adam moments and step count), if given: a
second stage with other loss weights, written to its own folder. When ``init``'s codec
config differs (a hyperprior, more rates, a wider encoder or more decoder blocks added), the
weights that fit are loaded, grown ones keep the trained function, and the rest, the step
count and the Adam moments start afresh (:func:`warm_start`). The log is one JSON line per
``log_every`` steps in ``<out>/lrd-train.jsonl``. At the end the codec state (weights and
the prior's run-time tables) is written as ``<out>/lrd.safetensors``.
"""

from __future__ import annotations

import json
import math
import random
import time
from collections import deque
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np
import torch
from torch import nn

from splitasr.codecs.base import CodecError
from splitasr.codecs.rd import LrdConfig, LrdNet, lrd_to_state
from splitasr.codecs.rd_net import net_weights
from splitasr.errors import ConfigError

CHECKPOINT = "lrd-checkpoint"
LOG = "lrd-train.jsonl"


@dataclass
class RdTrainConfig:
    """An ``lrd`` recipe (TOML: ``kind = "lrd"``, top-level keys, ``[codec]`` for :class:`LrdConfig`)."""

    kind: str = "lrd"
    codec: LrdConfig = field(default_factory=LrdConfig)
    model: str = ""
    train: list[str] = field(default_factory=list)
    dev: str = ""  # manifest for the WER check after training ("" : none)
    dev_limit: int = 40
    limit_per_manifest: int = 400  # first N utterances of each (0: all)
    manifest_weights: list[float] = field(
        default_factory=list
    )  # share of draws per train manifest ([]: by size)
    out: str = ""  # state folder; default: the shipped one for (model, point)
    steps: int = 2000
    max_minutes: float = 0.0
    utts_per_step: int = 4
    lr: float = 1e-3
    prior_lr: float = 1e-2
    lmbda: float = 8.0  # kbit/s per nat of KL: larger = better accuracy, more bits
    lmbdas: list[float] = field(default_factory=list)  # one per rate index when codec.rates > 1
    # draw each utterance's rate from [0, rates-1] (lambda interpolated geometrically, as
    # the gains are) instead of the integer indices alone: the rates between keep up
    continuous_rates: bool = False
    mse_weight: float = 0.05
    rate_warmup: int = 0  # steps over which the rate's weight ramps from 0 to 1
    lr_drop_step: int = 0  # from this step on both learning rates are 0.1x (0: never)
    skip_factor: float = 20.0  # loss > this x the recent median: no gradient (0: off)
    seed: int = 0
    threads: int = 0
    log_every: int = 10
    checkpoint_every: int = 50
    resume: bool = True
    init: str = ""  # a folder with an lrd checkpoint to start from when ``out`` has none (a new stage)
    cache_dir: str = "data/cache/rd-train"

    @classmethod
    def from_toml(cls, path: str | Path) -> RdTrainConfig:
        from splitasr.training.trainer import read_toml

        raw = read_toml(Path(path))
        unknown = set(raw) - {f.name for f in fields(cls)}
        unknown |= {f"codec.{k}" for k in set(raw.get("codec", {})) - {f.name for f in fields(LrdConfig)}}
        if unknown:
            raise ConfigError(f"{path}: unknown keys {sorted(unknown)}")
        if raw.get("kind", "lrd") != "lrd":
            raise ConfigError(f"{path}: kind must be 'lrd'")
        return cls(codec=LrdConfig(**raw.pop("codec", {})), **raw)


class OutlierGuard:
    """Says whether a loss is an outlier against the median of the last ``window`` finite
    ones (no verdict before ``min_seen`` of them); ``factor`` 0 turns it off. Outliers join
    the window too: one spike does not move the median, and a lasting change of scale
    (a new phase of training) is taken in after about ``window / 2`` losses instead of
    being skipped for ever."""

    def __init__(self, factor: float, window: int = 200, min_seen: int = 50):
        self.factor, self.min_seen = factor, min_seen
        self.recent: deque[float] = deque(maxlen=window)

    def is_outlier(self, loss: float) -> bool:
        if not math.isfinite(loss):
            return True
        outlier = (
            bool(self.factor)
            and len(self.recent) >= self.min_seen
            and loss > self.factor * float(np.median(self.recent))
        )
        self.recent.append(loss)
        return outlier


@dataclass
class RdItem:
    """One utterance, prepared: ``x`` ``(T, C)`` float16 at the codec's point; ``teacher``
    ``(T', D)`` float16: Whisper's encoder output or CTC log-posteriors; ``tokens`` ``(L,)``
    int64: the teacher-forcing input (Whisper: prompt + greedy transcript), empty for CTC."""

    x: torch.Tensor
    teacher: torch.Tensor
    tokens: torch.Tensor


def prepare_items(
    model, point: str, manifests: list[str], limit: int, cache_dir: str, progress: bool = False
) -> list[RdItem]:
    """Run the frozen (trimmed) model once per utterance: the first ``limit`` of each
    manifest, in order, cached in chunks under ``cache_dir`` (see
    :mod:`splitasr.training.cache`: a stopped pass resumes, a larger ``limit`` reuses)."""
    from splitasr.training.cache import cached_items
    from splitasr.training.codec_train import model_fingerprint

    head = ["rd2", model_fingerprint(model), repr(getattr(model, "config", None)), point] if cache_dir else []
    return cached_items(
        manifests,
        limit,
        cache_dir,
        head,
        lambda utts, root: _teacher_items(model, point, [u.resolve(root) for u in utts]),
        RdItem,
        progress=progress,
    )


def _teacher_items(model, point: str, wavs: list[Path]) -> list[RdItem]:
    """Activation at ``point``, teacher output and (Whisper) greedy transcript per file."""
    from splitasr.audio import load_audio

    whisper = model.output_kind != "logits"
    decoder = model.make_decoder(beam=1) if whisper else None
    items = []
    with torch.inference_mode():
        for wav in wavs:
            wave = torch.from_numpy(load_audio(wav))[None]
            x, lens = model.head(wave, None, point)
            out, _ = model.tail(x, lens, point)
            if whisper:
                ids = decoder.tokens(out[0])
                tokens = torch.tensor([*decoder.prompt, *ids], dtype=torch.int64)
                teacher = out[0]
            else:
                tokens, teacher = torch.zeros(0, dtype=torch.int64), out[0].log_softmax(-1)
            items.append(RdItem(x[0].to(torch.float16), teacher.to(torch.float16), tokens))
    return items


def utterance_weights(counts: list[int], manifest_weights: list[float]) -> list[float] | None:
    """Sampling weight of each utterance so that manifest ``i`` (``counts[i]`` utterances,
    in ``prepare_items`` order) gets ``manifest_weights[i]`` of the draws whatever its size:
    e.g. real FSDD digits drawn 3x as often as the synthetic sentences. ``[]``: ``None``
    (every utterance alike, as before)."""
    if not manifest_weights:
        return None
    if len(manifest_weights) != len(counts):
        raise ConfigError(
            f"manifest_weights has {len(manifest_weights)} values for {len(counts)} train manifests"
        )
    if any(not math.isfinite(w) or w < 0 for w in manifest_weights) or sum(manifest_weights) <= 0:
        raise ConfigError(f"manifest_weights must be finite, >= 0 and not all 0, got {manifest_weights}")
    return [w / n for w, n in zip(manifest_weights, counts, strict=True) for _ in range(n)]


def decoder_kl(model, memory: torch.Tensor, teacher: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """KL(teacher || student) of Whisper's next-token distributions, nats per token.

    ``memory`` ``(1, T', D)``: encoder output from the decoded activation (with gradient);
    ``teacher`` ``(T', D)``: from the uncompressed one; ``tokens`` ``(L,)``: prompt +
    transcript, teacher-forced; the L distributions after each of them are compared."""
    text = model.text_decoder
    inp = tokens[None]

    def logp(mem: torch.Tensor) -> torch.Tensor:
        caches = [{} for _ in text.blocks]
        return text(inp, caches, text.cross_kv(mem), 0).log_softmax(-1)

    with torch.no_grad():
        t = logp(teacher[None].float())
    s = logp(memory)
    return (t.exp() * (t - s)).sum(-1).mean()


def _spread(x: torch.Tensor) -> torch.Tensor:
    std = x.std(0)
    return std.clamp_min(max(1e-2, 0.1 * float(std.median())))


def lmbda_at(lmbdas: list[float], rate: float) -> float:
    """The distortion weight at rate position ``rate`` in ``[0, len(lmbdas) - 1]``:
    geometric interpolation between the neighbouring indices' weights, as
    :meth:`~splitasr.codecs.rd_net.LrdNet.gains` interpolates the gains."""
    i = min(int(math.floor(rate)), len(lmbdas) - 2)
    a = rate - i
    return math.exp((1 - a) * math.log(lmbdas[i]) + a * math.log(lmbdas[i + 1]))


def rd_loss(
    net: LrdNet,
    model,
    item: RdItem,
    point: str,
    fps: float,
    cfg: RdTrainConfig,
    spread: torch.Tensor,
    rate_index: float = 0.0,
    rate_weight: float = 1.0,
) -> tuple[torch.Tensor, dict]:
    """``(loss, parts)`` for one utterance at rate position ``rate_index`` (see the module
    docstring); ``fps`` frames per second at ``point``, ``spread`` ``(C,)`` the MSE's
    per-channel scale; ``rate_weight`` scales the rate term (the warm-up)."""
    x = item.x.float()[None]
    lmbda = lmbda_at(cfg.lmbdas, rate_index) if cfg.codec.rates > 1 else cfg.lmbda
    y, bits = net(x, float(rate_index))
    seconds = x.shape[1] / fps
    rate = bits / 1000 / seconds  # kbit/s
    mse = (((y - x) / spread) ** 2).mean()
    out, _ = model.tail(y, torch.tensor([x.shape[1]]), point)
    if item.tokens.numel():
        kl = decoder_kl(model, out, item.teacher, item.tokens)
    else:
        t = item.teacher.float()[None]
        kl = (t.exp() * (t - out.log_softmax(-1))).sum(-1).mean()
    loss = rate_weight * rate + lmbda * (kl + cfg.mse_weight * mse)
    return loss, {"kbps": float(rate.detach()), "kl": float(kl.detach()), "mse": float(mse.detach())}


def _save_checkpoint(
    out: Path, net: LrdNet, opt: torch.optim.Optimizer, step: int, log: list[dict], home: str = ""
) -> None:
    """Write the checkpoint; ``home`` is the model whose activations the codec codes (its
    codec home: ``whisper-tiny.en`` for the dyn model too), checked when a run loads it."""
    from splitasr.codecs.state import save_state

    arrays = {f"w.{k}": v.detach().numpy().copy() for k, v in net.state_dict().items()}
    # keyed by the parameter's index over the groups in order (what _load_checkpoint maps
    # back), not by position among those with state: a parameter that has had no gradient
    # yet has none, and must not shift the others' moments onto the wrong tensors
    for i, st in opt.state_dict()["state"].items():
        for name in ("exp_avg", "exp_avg_sq"):
            if name in st:
                arrays[f"opt.{i}.{name}"] = st[name].numpy().copy()
        arrays[f"opt.{i}.step"] = np.array([float(st.get("step", 0))])
    tmp = f"{CHECKPOINT}.tmp"
    meta = {"step": step, "config": asdict(net.cfg), "log_tail": log[-5:], **({"home": home} if home else {})}
    save_state(out, tmp, {**arrays, **meta})
    (out / f"{tmp}.safetensors").replace(out / f"{CHECKPOINT}.safetensors")


def _checkpoint_config(st: dict) -> LrdConfig | None:
    """The codec config a checkpoint was taken with, fields it predates at their defaults
    (a checkpoint from before ``hyper_classes`` existed is the same config without a
    hyperprior), or None when it holds none that is valid."""
    try:
        return LrdConfig(**st["config"])
    except (KeyError, TypeError, CodecError):
        return None


def _check_home(st: dict, home: str, file: Path) -> None:
    """Refuse a checkpoint or saved state (``file``) taken on another model's activations
    (DS2's and Whisper's ``features`` are both 80 log-mel values a frame, on different
    scales: the config alone cannot tell them apart). Files from before ``home`` was stored
    pass."""
    theirs = st.get("home")
    if home and theirs and theirs != home:
        raise ConfigError(f"{file} codes {theirs}'s activations, not {home}'s")


def _load_checkpoint(out: Path, net: LrdNet, opt: torch.optim.Optimizer, home: str = "") -> int:
    """Restore a checkpoint into ``net`` and ``opt``; the step it was taken at (0: none).
    Nothing is loaded when it is refused (ConfigError)."""
    from splitasr.codecs.state import load_state

    st = load_state(out, CHECKPOINT)
    if st is None:
        return 0
    _check_home(st, home, out / f"{CHECKPOINT}.safetensors")
    if _checkpoint_config(st) != net.cfg:
        raise ConfigError(
            f"{out}/{CHECKPOINT}.safetensors is for another lrd config; delete it to start over"
        )
    net.load_state_dict(net_weights(st))
    sd = opt.state_dict()
    for i, pid in enumerate(
        sd["param_groups"][0]["params"] + sum((g["params"] for g in sd["param_groups"][1:]), [])
    ):
        if f"opt.{i}.exp_avg" in st:
            sd["state"][pid] = {
                "step": torch.tensor(float(st[f"opt.{i}.step"][0])),
                "exp_avg": torch.from_numpy(np.asarray(st[f"opt.{i}.exp_avg"])),
                "exp_avg_sq": torch.from_numpy(np.asarray(st[f"opt.{i}.exp_avg_sq"])),
            }
    opt.load_state_dict(sd)
    return int(st["step"])


@dataclass
class WarmStart:
    """What :func:`warm_start` did: top-level parts of the new net left at their initial
    values (``new``), parts of the checkpoint that fit nowhere (``dropped``, e.g. a
    factorised ``prior`` replaced by a hyperprior) and parts loaded into a larger shape
    (``grown``)."""

    new: list[str]
    dropped: list[str]
    grown: list[str] = field(default_factory=list)

    def describe(self, init: str) -> str:
        """One line for the log."""
        return (
            f"warm start from {init}: new {', '.join(self.new) or 'nothing'}; "
            f"grown {', '.join(self.grown) or 'nothing'}; "
            f"dropped {', '.join(self.dropped) or 'nothing'}; step count and Adam moments afresh"
        )


def warm_start(init: Path, net: LrdNet, home: str = "") -> WarmStart:
    """Load into ``net`` the weights of ``init``'s checkpoint, for a new stage whose codec
    config differs (a hyperprior, more rates, a wider device encoder or more cloud blocks
    added to a trained codec); the step count and Adam moments start afresh. ``init`` may
    also be a saved codec state (``lrd.safetensors``, e.g. the shipped one): a stage that
    starts from what ships needs no run folder that a clean clone lacks (its cloud
    decoder's float16 weights load as float32).

    Weights whose names and shapes match are copied. A weight that has grown with a wider
    ``enc_hidden`` (:data:`GROWABLE`) gets the old one in its leading slice, its new outputs keep their fresh
    initialisation and its new inputs are zeroed, and a residual block new to the decoder
    starts as the identity (its last convolution zeroed): the grown codec starts as the
    trained one, bit for bit, and learns to use what was added. The normalisation buffers
    (``in_mean``, ``in_std``) come from the checkpoint too: the encoder's weights were
    trained against them. Refuses a checkpoint for another point or latent (nothing of it
    would carry over), a narrower encoder, naming the fields that differ, or one of another
    model (``home``: see :func:`_check_home`)."""
    from splitasr.codecs.state import load_state

    shipped = init.suffix == ".safetensors"
    st = load_state(init.parent, init.stem) if shipped else load_state(init, CHECKPOINT)
    old = _checkpoint_config(st) if st is not None else None
    if old is None:
        where = init.name if shipped else f"its {CHECKPOINT}.safetensors"
        raise ConfigError(f"init = {str(init)!r}: {where} holds no valid lrd config")
    if shipped and "home" not in st:  # a state saved before it stored its home: its model
        st = {**st, "home": st.get("model")}
    _check_home(st, home, init if shipped else init / f"{CHECKPOINT}.safetensors")
    keep = ("point", "in_dim", "latent_dim", "stride")
    differ = [k for k in keep if getattr(old, k) != getattr(net.cfg, k)]
    if old.enc_hidden > net.cfg.enc_hidden:
        differ.append("enc_hidden (narrower)")
    if differ:
        raise ConfigError(
            f"init = {str(init)!r}: its codec differs in {', '.join(differ)}; nothing to start from"
        )
    mine = net.state_dict()
    have = net_weights(st)
    fits = {k: have[k] for k in mine if k in have and have[k].shape == mine[k].shape}
    grown = {
        k: _grow(have[k], mine[k])
        for k in GROWABLE
        if k in mine and k in have and k not in fits and _fits_in(have[k], mine[k])
    }
    identity = {
        k: torch.zeros_like(v) for k, v in mine.items() if k.startswith("dec_more.") and ".conv2." in k
    }
    identity = {k: v for k, v in identity.items() if k not in have}
    net.load_state_dict({**fits, **grown, **identity}, strict=False)
    loaded = set(fits) | set(grown)
    return WarmStart(
        new=sorted({k.split(".")[0] for k in mine if k not in loaded}),
        dropped=sorted({k.split(".")[0] for k in have if k not in loaded}),
        grown=sorted({k.split(".")[0] for k in grown}),
    )


# The weights a wider ``enc_hidden`` grows (outputs along dim 0, inputs along dim 1). Nothing
# else is grown: e.g. the gains of a codec given more rates start afresh rather than mixing
# trained rows with new ones out of order.
GROWABLE = ("enc1.weight", "enc1.bias", "enc2.weight")


def _fits_in(old: torch.Tensor, new: torch.Tensor) -> bool:
    return old.dim() == new.dim() and all(a <= b for a, b in zip(old.shape, new.shape, strict=True))


def _grow(old: torch.Tensor, new: torch.Tensor) -> torch.Tensor:
    """``new``'s fresh values with ``old`` in the leading slice and every new input (index
    past ``old``'s along dims 1..: a ``Conv1d`` weight is ``(out, in, k)``) zeroed, so the
    grown layer computes what ``old`` did."""
    out = new.clone()
    for dim in range(1, new.dim()):
        out.narrow(dim, old.shape[dim], new.shape[dim] - old.shape[dim]).zero_()
    out[tuple(slice(0, n) for n in old.shape)] = old
    return out


def _start_stage(
    cfg: RdTrainConfig, net: LrdNet, opt: torch.optim.Optimizer, home: str, progress: bool
) -> int:
    """Load ``cfg.init`` into a fresh run; the step it counts on from. A saved codec state
    (``*.safetensors``) gives its weights (step 0); a run folder's checkpoint of the same
    codec gives weights, Adam moments and step, one of another codec what fits (step 0)."""
    init = Path(cfg.init)
    step, started = 0, None
    if init.suffix == ".safetensors":
        if not init.is_file():
            raise ConfigError(f"init = {cfg.init!r}: no such codec state")
        started = warm_start(init, net, home)
    else:
        if not (init / f"{CHECKPOINT}.safetensors").is_file():
            raise ConfigError(f"init = {cfg.init!r}: no {CHECKPOINT}.safetensors there")
        try:
            step = _load_checkpoint(init, net, opt, home)
        except ConfigError:  # another codec config: keep what fits, learn the rest
            started = warm_start(init, net, home)
        if step >= cfg.steps:  # the same codec goes on counting from init's step
            raise ConfigError(
                f"init = {cfg.init!r} stands at step {step} and steps = {cfg.steps}: a stage with init's "
                "codec counts on from init's step, so steps (and lr_drop_step) must be past it"
            )
    if started is not None and progress:
        print(started.describe(cfg.init), flush=True)
    return step


def train_rd(cfg: RdTrainConfig, progress: bool = True) -> dict:
    """Train (or continue), save the codec state and report; returns the report."""
    from splitasr.codecs.state import save_state, shipped_state_dir
    from splitasr.training.codec_train import frozen_model

    if not cfg.train or not cfg.model:
        raise ConfigError("an lrd recipe needs model = ... and train = [manifests]")
    if cfg.codec.rates > 1 and len(cfg.lmbdas) != cfg.codec.rates:
        raise ConfigError(f"an lrd recipe with {cfg.codec.rates} rates needs as many lmbdas, one per rate")
    if any(not lm > 0 for lm in cfg.lmbdas):
        raise ConfigError("every lmbda must be > 0")
    full = frozen_model(cfg.model, cfg.seed, cfg.threads)
    ccfg = cfg.codec
    info = {p.name: p for p in full.point_info()}
    if ccfg.point not in info or ccfg.point == "audio":
        raise ConfigError(f"lrd cannot train at {ccfg.point!r}; choose from {', '.join(list(info)[1:])}")
    if info[ccfg.point].dim != ccfg.in_dim:
        raise ConfigError(
            f"{ccfg.point} has {info[ccfg.point].dim} values per frame, config says {ccfg.in_dim}"
        )
    model = full.distilling() if hasattr(full, "distilling") else full
    out = Path(cfg.out) if cfg.out else shipped_state_dir(full.codec_home(ccfg.point), ccfg.point)
    out.mkdir(parents=True, exist_ok=True)
    items = prepare_items(model, ccfg.point, cfg.train, cfg.limit_per_manifest, cfg.cache_dir, progress)
    if not items:
        raise ConfigError("the training manifests hold no utterances")
    fps = info[ccfg.point].frames_per_second
    from splitasr.manifest import read_manifest

    counts = [len(read_manifest(m, cfg.limit_per_manifest)) for m in cfg.train]  # as cached_items read them
    weights = utterance_weights(counts, cfg.manifest_weights)

    net = LrdNet(ccfg)
    xs = torch.cat([it.x.float() for it in items[:: max(len(items) // 200, 1)]])
    net.in_mean.copy_(xs.mean(0))
    net.in_std.copy_(xs.std(0).clamp_min(1e-3))
    spread = _spread(xs)
    prior = [p for n, p in net.named_parameters() if n.startswith(("prior.", "prior_z."))]
    rest = [p for n, p in net.named_parameters() if not n.startswith(("prior.", "prior_z."))]
    opt = torch.optim.Adam([{"params": rest, "lr": cfg.lr}, {"params": prior, "lr": cfg.prior_lr}])
    home = full.codec_home(ccfg.point)
    step = _load_checkpoint(out, net, opt, home) if cfg.resume else 0
    if not step and cfg.init:  # a new stage: start from another run or a saved state
        step = _start_stage(cfg, net, opt, home, progress)
    rng = random.Random(cfg.seed + step)
    log_path = out / LOG
    log: list[dict] = []
    t0, window, skipped = time.time(), [], 0
    guard = OutlierGuard(cfg.skip_factor)
    net.train()
    while step < cfg.steps:
        opt.zero_grad(set_to_none=True)
        scale = 0.1 if cfg.lr_drop_step and step >= cfg.lr_drop_step else 1.0
        for group, lr in zip(opt.param_groups, (cfg.lr, cfg.prior_lr), strict=True):
            group["lr"] = lr * scale
        if weights is None:
            batch = rng.sample(items, min(cfg.utts_per_step, len(items)))
        else:
            batch = rng.choices(items, weights, k=cfg.utts_per_step)
        for it in batch:
            r = rng.uniform(0, ccfg.rates - 1) if cfg.continuous_rates else rng.randrange(ccfg.rates)
            warm = min(1.0, (step + 1) / cfg.rate_warmup) if cfg.rate_warmup else 1.0
            loss, parts = rd_loss(net, model, it, ccfg.point, fps, cfg, spread, r, warm)
            if guard.is_outlier(float(loss.detach())):
                skipped += 1
                continue
            (loss / cfg.utts_per_step).backward()
            window.append({"loss": float(loss.detach()), **parts})
        nn.utils.clip_grad_norm_(net.parameters(), 5.0)
        opt.step()
        step += 1
        if step % cfg.log_every == 0 or step == cfg.steps:
            row = {"step": step, "minutes": round((time.time() - t0) / 60, 2)}
            if window:
                row |= {k: round(float(np.mean([w[k] for w in window])), 4) for k in window[0]}
            row["skipped"], window, skipped = skipped, [], 0
            row["lr"] = opt.param_groups[0]["lr"]
            log.append(row)
            with log_path.open("a") as f:
                f.write(json.dumps(row) + "\n")
            if progress:
                print(json.dumps(row), flush=True)
        if step % cfg.checkpoint_every == 0:
            _save_checkpoint(out, net, opt, step, log, home)
        if cfg.max_minutes and time.time() - t0 > 60 * cfg.max_minutes:
            break
    _save_checkpoint(out, net, opt, step, log, home)
    net.eval()
    recipe = {k: v for k, v in asdict(cfg).items() if k != "codec"}
    extra = {"trained": {"steps": step, "utterances": len(items), "recipe": recipe, "log_tail": log[-3:]}}
    state = lrd_to_state(net, {**extra, "model": str(cfg.model), "home": home})
    written = save_state(out, "lrd", state)
    sample = items[: min(len(items), 20)]
    rates = [measure_rate("lrd+ans", out, sample, fps, r) for r in range(ccfg.rates)]
    if ccfg.rates > 1:  # what lrd@<kbps>k picks from; measured on training audio
        written = save_state(out, "lrd", {**state, "rate_kbps": [r["kbps_body"] for r in rates]})
    report = {"codec": "lrd+ans", "state": str(written), "steps": step, "log_tail": log[-3:], "rate": rates}
    report["device"] = device_cost(net, full, ccfg.point, fps)
    if cfg.dev:
        from splitasr.training.codec_train import evaluate_codec

        report["dev"] = evaluate_codec(full, "lrd+ans", out, ccfg.point, cfg.dev, cfg.dev_limit)
    return report


def measure_rate(
    name: str, state_dir: str | Path, items: list[RdItem], fps: float, rate: float = 0.0
) -> dict:
    """Payload body bytes against the prior's estimate on ``items`` (real activations).

    The ANS stack adds a fixed 4 to 8 bytes a payload (its final 32-bit state; see
    :class:`~splitasr.codecs.entropy.ChannelPrior`): under 2 % from about 400 bytes of
    body (a 3-s utterance at ~1 kbit/s) up."""
    from splitasr.codecs import get_codec
    from splitasr.codecs.base import Codec

    codec = get_codec(name, state_dir)
    codec = Codec(codec.transform.at_rate(rate), codec.coder)
    body = est_bits = seconds = 0.0
    for it in items:
        x = it.x.float()[None]
        sym = codec.transform.forward(x.numpy())
        body += len(codec.coder.encode(sym.data, sym.alphabet))  # the payload's body, exactly
        est_bits += codec.transform.prior.bits(sym.data)
        seconds += x.shape[1] / fps
    return {
        "rate": rate,
        "body_bytes": int(body),
        "estimated_bytes": round(est_bits / 8, 1),
        "ratio": round(body * 8 / max(est_bits, 1e-9), 4),
        "overhead_bytes_per_payload": round((body - est_bits / 8) / max(len(items), 1), 2),
        "kbps_body": round(body * 8 / 1000 / max(seconds, 1e-9), 3),
    }


def device_cost(net: LrdNet, model, point: str, fps: float, seconds: float = 3.0) -> dict:
    """The device encoder's parameters (bytes as float32) and multiply-adds for ``seconds``
    of audio, against the model's: its parameters and the FLOPs of its head and tail
    (audio to encoder output or CTC logits; Whisper's text decoder not counted, so the
    fraction is an upper bound), counted by torch's ``FlopCounterMode``."""
    from torch.utils.flop_counter import FlopCounterMode

    t = int(math.ceil(seconds * fps))
    wave = torch.zeros(1, int(seconds * model.sample_rate))
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        h, lens = model.head(wave, None, point)
        model.tail(h, lens, point)
    model_macs = counter.get_total_flops() // 2
    macs = net.encoder_flops(t)
    return {
        "encoder_params": net.encoder_parameters(),
        "encoder_bytes_f32": 4 * net.encoder_parameters(),
        "encoder_macs_3s": macs,
        "model_params": sum(p.numel() for p in model.parameters()),
        "model_macs_3s": int(model_macs),
        "encoder_share_of_model_macs": round(macs / max(model_macs, 1), 5),
    }
