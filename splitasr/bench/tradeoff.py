"""Bandwidth against accuracy for every split point x codec (``splitasr bench tradeoff``).

For each utterance the head runs once per split point; each codec then compresses the
activation, the payload is decompressed, the tail finishes, and the greedy transcript is
scored. Cloud-only audio codecs (PCM, FLAC, Opus) run at the ``audio`` point. Outputs:
results.json, table.md and a Pareto plot (kbit/s per second of audio, log scale, vs WER).

Codecs that need calibration (quantiser ranges, learned probability tables) use the
shipped state under ``splitasr/assets/codecs/<model>/<point>/`` when it is there, and are
otherwise calibrated on ``--calib-manifest`` into ``<out>/state/<point>/``.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from splitasr.audio import load_audio
from splitasr.bench.report import machine_description, markdown_table, write_results
from splitasr.codecs import get_codec
from splitasr.codecs.base import CODERS, TRANSFORMS, read_header, split_name
from splitasr.codecs.state import shipped_state_dir, state_path
from splitasr.errors import ConfigError
from splitasr.manifest import read_manifest
from splitasr.model.registry import load_model
from splitasr.pipeline import Cloud, Edge, recognise
from splitasr.training.calibrate import calibrate, collect_activations
from splitasr.wer import error_rates

AUDIO_CODECS = ("pcm16", "flac", "opus24", "opus16", "opus12", "opus10", "opus8", "opus6")
ACTIVATION_CODECS = (
    "raw",
    "f32+zstd",
    "f32+huffman",
    "f32+ans",
    "f16+zstd",
    "q8+huffman",
    "q8+ans",
    "q6+ans",
    "q4+ans",
    "q2+ans",
    "intp4",
    "dct50+huffman",
    "cs8",
)
# Learned codecs run wherever `splitasr train-codec` has shipped state for a point.
LEARNED_CODECS = ("ae+ans", "deepcod+ans", "bnf+ans", "lrd+ans")
LEARNED_TRANSFORMS = {split_name(c)[0] for c in LEARNED_CODECS}
QUICK_CODECS = ("raw", "f32+ans", "f32+huffman", "q8+ans", "q4+ans", "dct50+huffman")
CS_MAX_CHANNELS = 512  # ISTA costs O(iterations x C x M) per frame: skip it on wide conv maps


@dataclass
class Utt:
    wave: torch.Tensor  # (S,)
    text: str
    seconds: float


def _needs_state(name: str) -> bool:
    t, c = split_name(name)
    return hasattr(TRANSFORMS[t], "fit_state") or hasattr(CODERS[c], "fit_state")


def _state_dir_for(
    model,
    name: str,
    point: str,
    out: Path,
    calib_manifest: str | None,
    calib_limit: int,
    cache: dict,
    state_dirs: dict[str, Path],
) -> Path | None:
    """``state_dirs[point]`` or the shipped state if complete for ``name``, else calibrate
    into ``out/state/point``."""
    t, c = split_name(name)
    shipped = shipped_state_dir(model.codec_home(point), point)
    if point in state_dirs and state_path(state_dirs[point], t).is_file():
        shipped = state_dirs[point]  # a given folder first, then the shipped one
    if t in LEARNED_TRANSFORMS:  # trained, never calibrated here: its state folder or none
        return shipped if state_path(shipped, t).is_file() else None
    if not _needs_state(name):
        return None
    keys = [k for k, cls in ((t, TRANSFORMS[t]), (f"{t}+{c}", CODERS[c])) if hasattr(cls, "fit_state")]
    if all(state_path(shipped, k).is_file() for k in keys):
        return shipped
    if calib_manifest is None:
        return None  # the codec falls back to per-message statistics
    local = out / "state" / point
    if not all(state_path(local, k).is_file() for k in keys):
        if point not in cache:
            cache[point] = collect_activations(model, calib_manifest, point, calib_limit)
        calibrate(name, cache[point], local)
    return local


def run_tradeoff_bench(
    manifest: str,
    out: str,
    model_path: str | None = None,
    points: list[str] | None = None,
    codecs: list[str] | None = None,
    audio_codecs: list[str] | None = None,
    limit: int | None = None,
    calib_manifest: str | None = None,
    calib_limit: int = 200,
    quick: bool = False,
    learned_codecs: list[str] | None = None,
    state_dirs: dict[str, str] | None = None,
) -> dict:
    """Every ``(point, codec)`` job on the first ``limit`` utterances of ``manifest``.

    ``state_dirs`` maps a split point to a folder of codec state looked in before the
    shipped one (e.g. ``{"stem": "runs/lrd-stem"}``: a codec trained by
    ``splitasr train-codec`` and not shipped); learned codecs whose state is found there
    or shipped join the jobs.
    """
    from tqdm import tqdm

    model = load_model(model_path)
    outp = Path(out)
    if quick:
        limit = limit or 30
        codecs = codecs or list(QUICK_CODECS)
        audio_codecs = audio_codecs if audio_codecs is not None else ["flac", "opus12"]
        points = points or model.split_points[1:4:2]  # the front end and one point deeper
    codecs = list(ACTIVATION_CODECS) if codecs is None else codecs
    learned_codecs = list(LEARNED_CODECS) if learned_codecs is None else learned_codecs
    audio_codecs = list(AUDIO_CODECS) if audio_codecs is None else audio_codecs
    points = points or [p for p in model.split_points if p not in ("audio", model.split_points[-1])]
    overrides = {p: Path(d) for p, d in (state_dirs or {}).items()}
    unknown = [p for p in [*points, *overrides] if p not in model.split_points]
    if unknown:
        raise ConfigError(
            f"{model.name} has no split point {unknown[0]!r}; choose from {', '.join(model.split_points)}"
        )
    root = Path(manifest).parent
    utts = [
        Utt(w := torch.from_numpy(load_audio(u.resolve(root))), u.text, len(w) / model.sample_rate)
        for u in read_manifest(manifest)[:limit]
    ]
    decoder = model.make_decoder(beam=1)  # greedy: what a codec changes, not what a search recovers
    edge, cloud = Edge(model), Cloud(model, decoder=decoder, max_seconds=max(u.seconds for u in utts) + 1)
    info = {p.name: p for p in model.point_info()}

    # Reference: the unsplit model.
    ref_hyps = [recognise(model, u.wave, decoder) for u in utts]
    refs = [u.text for u in utts]
    base = error_rates(refs, ref_hyps)
    audio_s = sum(u.seconds for u in utts)

    jobs = [("audio", c) for c in audio_codecs] + [(p, c) for p in points for c in codecs]
    for p, d in overrides.items():
        if not d.is_dir():
            raise ConfigError(f"--state {p}={d}: no such folder")
    homes = [{p: shipped_state_dir(model.codec_home(p), p) for p in model.split_points}, overrides]
    jobs += [
        (p, c)
        for p in ["audio", *points]
        for c in learned_codecs
        if (p, c) not in jobs and any(p in h and state_path(h[p], split_name(c)[0]).is_file() for h in homes)
    ]
    lrd_homes = {  # where each point's lrd state is read from: a --state folder first
        p: overrides[p] if p in overrides and state_path(overrides[p], "lrd").is_file() else home
        for p, home in homes[0].items()
    }
    jobs = _with_each_rate(jobs, lrd_homes)
    jobs.sort(key=lambda job: model.split_points.index(job[0]))
    jobs = [(p, c) for p, c in jobs if not (c.startswith("cs") and info[p].dim > CS_MAX_CHANNELS)]
    rows = []
    calib_cache: dict = {}
    heads: dict[str, list] = {}
    model_macs_per_s = _model_macs(model, utts[0].wave) / utts[0].seconds
    for point, name in tqdm(jobs, desc="split point x codec", unit="combo"):
        state_dir = _state_dir_for(
            model, name, point, outp, calib_manifest, calib_limit, calib_cache, overrides
        )
        codec = get_codec(name, state_dir)
        if point not in heads:
            heads.clear()
            heads[point] = []
            for u in utts:
                t0 = time.perf_counter()
                h, h_lens = edge.head(u.wave, point)
                heads[point].append((h, h_lens, time.perf_counter() - t0))
        nbytes = header_bytes = enc_s = dec_s = tail_s = head_s = 0.0
        hyps, changed = [], 0
        for (h, h_lens, h_s), ref_h in zip(heads[point], ref_hyps, strict=True):
            t0 = time.perf_counter()
            payload = edge.compress(h, h_lens, point, codec)
            enc_s += time.perf_counter() - t0
            out = cloud.transcribe(payload, point, codec)
            changed += out.text != ref_h
            hyps.append(out.text)
            nbytes += len(payload)
            header_bytes += read_header(payload).size
            dec_s, tail_s, head_s = dec_s + out.decode_ms / 1000, tail_s + out.tail_ms / 1000, head_s + h_s
        rates = error_rates(refs, hyps)
        edge_params, edge_macs = _edge_cost(edge, codec, point, *heads[point][0][:2])
        raw_bytes = sum(h.numel() * (2 if point == "audio" else 4) for h, _, _ in heads[point])
        n = len(utts)
        rows.append(
            {
                "point": point if codec.decodes_to(point) == point else f"{point}>{codec.decodes_to(point)}",
                # lrd@r+ans: the name keeps the rate (the payload names the transform alone)
                "codec": name if "@" in name or (point == "audio" and "+" not in name) else codec.name,
                "lossless": codec.lossless,
                "bytes_per_utt": nbytes / n,
                "header_bytes": header_bytes / n,
                "kbps": nbytes * 8 / 1000 / audio_s,
                "pct_of_raw": 100 * nbytes / raw_bytes,
                "raw_kbps": raw_bytes * 8 / 1000 / audio_s,
                "wer": rates["wer"],
                "cer": rates["cer"],
                "wer_delta": rates["wer"] - base["wer"],
                "identical_transcripts": changed == 0,
                "changed_transcripts": changed,
                "head_ms": 1000 * head_s / n,
                "encode_ms": 1000 * enc_s / n,
                "decode_ms": 1000 * dec_s / n,
                "tail_ms": 1000 * tail_s / n,
                "edge_params": edge_params,
                "edge_macs_per_s": edge_macs / utts[0].seconds,
                "edge_share_of_model": edge_macs / utts[0].seconds / model_macs_per_s,
            }
        )
    for r in rows:
        r["opus_kbps_same_wer"], r["vs_opus"] = opus_equivalent(rows, r)
    payload = {
        "benchmark": "tradeoff",
        "manifest": manifest,
        "utterances": len(utts),
        "audio_seconds": audio_s,
        "unsplit": {"wer": base["wer"], "cer": base["cer"]},
        "model_macs_per_s": model_macs_per_s,
        "machine": machine_description(),
        "rows": rows,
        "note": "raw % is against float32 activations (16-bit PCM at the audio point)",
    }
    table = markdown_table(
        [
            {
                **r,
                "wer_pct": 100 * r["wer"],
                "cer_pct": 100 * r["cer"],
                "dwer": 100 * r["wer_delta"],
                "edge_pct": 100 * r["edge_share_of_model"],
            }
            for r in rows
        ],
        [
            ("point", "split point", "s"),
            ("codec", "codec", "s"),
            ("bytes_per_utt", "bytes/utt", ".0f"),
            ("header_bytes", "header B", ".0f"),
            ("kbps", "kbit/s", ".2f"),
            ("raw_kbps", "raw kbit/s", ".0f"),
            ("pct_of_raw", "% raw", ".2f"),
            ("wer_pct", "WER %", ".2f"),
            ("cer_pct", "CER %", ".2f"),
            ("dwer", "dWER", "+.2f"),
            ("changed_transcripts", "utts changed", "d"),
            ("head_ms", "head ms", ".1f"),
            ("encode_ms", "enc ms", ".2f"),
            ("decode_ms", "dec ms", ".2f"),
            ("tail_ms", "tail ms", ".1f"),
            ("edge_params", "codec params on edge", "d"),
            ("edge_pct", "codec % of model MACs", ".3f"),
            ("vs_opus", "x fewer bytes than Opus at its WER", "s"),
        ],
    )
    header = (
        f"Unsplit model: WER {100 * base['wer']:.2f} %, CER {100 * base['cer']:.2f} % on "
        f"{len(utts)} utterances ({audio_s:.0f} s) of `{manifest}`.\n\n"
    )
    write_results(outp, payload, header + table, "splitasr " + " ".join(sys.argv[1:]))
    _plot(rows, base["wer"], outp / "tradeoff.png")
    print(header + table)
    return payload


def _with_each_rate(jobs: list[tuple[str, str]], homes: dict[str, Path]) -> list[tuple[str, str]]:
    """A multi-rate ``lrd`` job named without a rate becomes one job per trained rate
    position (``lrd@0+ans``, ``lrd@1+ans``, ...): the curve one set of weights draws. A
    position also named on its own is kept once."""
    out: list[tuple[str, str]] = []
    for p, c in jobs:
        t, coder = split_name(c)
        expanded = [(p, c)]
        if t == "lrd" and "@" not in c and state_path(homes[p], t).is_file():
            rates = get_codec(c, homes[p]).transform.config.rates
            if rates > 1:
                expanded = [(p, f"{t}@{i}+{coder}") for i in range(rates)]
        out += [job for job in expanded if job not in out]
    return out


def _model_macs(model, wave: torch.Tensor) -> int:
    """Multiply-adds of the whole model up to its acoustic output (Whisper's encoder, the
    CTC logits) on ``wave`` ``(S,)``; Whisper's text decoder is left out."""
    from torch.utils.flop_counter import FlopCounterMode

    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        model.head(wave[None], None, model.split_points[-1])  # the last point: the whole model
    return counter.get_total_flops() // 2


def _edge_cost(edge: Edge, codec, point: str, h: torch.Tensor, h_lens) -> tuple[int, int]:
    """``(parameters, multiply-adds)`` of the codec's device part compressing ``h``:
    learned encoders' weights and torch convolutions/matmuls; 0 for codecs without a
    network (quantisers, DCT, entropy coders, Opus)."""
    from torch.utils.flop_counter import FlopCounterMode

    params = getattr(codec.transform, "device_parameters", lambda: 0)()
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        edge.compress(h, h_lens, point, codec)
    return params, counter.get_total_flops() // 2


def opus_equivalent(rows: list[dict], row: dict) -> tuple[float | None, str]:
    """What Opus needs to match ``row``'s WER: ``(kbit/s, "N.Nx")`` against ``row``'s kbit/s.

    The Opus rows' (kbit/s, WER) points, made monotone (more bits never hurt: the WER at a
    rate is the best at that rate or below), are interpolated linearly in log kbit/s. When
    ``row`` is more accurate than every Opus rate the ratio is a lower bound (``>=``); when
    less accurate than the lowest rate, an upper bound (``<=``).
    """
    opus = sorted((r["kbps"], r["wer"]) for r in rows if r["codec"].startswith("opus"))
    if not opus or row["codec"].startswith("opus") or row["kbps"] <= 0:
        return None, ""
    rates, wers = [k for k, _ in opus], list(np.minimum.accumulate([w for _, w in opus]))
    target = row["wer"]
    if target < wers[-1]:
        return rates[-1], f">={rates[-1] / row['kbps']:.1f}x"
    if target >= wers[0]:
        return rates[0], f"<={rates[0] / row['kbps']:.1f}x"
    i = next(j for j, w in enumerate(wers) if w <= target)  # first rate good enough; i >= 1
    (k0, w0), (k1, w1) = (rates[i - 1], wers[i - 1]), (rates[i], wers[i])
    frac = 1.0 if w0 == w1 else (w0 - target) / (w0 - w1)
    kbps = float(np.exp(np.log(k0) + frac * (np.log(k1) - np.log(k0))))
    return kbps, f"{kbps / row['kbps']:.1f}x"


def _plot(rows: list[dict], base_wer: float, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    points = list(dict.fromkeys(r["point"] for r in rows))
    cmap = plt.get_cmap("tab10")
    for i, p in enumerate(points):
        sel = [r for r in rows if r["point"] == p]
        ax.scatter([r["kbps"] for r in sel], [100 * r["wer"] for r in sel], color=cmap(i % 10), label=p, s=22)
        curves: dict[str, list[dict]] = {}  # one model's rates (lrd@0, lrd@1, ...): a line
        for r in sel:
            if "@" in r["codec"]:
                curves.setdefault(r["codec"].split("@")[0], []).append(r)
        for name, curve in curves.items():
            curve.sort(key=lambda r: r["kbps"])
            ax.plot(
                [r["kbps"] for r in curve],
                [100 * r["wer"] for r in curve],
                color=cmap(i % 10),
                lw=1.2,
                label=f"{p} {name} (one model, {len(curve)} rates)",
            )
        for r in sel:
            ax.annotate(r["codec"], (r["kbps"], 100 * r["wer"]), fontsize=5, alpha=0.7)
    front = sorted(rows, key=lambda r: r["kbps"])
    best, pareto = float("inf"), []
    for r in front:
        if r["wer"] < best:
            best = r["wer"]
            pareto.append(r)
    ax.step(
        [r["kbps"] for r in pareto],
        [100 * r["wer"] for r in pareto],
        where="post",
        color="k",
        lw=1,
        label="Pareto front",
    )
    ax.axhline(100 * base_wer, color="grey", ls="--", lw=1, label="unsplit model")
    ax.set_xscale("log")
    ax.set_xlabel("kbit/s per second of audio (log)")
    ax.set_ylabel("WER (%)")
    ax.set_title("Split point x codec: bandwidth vs word error rate")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)


__all__ = ["run_tradeoff_bench", "np"]
