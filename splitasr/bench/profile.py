"""The profiler (``splitasr profile``): what this machine costs for one model, as a JSON profile.

Paper 001 characterises each device by running the network at a sweep of input lengths
(100 repeats each) and fitting execution time linearly in the length. This does the same
with the real split path (:class:`splitasr.pipeline.Edge` / :class:`~splitasr.pipeline.Cloud`,
real codecs) on real speech: FSDD recordings concatenated, in a fixed order, and cut to
each length. For every length and repeat it times

* the whole model (``full_ms``, what edge-only runs) and its text decoder on the output
  (Whisper: against the generated tokens; DS2: the CTC search against seconds);
* at every split point and codec: ``Edge.encode`` (head and encode ms, payload bytes) and
  ``Cloud.activation`` (decode ms); the tail from each point the codecs resume at
  (``Cloud.tail``), once per point.

Then it fits ``a + b * seconds`` per quantity (:func:`splitasr.planner.profiles.fit_samples`)
and writes a :class:`~splitasr.planner.profiles.Profile`; ``slowdown`` scales every time
(an emulated slower edge). The runtime reads only the JSON.

A codec that cannot be built at a point (learned or calibrated state not shipped there) is
skipped and listed in the result's ``skipped``.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from splitasr.audio import SAMPLE_RATE, load_audio
from splitasr.bench.report import machine_description
from splitasr.codecs import CodecError
from splitasr.errors import ConfigError
from splitasr.manifest import read_manifest
from splitasr.model.registry import load_model
from splitasr.pipeline import AUDIO, Cloud, Edge
from splitasr.planner.profiles import (
    CodecProfile,
    Machine,
    PointProfile,
    Profile,
    Sample,
    TextProfile,
    fit_samples,
    save_profile,
    summarise,
)
from splitasr.planner.workload import (
    MAX_INPUTS,
    CodecTimes,
    InputTimes,
    PointTimes,
    Workload,
    save_workload,
)

DEFAULT_LENGTHS = (1.0, 2.0, 4.0, 8.0)
AUDIO_CODECS = (
    "pcm16+pack",
    "flac+pack",
    "opus24+pack",
    "opus16+pack",
    "opus12+pack",
    "opus8+pack",
    "opus6+pack",
)
ACTIVATION_CODECS = (
    "f32+pack",
    "f16+zstd",
    "q8+ans",
    "q4+ans",
    "q2+ans",
    "dct50+huffman",
    "ae+ans",
    "deepcod+ans",
)
AUDIO_POINT_CODECS = (*AUDIO_CODECS, "bnf+ans")  # bnf is made from the audio (it resumes at DS2's proj)
FSDD = Path(__file__).resolve().parents[3] / "shared" / "data" / "fsdd" / "recordings"
MAX_LENGTH_S = 120.0


@dataclass
class ProfileRun:
    """What :func:`run_profile` made: the profile and the codecs it could not build."""

    profile: Profile
    skipped: list[str] = field(default_factory=list)


def speech_of_length(seconds: float, audio_dir: Path = FSDD) -> torch.Tensor:
    """``(round(seconds * 16000),)`` float32 of real speech: FSDD recordings in name order,
    concatenated until long enough, then cut."""
    files = sorted(Path(audio_dir).glob("*.wav"))
    if not files:
        raise ConfigError(f"{audio_dir}: no .wav recordings to profile with (--audio-dir)")
    need = round(seconds * SAMPLE_RATE)
    parts, have = [], 0
    for f in files:
        w = load_audio(f)
        parts.append(w)
        have += len(w)
        if have >= need:
            break
    else:
        raise ConfigError(f"{audio_dir}: only {have / SAMPLE_RATE:.1f} s of audio, {seconds} s asked")
    import numpy as np

    return torch.from_numpy(np.concatenate(parts)[:need].copy())


def _pairs(
    edge: Edge,
    model,
    points: list[str] | None,
    codecs: list[str] | None,
    audio_codecs: list[str] | None,
) -> tuple[list[tuple[str, str]], list[str]]:
    """The (point, codec) pairs to measure, and the ones skipped (no codec state there)."""
    all_points = model.split_points
    points = list(all_points if points is None else points)
    bad = [p for p in points if p not in all_points]
    if bad:
        raise ConfigError(f"unknown split point {bad[0]!r}; choose from {', '.join(all_points)}")
    plan: list[tuple[str, str]] = []
    skipped: list[str] = []
    for p in points:
        for c in (
            (AUDIO_POINT_CODECS if audio_codecs is None else audio_codecs)
            if p == AUDIO
            else (ACTIVATION_CODECS if codecs is None else codecs)
        ):
            try:
                edge.codecs.get(c, p)
                plan.append((p, c))
            except CodecError as exc:
                skipped.append(f"{p} {c}: {exc}")
    return plan, skipped


def _tokens(model, decoder, text: str) -> int | None:
    """Tokens an autoregressive text decoder (a model whose output is an ``encoder``
    memory: Whisper) generated for ``text``, +1 for the end token: its tokenizer
    re-encodes the text. ``None`` for CTC models, whose search costs by frames."""
    if model.output_kind != "encoder":
        return None
    return len(decoder.tokenizer.encode(" " + text, add_special_tokens=False).ids) + 1 if text else 1


def run_profile(
    role: str,
    model_name: str,
    out: str | Path | None = None,
    lengths: tuple[float, ...] = DEFAULT_LENGTHS,
    repeats: int = 3,
    threads: int | None = None,
    slowdown: float = 1.0,
    points: list[str] | None = None,
    codecs: list[str] | None = None,
    audio_codecs: list[str] | None = None,
    beam: int | None = None,
    audio_dir: str | Path = FSDD,
    source: str = "",
    log=None,
    gap_s: float = 0.0,
) -> ProfileRun:
    """Measure ``model_name`` on this machine and (with ``out``) save the profile.

    Args:
        role: ``edge`` or ``cloud`` (recorded; both measure the same quantities).
        lengths: input lengths in seconds; repeats: timed runs per length (after one
            untimed warm-up run at the shortest length).
        threads: PyTorch threads (``None``: its default).
        slowdown: multiply every time by this (an emulated slower device).
        points: split points (default: all of the model's); ``audio`` gets
            ``audio_codecs`` (default: PCM, FLAC, Opus 6..24, and ``bnf+ans`` where it is
            trained), the others ``codecs``.
        beam: the text decoder's beam (default: the model's convention).
        gap_s: idle before each timed run, as a live input arriving alone finds the
            machine (the whole model is timed first after it).
    """
    if role not in ("edge", "cloud"):
        raise ConfigError(f"--role {role!r}: choose edge or cloud")
    if not 0 <= gap_s <= 60:
        raise ConfigError("--gap-s must be between 0 and 60 seconds")
    if not lengths or any(not (0 < s <= MAX_LENGTH_S) for s in lengths):
        raise ConfigError(f"--lengths must be seconds in (0, {MAX_LENGTH_S:g}]")
    if repeats < 1:
        raise ConfigError("--repeats must be at least 1")
    if not slowdown > 0:
        raise ConfigError("--slowdown must be positive")
    if threads:
        torch.set_num_threads(threads)
    say = log or (lambda *_: None)
    model = load_model(model_name)
    edge, cloud = Edge(model), Cloud(model, decoder=model.make_decoder(beam=beam))
    decoder = cloud.decoder
    all_points = model.split_points
    plan, skipped = _pairs(edge, model, points, codecs, audio_codecs)
    waves = {s: speech_of_length(s, Path(audio_dir)) for s in lengths}

    raw: dict[str, dict[float, list[float]]] = {}

    def put(key: str, seconds: float, value: float) -> None:
        raw.setdefault(key, {}).setdefault(seconds, []).append(value)

    resume_of: dict[tuple[str, str], str] = {}
    tokens_by_len: dict[float, list[float]] = {}
    text_by_len: dict[float, list[float]] = {}

    def one_round(seconds: float, wave: torch.Tensor, record: bool) -> None:
        t0 = time.perf_counter()
        with torch.inference_mode():
            out_, lens = model(wave.unsqueeze(0))
        t1 = time.perf_counter()
        text = decoder.decode(out_[0], int(lens[0]))
        t2 = time.perf_counter()
        if record:
            put("full", seconds, 1000 * (t1 - t0))
            text_by_len.setdefault(seconds, []).append(1000 * (t2 - t1))
            n = _tokens(model, decoder, text)
            if n is not None:
                tokens_by_len.setdefault(seconds, []).append(float(n))
        tails_done: set[str] = set()
        for p, c in plan:
            sent = edge.encode(wave, p, c)
            t3 = time.perf_counter()
            h, hl, resume = cloud.activation(sent.payload, p, c)
            t4 = time.perf_counter()
            resume_of[(p, c)] = resume
            if record:
                put(f"head {p}", seconds, sent.head_ms)
                put(f"encode {p} {c}", seconds, sent.encode_ms)
                put(f"bytes {p} {c}", seconds, float(len(sent.payload)))
                put(f"decode {p} {c}", seconds, 1000 * (t4 - t3))
            if resume not in tails_done:
                t5 = time.perf_counter()
                cloud.tail(h, hl, resume)
                if record:
                    put(f"tail {resume}", seconds, 1000 * (time.perf_counter() - t5))
                tails_done.add(resume)

    say(f"profiling {model_name} {role}: {len(plan)} point x codec pairs, lengths {list(lengths)} x{repeats}")
    one_round(min(lengths), waves[min(lengths)], record=False)  # warm-up
    for r in range(repeats):
        for s in lengths:
            if gap_s > 0:
                time.sleep(gap_s)
            t = time.perf_counter()
            one_round(s, waves[s], record=True)
            say(f"  repeat {r + 1}/{repeats}, {s:g} s: {time.perf_counter() - t:.1f} s")

    def fit(key: str):
        return fit_samples(summarise(raw[key]))

    if tokens_by_len:
        # ms against tokens: one sample per length at its mean token count
        samples = []
        for s in sorted(text_by_len):
            ms, tok = text_by_len[s], tokens_by_len[s]
            one = summarise({0.0: ms})[0]
            samples.append(Sample(sum(tok) / len(tok), one.mean, one.std, one.n))
        total_tokens = sum(sum(v) for v in tokens_by_len.values())
        total_seconds = sum(s * len(v) for s, v in tokens_by_len.items())
        text = TextProfile(
            "tokens", per_token_ms=fit_samples(samples), tokens_per_second=total_tokens / total_seconds
        )
    else:
        text = TextProfile("ctc", search_ms=fit_samples(summarise(text_by_len)))
    point_entries = tuple(
        PointProfile(
            p,
            fit(f"head {p}") if f"head {p}" in raw else None,
            fit(f"tail {p}") if f"tail {p}" in raw else None,
        )
        for p in all_points
        if f"head {p}" in raw or f"tail {p}" in raw
    )
    codec_entries = tuple(
        CodecProfile(
            p,
            c,
            fit(f"encode {p} {c}"),
            fit(f"decode {p} {c}"),
            fit(f"bytes {p} {c}"),
            None if resume_of[(p, c)] == p else resume_of[(p, c)],
        )
        for p, c in plan
    )
    machine = machine_description()
    profile = Profile(
        role=role,
        model=model_name,
        machine=Machine(
            f"{machine['cpu']}, {machine['cores']} cores, torch {machine['torch']}", torch.get_num_threads()
        ),
        full_ms=fit("full"),
        text=text,
        points=point_entries,
        codecs=codec_entries,
        lengths=tuple(sorted(float(s) for s in lengths)),
        source=source,
    )
    if slowdown != 1.0:
        profile = profile.slowed(slowdown)
    if out is not None:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        save_profile(profile, out)
    return ProfileRun(profile, skipped)


def run_per_input(
    role: str,
    model_name: str,
    manifest: str | Path,
    out: str | Path | None = None,
    limit: int | None = None,
    repeats: int = 1,
    threads: int | None = None,
    slowdown: float = 1.0,
    points: list[str] | None = None,
    codecs: list[str] | None = None,
    audio_codecs: list[str] | None = None,
    beam: int | None = None,
    source: str = "",
    log=None,
    gap_s: float = 0.0,
) -> tuple[Workload, list[str]]:
    """Measure every stage on each input of ``manifest`` (``splitasr profile --per-input``):
    the per-input times the simulator charges (:mod:`splitasr.planner.workload`).

    Per utterance (after one untimed warm-up on the first): the whole model and its text
    decoder; at every (point, codec) ``Edge.encode`` (head, encode, bytes) and
    ``Cloud.activation`` (decode); ``Cloud.tail`` once per resume point. ``repeats``
    passes over all the inputs (an input's runs are a pass apart, not back to back) and
    each time is the median of its passes (bytes do not vary). ``gap_s``: idle before each
    input's run, as a live input arriving alone finds the machine (the whole model is
    timed first after it, as the live edge-only path runs). A point's
    head is the median over its codecs' runs (the same computation). ``slowdown`` scales
    every time, as for a profile. Returns the workload and the skipped pairs.
    """
    if role not in ("edge", "cloud"):
        raise ConfigError(f"--role {role!r}: choose edge or cloud")
    if repeats < 1:
        raise ConfigError("--repeats must be at least 1")
    if not slowdown > 0:
        raise ConfigError("--slowdown must be positive")
    if limit is not None and limit < 1:
        raise ConfigError("--limit must be at least 1")
    if not 0 <= gap_s <= 60:
        raise ConfigError("--gap-s must be between 0 and 60 seconds")
    if threads:
        torch.set_num_threads(threads)
    say = log or (lambda *_: None)
    utts = read_manifest(manifest)
    if limit is not None:
        utts = utts[:limit]
    if not utts:
        raise ConfigError(f"{manifest}: no utterances")
    if len(utts) > MAX_INPUTS:
        raise ConfigError(f"{manifest}: {len(utts)} utterances, at most {MAX_INPUTS} per workload (--limit)")
    root = Path(manifest).parent
    model = load_model(model_name)
    edge, cloud = Edge(model), Cloud(model, decoder=model.make_decoder(beam=beam))
    decoder = cloud.decoder
    plan, skipped = _pairs(edge, model, points, codecs, audio_codecs)
    say(f"per-input {model_name} {role}: {len(utts)} inputs, {len(plan)} point x codec pairs x{repeats}")

    def one(wave: torch.Tensor) -> dict:
        got: dict = {"head": {}, "tail": {}, "codec": {}}
        t0 = time.perf_counter()
        with torch.inference_mode():
            out_, lens = model(wave.unsqueeze(0))
        t1 = time.perf_counter()
        text = decoder.decode(out_[0], int(lens[0]))
        t2 = time.perf_counter()
        got["full"], got["text"], got["text_bytes"] = 1000 * (t1 - t0), 1000 * (t2 - t1), len(text.encode())
        for p, c in plan:
            sent = edge.encode(wave, p, c)
            t3 = time.perf_counter()
            h, hl, resume = cloud.activation(sent.payload, p, c)
            t4 = time.perf_counter()
            got["head"].setdefault(p, []).append(sent.head_ms)
            got["codec"][(p, c)] = (sent.encode_ms, 1000 * (t4 - t3), len(sent.payload), resume)
            if resume not in got["tail"]:
                t5 = time.perf_counter()
                cloud.tail(h, hl, resume)
                got["tail"][resume] = 1000 * (time.perf_counter() - t5)
        return got

    inputs = []
    waves = [torch.from_numpy(load_audio(u.resolve(root)).copy()) for u in utts]
    one(waves[0])  # warm-up
    measured: list[list[dict]] = [[] for _ in utts]
    for r in range(repeats):  # passes over the inputs: each input's runs are apart, as arrivals are
        for i, wave in enumerate(waves):
            if gap_s > 0:
                time.sleep(gap_s)  # idle before it, as a live input arriving alone
            measured[i].append(one(wave))
        say(f"  pass {r + 1}/{repeats}: {len(utts)} inputs")
    for u, wave, runs in zip(utts, waves, measured, strict=True):

        def mean(values: list[float]) -> float:  # the median: one disturbed run does not move it
            return slowdown * statistics.median(values)

        point_names = [p for p in model.split_points if p in runs[0]["head"] or p in runs[0]["tail"]]
        pts = tuple(
            PointTimes(
                p,
                mean([x for r in runs for x in r["head"][p]]) if p in runs[0]["head"] else None,
                mean([r["tail"][p] for r in runs]) if p in runs[0]["tail"] else None,
            )
            for p in point_names
        )
        cds = tuple(
            CodecTimes(
                p,
                c,
                mean([r["codec"][(p, c)][0] for r in runs]),
                mean([r["codec"][(p, c)][1] for r in runs]),
                runs[0]["codec"][(p, c)][2],
                None if runs[0]["codec"][(p, c)][3] == p else runs[0]["codec"][(p, c)][3],
            )
            for p, c in plan
        )
        inputs.append(
            InputTimes(
                u.audio,
                len(wave) / SAMPLE_RATE,
                mean([r["full"] for r in runs]),
                mean([r["text"] for r in runs]),
                runs[0]["text_bytes"],
                pts,
                cds,
            )
        )
    machine = machine_description()
    workload = Workload(
        model_name,
        role,
        Machine(
            f"{machine['cpu']}, {machine['cores']} cores, torch {machine['torch']}",
            torch.get_num_threads(),
            slowdown,
        ),
        tuple(inputs),
        measured=True,
        source=source,
    )
    if out is not None:
        save_workload(workload, out)
    return workload, skipped


__all__ = ["ProfileRun", "run_per_input", "run_profile", "speech_of_length"]
