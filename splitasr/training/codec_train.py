"""Train a learned codec: ``splitasr train-codec --config configs/codec-deepcod.toml``.

The recogniser stays frozen (one cloud model serves every codec); only the codec's
encoder and decoder learn. Per utterance the frozen model gives, once, before training:

* the encoder's input: the activation at ``point`` (for ``bnf``, QM-features of the audio);
* the target: the activation at ``decodes_to``;
* the teacher: the model's CTC log-posteriors ``(T, V)`` from that target (for a model
  whose tail ends in encoder features, such as Whisper, those features).

The loss mixes reconstruction MSE (per channel, in units of the target's standard
deviation), distillation (KL from the teacher's posteriors to those the frozen tail
computes from the decoded activation, or MSE between tail outputs for an encoder-output
model; gradients flow through the tail into the decoder)
and, optionally, CTC on the transcript. ``ae`` uses MSE alone, as in paper 000. After
training the ``ans`` table for the latent is learned (:func:`~splitasr.training.calibrate.calibrate`)
and greedy WER through the codec is measured on the dev manifest.
"""

from __future__ import annotations

import hashlib
import math
import random
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np
import torch
from torch import nn

from splitasr.codecs.learned import LearnedCodecConfig, LearnedCodecNet, net_to_state, qm_input
from splitasr.errors import ConfigError

CALIB_UTTS = 200  # utterances per manifest for the coder's probability table


@dataclass
class CodecTrainConfig:
    """A learned codec's recipe (TOML: top-level keys, and ``[codec]`` for the network)."""

    codec: LearnedCodecConfig = field(default_factory=LearnedCodecConfig)
    model: str = ""  # model name or checkpoint path, frozen; required (a codec fits one model)
    train: list[str] = field(default_factory=list)  # manifests
    dev: str = ""  # manifest for the WER check after training
    limit_per_manifest: int = 3000  # first N utterances of each (0: all)
    dev_limit: int = 200
    out: str = ""  # state folder; default: the shipped one for (model, point)
    steps: int = 1500
    max_minutes: float = 0.0  # stop early after this long (0: no limit)
    batch_seconds: float = 60.0
    lr: float = 2e-3
    weight_decay: float = 1e-4
    mse_weight: float = 1.0
    kd_weight: float = 1.0
    ctc_weight: float = 0.0
    kd_temperature: float = 1.0
    seed: int = 0
    threads: int = 0
    coder: str = "ans"  # entropy coder whose table is learned after training
    cache_dir: str = "data/cache/codec-train"  # prepared activations ("" : no cache)
    init: str = ""  # state folder of a trained codec of the same config to start from
    weights_dtype: str = "float32"  # or "float16": half the shipped file

    @classmethod
    def from_toml(cls, path: str | Path) -> CodecTrainConfig:
        from splitasr.training.trainer import read_toml

        path = Path(path)
        raw = read_toml(path)
        unknown = set(raw) - {f.name for f in fields(cls)}
        unknown |= {
            f"codec.{k}" for k in set(raw.get("codec", {})) - {f.name for f in fields(LearnedCodecConfig)}
        }
        if unknown:
            raise ConfigError(f"{path}: unknown keys {sorted(unknown)}")
        return cls(codec=LearnedCodecConfig(**raw.pop("codec", {})), **raw)


@dataclass
class _Item:
    x: torch.Tensor  # (T_in, in_dim) float16: encoder input
    target: torch.Tensor  # (T_out, out_dim) float16: activation at decodes_to
    teacher: torch.Tensor  # (T_out, V) float16: the frozen model's output, see teacher_targets
    labels: torch.Tensor  # (L,) int
    text: str


def teacher_targets(model, out: torch.Tensor) -> torch.Tensor:
    """What the student's tail output is distilled towards: CTC log-posteriors ``(N, T, V)``
    for models whose tail ends in class scores, else the tail output itself ``(N, T, D)``
    (Whisper's encoder output, which its text decoder attends to)."""
    return out.log_softmax(-1) if model.output_kind == "logits" else out


def model_fingerprint(model) -> str:
    """SHA-256 (16 hex digits) of the model's weights: which model a codec was trained for."""
    h = hashlib.sha256()
    for k, v in sorted(model.state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def prepare(
    model,
    cfg: LearnedCodecConfig,
    manifests: list[str],
    limit: int,
    cache_dir: str | Path | None = None,
    progress: bool = False,
) -> list[_Item]:
    """Run the frozen model once over the first ``limit`` utterances of each manifest; see
    the module docstring. With ``cache_dir`` the pass is cached in chunks keyed by the
    model, the points and each chunk's audio and transcripts (see
    :mod:`splitasr.training.cache`), so codecs that read the same point share the work and
    a stopped pass resumes."""
    from splitasr.training.cache import cached_items

    config = repr(getattr(model, "config", None))  # e.g. Whisper trimmed or padded
    head = ["codec2", model_fingerprint(model), config, cfg.point, cfg.decodes_to] if cache_dir else []
    return cached_items(
        manifests,
        limit,
        cache_dir,
        head,
        lambda utts, root: _teacher_items(model, cfg, utts, root),
        _Item,
        with_text=True,
        progress=progress,
    )


def _teacher_items(model, cfg: LearnedCodecConfig, utts: list, root: Path) -> list[_Item]:
    """Encoder input, target, teacher and labels of each utterance (manifest entries
    resolved against ``root``)."""
    from splitasr.audio import load_audio, qm_features
    from splitasr.pipeline import Cloud, Edge
    from splitasr.text import CharTokenizer

    tok = CharTokenizer()
    edge, cloud = Edge(model), Cloud(model, decoder=model.make_decoder(beam=1))
    items = []
    for utt in utts:
        wave = torch.from_numpy(load_audio(utt.resolve(root)))
        target, t_lens = edge.head(wave, cfg.decodes_to)
        out, _ = cloud.tail(target, t_lens, cfg.decodes_to)
        if cfg.point == "audio":
            x = qm_input(qm_features(wave[None]))
        elif cfg.point == cfg.decodes_to:
            x = target
        else:
            x, _ = edge.head(wave, cfg.point)
        items.append(
            _Item(
                x[0].to(torch.float16),
                target[0].to(torch.float16),
                teacher_targets(model, out)[0].to(torch.float16),
                torch.tensor(tok.encode(utt.text)),
                utt.text,
            )
        )
    return items


def _batches(items: list[_Item], frames: int, rng: random.Random) -> list[list[int]]:
    from splitasr.training.trainer import pack_by_length

    lengths = [it.x.shape[0] for it in items]
    order = sorted(range(len(items)), key=lambda i: lengths[i] + rng.random())  # random ties
    out = pack_by_length(order, lengths, frames)
    rng.shuffle(out)
    return out


def _pad(tensors: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """float32 ``(N, T, C)`` and lengths ``(N,)``."""
    lens = torch.tensor([t.shape[0] for t in tensors])
    return nn.utils.rnn.pad_sequence([t.float() for t in tensors], batch_first=True), lens


def _mask(lens: torch.Tensor, t: int) -> torch.Tensor:
    return (torch.arange(t)[None, :] < lens[:, None]).float()


def frozen_model(name: str, seed: int, threads: int = 0):
    """The recogniser a codec trains against, its weights frozen (only the codec learns),
    after seeding torch and setting its threads (0: torch's default)."""
    from splitasr.model.registry import load_model

    torch.manual_seed(seed)
    if threads:
        torch.set_num_threads(threads)
    model = load_model(name, decoder_precision="float32")  # gradients flow through the decoder
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def train_codec(cfg: CodecTrainConfig, progress: bool = True) -> dict:
    """Train, save the state (and the coder's table) and report; returns the report."""

    from splitasr.codecs.state import save_state, shipped_state_dir
    from splitasr.training.calibrate import calibrate, collect_activations

    if not cfg.train:
        raise ConfigError("the codec recipe names no training manifests (train = [...])")
    if not cfg.model:
        raise ConfigError('the codec recipe names no model (model = "ds2", "whisper-tiny.en", ...)')
    model = frozen_model(cfg.model, cfg.seed, cfg.threads)
    if cfg.ctc_weight > 0 and model.output_kind != "logits":
        raise ConfigError(f"ctc_weight needs a model whose tail emits CTC logits; {model.name} does not")
    ccfg = cfg.codec
    for point in (ccfg.point, ccfg.decodes_to):
        if point not in model.split_points:
            raise ConfigError(f"unknown split point {point!r}; choose from {', '.join(model.split_points)}")
    info = {p.name: p for p in model.point_info()}
    if ccfg.point != "audio" and info[ccfg.point].dim != ccfg.in_dim:
        raise ConfigError(
            f"{ccfg.point} has {info[ccfg.point].dim} values per frame, config says {ccfg.in_dim}"
        )
    if info[ccfg.decodes_to].dim != ccfg.out_dim:
        raise ConfigError(
            f"{ccfg.decodes_to} has {info[ccfg.decodes_to].dim} values per frame, not {ccfg.out_dim}"
        )
    out = Path(cfg.out) if cfg.out else shipped_state_dir(model.codec_home(ccfg.point), ccfg.point)

    start = _init_from(cfg.init, ccfg) if cfg.init else None  # refuse a mismatch before the slow part
    net, recipe = _fit(model.distilling(), cfg, info, start, progress)
    extra = {"trained": recipe, "model": str(cfg.model), "model_sha": model_fingerprint(model)}
    written = [save_state(out, ccfg.kind, net_to_state(net, extra, cfg.weights_dtype))]
    # The coder's probability table, learned from the trained encoder's latents.
    calib = [a for m in cfg.train for a in collect_activations(model, m, ccfg.point, CALIB_UTTS)]
    written += calibrate(f"{ccfg.kind}+{cfg.coder}", calib, out)
    report = {"codec": f"{ccfg.kind}+{cfg.coder}", "state": [str(p) for p in written], "training": recipe}
    if cfg.dev:
        report["dev"] = evaluate_codec(
            model, f"{ccfg.kind}+{cfg.coder}", out, ccfg.point, cfg.dev, cfg.dev_limit
        )
    return report


def _fit(model, cfg: CodecTrainConfig, info: dict, start, progress: bool) -> tuple[LearnedCodecNet, dict]:
    """Prepare the data and train the network through the frozen ``model``; returns the
    trained network (eval mode) and what the recipe did."""
    from tqdm import tqdm

    ccfg = cfg.codec
    items = prepare(model, ccfg, cfg.train, cfg.limit_per_manifest, cfg.cache_dir, progress)
    if not items:
        raise ConfigError("the training manifests hold no utterances")
    net = LearnedCodecNet(ccfg)
    xs = torch.cat([it.x.float() for it in items[:: max(len(items) // 1000, 1)]])
    net.in_mean.copy_(xs.mean(0))
    net.in_std.copy_(xs.std(0).clamp_min(1e-3))
    if start is not None:
        net = start
    ts = torch.cat([it.target.float() for it in items[:: max(len(items) // 1000, 1)]])
    target_std = _spread(ts)
    teacher_std = _spread(torch.cat([it.teacher.float() for it in items[:: max(len(items) // 1000, 1)]]))

    opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    warm = max(1, cfg.steps // 20)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda i: min((i + 1) / warm, 0.5 * (1 + math.cos(math.pi * min(i / cfg.steps, 1.0))))
    )
    ctc = nn.CTCLoss(blank=0, zero_infinity=True)
    rng = random.Random(cfg.seed)
    frames = int(
        cfg.batch_seconds
        * (100 if ccfg.point in ("audio", "features") else info[ccfg.point].frames_per_second)
    )
    need_tail = cfg.kd_weight > 0 or cfg.ctc_weight > 0
    bar = tqdm(
        total=cfg.steps, desc=f"train-codec {ccfg.kind}", unit="step", disable=not progress, mininterval=5
    )
    step, t0, history, batches = 0, time.time(), [], []
    net.train()
    while step < cfg.steps:
        if not batches:
            batches = _batches(items, frames, rng)
        idx = batches.pop()
        x, _ = _pad([items[i].x for i in idx])
        target, t_lens = _pad([items[i].target for i in idx])
        y, _ = net(x)
        mask = _mask(t_lens, y.shape[1]).unsqueeze(-1)
        mse = (((y - target) / target_std) ** 2 * mask).sum() / (mask.sum() * ccfg.out_dim)
        loss, kd_v, ctc_v = cfg.mse_weight * mse, 0.0, 0.0
        if need_tail:
            logits, lens = model.tail(y * mask, t_lens, ccfg.decodes_to)
            logp = logits.log_softmax(-1)
            if cfg.kd_weight > 0:
                teacher, _ = _pad([items[i].teacher for i in idx])
                if model.output_kind == "logits":  # KL from the teacher's posteriors
                    tt = cfg.kd_temperature
                    tp = (teacher / tt).log_softmax(-1)
                    sp = (logits / tt).log_softmax(-1)
                    kl = (tp.exp() * (tp - sp)).sum(-1)
                    kd = (kl * mask[..., 0]).sum() / mask.sum() * tt * tt
                else:  # MSE to the teacher's output, in units of its spread
                    err = ((logits - teacher) / teacher_std) ** 2
                    kd = (err * mask).sum() / (mask.sum() * err.shape[-1])
                loss = loss + cfg.kd_weight * kd
                kd_v = float(kd.detach())
            if cfg.ctc_weight > 0:
                labels, l_lens = _pad([items[i].labels[:, None] for i in idx])
                c = ctc(logp.transpose(0, 1), labels[..., 0].long(), lens, l_lens)
                loss = loss + cfg.ctc_weight * c
                ctc_v = float(c.detach())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(net.parameters(), 5.0)
        opt.step()
        sched.step()
        step += 1
        history.append((float(mse.detach()), kd_v, ctc_v))
        recent = np.mean(history[-50:], axis=0)
        bar.set_postfix(mse=f"{recent[0]:.3f}", kd=f"{recent[1]:.3f}", ctc=f"{recent[2]:.2f}")
        bar.update()
        if cfg.max_minutes and time.time() - t0 > 60 * cfg.max_minutes:
            break
    bar.close()
    net.eval()
    minutes = (time.time() - t0) / 60
    recipe = {
        "steps": step,
        "minutes": round(minutes, 1),
        "train": cfg.train,
        "utterances": len(items),
        "loss_last50": [round(float(v), 4) for v in np.mean(history[-50:], axis=0)],
        "recipe": {k: v for k, v in asdict(cfg).items() if k != "codec"},
    }
    return net, recipe


def _spread(x: torch.Tensor) -> torch.Tensor:
    """Per-value scale ``(C,)`` of the errors in the MSE losses: each value's standard
    deviation over ``x (T, C)``, floored at a tenth of the median one. Without the floor,
    values that hardly vary (dead GELU channels at Whisper's stem: 10 % have std < 0.008)
    dominate the loss with errors nobody downstream notices."""
    std = x.std(0)
    return std.clamp_min(max(1e-2, 0.1 * float(std.median())))


def _init_from(state_dir: str, ccfg: LearnedCodecConfig) -> LearnedCodecNet:
    """A trained codec's network to continue from; its config must equal ``ccfg``."""
    from splitasr.codecs.learned import net_from_state
    from splitasr.codecs.state import load_state

    state = load_state(state_dir, ccfg.kind)
    if state is None:
        raise ConfigError(f"init: no trained {ccfg.kind} codec in {state_dir}")
    net = net_from_state(state, ccfg.kind)
    if net.cfg != ccfg:
        raise ConfigError(f"init: the codec in {state_dir} has another config ({net.cfg})")
    return net.train()


def evaluate_codec(model, name: str, state_dir: str | Path, point: str, manifest: str, limit: int) -> dict:
    """Greedy WER/CER of the unsplit model and through codec ``name`` at ``point``, and the
    payload rate in kbit/s of audio, on the first ``limit`` utterances of ``manifest``."""
    from splitasr.audio import load_audio
    from splitasr.manifest import read_manifest
    from splitasr.pipeline import Cloud, CodecBank, Edge, recognise
    from splitasr.wer import error_rates

    decoder = model.make_decoder(beam=1)
    codecs = CodecBank(model, {point: state_dir})
    edge, cloud = Edge(model, codecs), Cloud(model, codecs, decoder)
    root = Path(manifest).parent
    refs, base, hyps, nbytes, seconds = [], [], [], 0, 0.0
    for utt in read_manifest(manifest)[:limit]:
        wave = torch.from_numpy(load_audio(utt.resolve(root)))
        seconds += wave.shape[0] / model.sample_rate
        base.append(recognise(model, wave, decoder))
        sent = edge.encode(wave, point, name)
        hyps.append(cloud.transcribe(sent.payload, point, name).text)
        refs.append(utt.text)
        nbytes += len(sent.payload)
    b, c = error_rates(refs, base), error_rates(refs, hyps)
    return {
        "utterances": len(refs),
        "unsplit_wer": b["wer"],
        "codec_wer": c["wer"],
        "codec_cer": c["cer"],
        "wer_delta": c["wer"] - b["wer"],
        "kbps": nbytes * 8 / 1000 / max(seconds, 1e-9),
    }
