"""Real-time factor of whole models on this CPU (``splitasr bench rtf``).

RTF = compute time / audio duration, for feature extraction + network + decoding, per
utterance. Measured with all threads (the cloud-side figure) and with one thread (the
emulated edge device, which runs on this machine's cores), for every model spec
(``NAME`` or ``NAME:PRECISION``, :mod:`splitasr.bench.specs`) and beam width.

The time of each utterance is split in two: the model (``model(wave)``: features to the
last stage, for Whisper the encoder up to ``block4``) and the decoder (Whisper's text
decoder, timed per generated token; the CTC decoder of ds2, timed per utterance). Two
more measurements: the head alone at each split point on the emulated edge, and, for
each Whisper model, the encoder's time as a function of input length (1-30 s cut from the
manifest's audio): flat for the padded model, growing with length for ``-dyn``.
"""

from __future__ import annotations

import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from splitasr.audio import load_audio
from splitasr.bench.report import machine_description, markdown_table, write_results
from splitasr.bench.specs import ModelSpec, decoder_precision, load_specs
from splitasr.decoding import Decoder
from splitasr.manifest import read_manifest
from splitasr.model.registry import DEFAULT_MODEL
from splitasr.model.stages import SplitModel
from splitasr.model.whisper.decoding import WhisperDecoder
from splitasr.model.whisper.model import WhisperModel
from splitasr.pipeline import Edge

ENCODER_SECONDS = (1.0, 2.0, 4.0, 8.0, 15.0, 30.0)  # input lengths of the encoder series
CLOUD, EDGE = "cloud (all threads)", "edge (1 thread)"


@dataclass
class UtteranceTiming:
    """One utterance through one model and decoder: the fastest of the repeats (by the
    sum of both parts), its parts, and what the decoder produced."""

    encoder_s: float  # model(wave): features .. last stage
    decoder_s: float  # text (Whisper) or CTC decoding
    tokens: int | None  # generated tokens, the end token excluded (None: a CTC decoder)
    text: str

    @property
    def total_s(self) -> float:
        return self.encoder_s + self.decoder_s


def _decode(decoder: Decoder, out: torch.Tensor, length: int) -> tuple[str, int | None]:
    """``out (T, C)`` -> (text, generated tokens or None).

    Whisper's windows are decoded as :meth:`WhisperDecoder.decode` does (one 30-s window,
    ``n_audio_ctx`` frames, at a time, the texts joined), through :meth:`WhisperDecoder.tokens`
    so that the tokens can be counted; any other decoder runs as it is.
    """
    if not isinstance(decoder, WhisperDecoder):
        return decoder.decode(out, length), None
    memory, size = out[:length], decoder.config.n_audio_ctx
    ids = [decoder.tokens(memory[a : a + size]) for a in range(0, max(memory.shape[0], 1), size)]
    text = " ".join(t for t in (decoder.text_of(i) for i in ids) if t)
    return text, sum(len(i) for i in ids)


def time_utterance(model: SplitModel, wave: torch.Tensor, decoder: Decoder, repeats: int) -> UtteranceTiming:
    """Best of ``repeats`` runs of ``wave (S,)`` through the model and the decoder."""
    best = None
    with torch.inference_mode():
        for _ in range(repeats):
            t0 = time.perf_counter()
            out, lens = model(wave.unsqueeze(0))
            t1 = time.perf_counter()
            text, tokens = _decode(decoder, out[0], int(lens[0]))
            t = UtteranceTiming(t1 - t0, time.perf_counter() - t1, tokens, text)
            if best is None or t.total_s < best.total_s:
                best = t
    return best


def _time_all(
    model: SplitModel, waves, decoder: Decoder, threads: int, repeats: int
) -> list[UtteranceTiming]:
    """:func:`time_utterance` of every wave on ``threads`` threads, after a warm-up."""
    torch.set_num_threads(threads)
    time_utterance(model, waves[0], decoder, 1)
    return [time_utterance(model, w, decoder, repeats) for w in waves]


def _time_heads(model: SplitModel, waves, repeats: int = 3) -> dict[str, float]:
    """Total best-of-``repeats`` seconds of ``model.head`` at each split point, 1 thread."""
    torch.set_num_threads(1)
    edge = Edge(model)
    totals = {}
    with torch.inference_mode():
        for point in model.split_points[1:]:
            edge.head(waves[0], point)  # warm-up
            total = 0.0
            for w in waves:
                best = float("inf")
                for _ in range(repeats):
                    t0 = time.perf_counter()
                    edge.head(w, point)
                    best = min(best, time.perf_counter() - t0)
                total += best
            totals[point] = total
    return totals


def encoder_inputs(
    waves: list[torch.Tensor], sample_rate: int, seconds=ENCODER_SECONDS
) -> dict[float, torch.Tensor]:
    """Real speech of each length in ``seconds``: the waves ``(S_i,)`` concatenated (cycled
    as often as needed) and cut to ``round(s * sample_rate)`` samples."""
    need = round(max(seconds) * sample_rate)
    total = sum(len(w) for w in waves)
    if total == 0:
        raise ValueError("no audio to cut encoder inputs from")
    joined = torch.cat(waves * (need // total + 1))
    return {s: joined[: round(s * sample_rate)] for s in seconds}


def encoder_series(
    model: SplitModel, inputs: dict[float, torch.Tensor], threads: int, repeats: int
) -> list[dict]:
    """``model(wave)`` (for Whisper the encoder, features .. block4) on each input, best of
    ``repeats``: rows ``{seconds, threads, frames, encoder_ms}``, ``frames`` the encoder
    frames computed (1500 per 30-s window when padded; the audio's frames when trimmed)."""
    torch.set_num_threads(threads)
    rows = []
    with torch.inference_mode():
        model(next(iter(inputs.values())).unsqueeze(0))  # warm-up
        for seconds, wave in inputs.items():
            best, frames = float("inf"), 0
            for _ in range(repeats):
                t0 = time.perf_counter()
                out, _ = model(wave.unsqueeze(0))
                best = min(best, time.perf_counter() - t0)
                frames = out.shape[1]
            rows.append({"seconds": seconds, "threads": threads, "frames": frames, "encoder_ms": 1000 * best})
    return rows


def _row(spec: ModelSpec, model: SplitModel, beam: int, label: str, threads: int, t, secs) -> dict:
    """One table row from the timings ``t`` of every utterance of ``secs`` seconds."""
    enc = np.array([x.encoder_s for x in t])
    dec = np.array([x.decoder_s for x in t])
    total = enc + dec
    tokens = None if t[0].tokens is None else sum(x.tokens for x in t)
    return {
        "spec": spec.label,
        "model": model.name,
        "precision": decoder_precision(model),
        "beam": beam,
        "setting": label,
        "threads": threads,
        "utterances": len(t),
        "audio_s": float(secs.sum()),
        "compute_s": float(total.sum()),
        "encoder_s": float(enc.sum()),
        "decoder_s": float(dec.sum()),
        "tokens": tokens,
        "decoder_ms_per_token": 1000 * float(dec.sum()) / tokens if tokens else None,
        "decoder_ms_per_utterance": 1000 * float(dec.mean()),
        "rtf": float(total.sum() / secs.sum()),
        "rtf_p90": float(np.percentile(total / secs, 90)),
    }


ROW_COLUMNS = [
    ("spec", "model", "s"),
    ("precision", "decoder", "s"),
    ("beam", "beam", "d"),
    ("setting", "setting", "s"),
    ("utterances", "utts", "d"),
    ("audio_s", "audio s", ".1f"),
    ("compute_s", "compute s", ".2f"),
    ("encoder_s", "encoder s", ".2f"),
    ("decoder_s", "decoder s", ".2f"),
    ("tokens", "tokens", "d"),
    ("decoder_ms_per_token", "dec ms/token", ".2f"),
    ("decoder_ms_per_utterance", "dec ms/utt", ".1f"),
    ("rtf", "RTF", ".4f"),
    ("rtf_p90", "RTF p90", ".4f"),
]


def run_rtf_bench(
    manifest: str,
    out: str,
    model_path: str | None = None,
    limit: int = 100,
    threads: int | None = None,
    min_seconds: float = 0.0,
    max_seconds: float = float("inf"),
    repeats: int = 3,
    models: list[ModelSpec] | None = None,
    beams: list[int] | None = None,
    encoder_seconds: tuple[float, ...] = ENCODER_SECONDS,
) -> dict:
    """RTF of each model spec x beam width (all threads and 1 thread), the head at each
    split point on the emulated edge (1 thread), and each Whisper model's encoder time
    against input length, over the first ``limit`` utterances of ``manifest`` between
    ``min_seconds`` and ``max_seconds`` long.

    ``models``: the specs (default: ``model_path`` with its default precision); ``beams``:
    the beam widths (default greedy only). Every model is loaded before anything is timed
    (a bad spec fails at once: CheckpointError, ConfigError).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    specs = models or [ModelSpec(model_path or DEFAULT_MODEL)]
    beams = beams or [1]
    if any(b < 1 for b in beams):
        raise ValueError(f"beam widths must be >= 1, not {beams}")
    loaded = load_specs(specs)
    root = Path(manifest).parent
    utts = [u for u in read_manifest(manifest) if min_seconds <= u.duration <= max_seconds][:limit]
    if not utts:
        raise ValueError(f"{manifest}: no utterance between {min_seconds} and {max_seconds} s")
    waves = [torch.from_numpy(load_audio(u.resolve(root))) for u in utts]
    sample_rate = loaded[0][1].sample_rate
    secs = np.array([len(w) / sample_rate for w in waves])
    all_threads = threads or torch.get_num_threads()
    settings = ((CLOUD, all_threads), (EDGE, 1))
    rows, per_utt, series = [], [], {}
    for spec, model in loaded:
        for beam in beams:
            decoder = model.make_decoder(beam=beam)
            for label, n in settings:
                t = _time_all(model, waves, decoder, n, repeats)
                rows.append(_row(spec, model, beam, label, n, t, secs))
                series[f"{spec.label} beam{beam}, {label}"] = np.array([x.total_s for x in t]) / secs
                per_utt += [
                    {"spec": spec.label, "beam": beam, "setting": label, "audio": u.audio, **asdict(x)}
                    for u, x in zip(utts, t, strict=True)
                ]
    heads, encoder = [], []
    inputs = encoder_inputs(waves, sample_rate, encoder_seconds)
    for model in {model.name: model for _, model in loaded}.values():
        full = next(r["compute_s"] for r in rows if r["model"] == model.name and r["setting"] == EDGE)
        heads += [
            {"model": model.name, "point": p, "head_s": t, "rtf": t / secs.sum(), "ratio_to_full": t / full}
            for p, t in _time_heads(model, waves, repeats).items()
        ]
        if isinstance(model, WhisperModel):
            for _, n in settings:
                encoder += [{"model": model.name, **r} for r in encoder_series(model, inputs, n, repeats)]
    torch.set_num_threads(all_threads)
    payload = {
        "benchmark": "rtf",
        "model": specs[0].name,
        "models": [s.label for s in specs],
        "beams": beams,
        "manifest": manifest,
        "seconds_range": [min_seconds, max_seconds if np.isfinite(max_seconds) else None],
        "machine": machine_description(),
        "rows": rows,
        "heads_edge_1_thread": heads,
        "encoder_vs_length": encoder,
        "utterances": per_utt,
    }
    table = markdown_table(rows, ROW_COLUMNS)
    table += "\n\nDecoder ms/token: text decoder time per generated token (the end token not counted); "
    table += "CTC models have no tokens (dec ms/utt is their CTC decoding).\n"
    table += "\n\nHead alone at each split point on the emulated edge (1 thread of this CPU):\n\n"
    table += markdown_table(
        heads,
        [
            ("model", "model", "s"),
            ("point", "split point", "s"),
            ("head_s", "head s", ".2f"),
            ("rtf", "head RTF", ".4f"),
            ("ratio_to_full", "x full model (greedy)", ".3f"),
        ],
    )
    if encoder:
        table += "\n\nEncoder (features .. block4) against input length, best of the repeats:\n\n"
        table += markdown_table(
            encoder,
            [
                ("model", "model", "s"),
                ("threads", "threads", "d"),
                ("seconds", "input s", ".0f"),
                ("frames", "encoder frames", "d"),
                ("encoder_ms", "encoder ms", ".1f"),
            ],
        )
    outp = Path(out)
    write_results(outp, payload, table, "splitasr " + " ".join(sys.argv[1:]))
    _plot_rtf(plt, outp / "rtf.png", secs, series)
    if encoder:
        _plot_encoder(plt, outp / "encoder.png", encoder)
    print(table)
    return payload


def _plot_rtf(plt, path: Path, secs: np.ndarray, series: dict[str, np.ndarray]) -> None:
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for label, r in series.items():
        ax.scatter(secs, r, s=8, label=label)
    ax.axhline(0.05, color="k", ls="--", lw=1, label="target 0.05")
    ax.set_xlabel("utterance length (s)")
    ax.set_ylabel("real-time factor")
    ax.set_title("Full model per utterance")
    ax.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _plot_encoder(plt, path: Path, encoder: list[dict]) -> None:
    fig, ax = plt.subplots(figsize=(6, 4))
    for key in dict.fromkeys((r["model"], r["threads"]) for r in encoder):
        pts = [r for r in encoder if (r["model"], r["threads"]) == key]
        label = f"{key[0]}, {key[1]} thread{'s' if key[1] > 1 else ''}"
        ax.plot([r["seconds"] for r in pts], [r["encoder_ms"] for r in pts], marker="o", label=label)
    ax.set_xlabel("input length (s)")
    ax.set_ylabel("encoder time (ms)")
    ax.set_title("Whisper encoder (features .. block4) against input length")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
