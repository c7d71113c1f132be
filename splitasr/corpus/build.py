"""Build the training and test corpus: ``splitasr data build --out DIR``.

Splits (one JSONL manifest each, audio under ``DIR/wav/<split>/``):

* ``train_sentences``: CMU ARCTIC prompts, WordNet examples and user text by the
  training TTS speakers, augmented;
* ``train_digits``: connected digits by FSDD speakers george, jackson and nicolas
  (takes 5-49), augmented;
* ``dev``: 40 prompts held out of training, training speakers, clean; plus digits of
  the training speakers' takes 0-4;
* ``test_sentences_seen_voices``: prompts arctic_b0440..b0539 by training speakers;
* ``test_sentences_heldout_voices``: the same prompts by held-out speakers;
* ``test_digits_heldout_speaker``: connected digits by FSDD speaker ``lucas``.

Everything is deterministic for a seed: every job carries its own RNG seed.
"""

from __future__ import annotations

import random
import re
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from splitasr.audio import SAMPLE_RATE
from splitasr.corpus.augment import augment
from splitasr.corpus.digits import connected_digits, index_fsdd
from splitasr.corpus.textsources import wordnet_sentences
from splitasr.corpus.tts import Speaker, make_speakers, render
from splitasr.errors import ConfigError
from splitasr.manifest import Utterance, write_manifest
from splitasr.text import normalize, spoken_form

TEST_PROMPTS = {f"arctic_b{n:04d}" for n in range(440, 540)}
HELDOUT_FSDD_SPEAKER = "lucas"
_ARCTIC = re.compile(r'^\(\s*(\S+)\s+"(.*)"\s*\)\s*$')


@dataclass
class CorpusConfig:
    """What to render; the defaults are the shipped model's recipe."""

    arctic: Path = Path("../shared/data/text/cmuarctic.data")
    fsdd: Path = Path("../shared/data/fsdd/recordings")
    extra_text: list[Path] = field(default_factory=list)
    seed: int = 0
    renders_per_prompt: int = 8  # training speakers per training prompt
    renders_per_extra_line: int = 1
    wordnet_lines: int = 4000  # WordNet example sentences added to training (0: none)
    dev_prompts: int = 40
    train_digit_utts: int = 3000
    dev_digit_utts: int = 100
    test_digit_utts: int = 300
    test_renders_per_prompt: int = 2
    max_prompts: int | None = None  # for quick builds and tests
    workers: int = 2


@dataclass(frozen=True)
class Job:
    """One utterance to make; everything needed to make it identically again."""

    split: str
    uid: str
    kind: str  # "tts" or "digits"
    text: str = ""
    speaker: Speaker | None = None
    digit_speaker: str = ""
    n_digits: int = 0
    augment: bool = False
    seed: int = 0


def read_arctic(path: Path) -> list[tuple[str, str]]:
    """``[(prompt_id, text)]`` from a CMU ARCTIC ``.data`` file."""
    if not path.is_file():
        raise ConfigError(f"{path}: prompt file not found (set --arctic)")
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        m = _ARCTIC.match(line.strip())
        if m:
            out.append((m.group(1), m.group(2)))
    return out


def read_text_lines(path: Path) -> list[str]:
    """Non-empty lines of a user text file that normalise to at least one word."""
    if not path.is_file():
        raise ConfigError(f"{path}: text file not found")
    return [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if normalize(line)]


def plan_jobs(cfg: CorpusConfig) -> list[Job]:
    """Every utterance of the corpus, as jobs (cheap; nothing is rendered)."""
    rng = random.Random(cfg.seed)
    train_spk, heldout_spk = make_speakers(cfg.seed)
    prompts = read_arctic(cfg.arctic)
    test = [(pid, t) for pid, t in prompts if pid in TEST_PROMPTS]
    pool = [(pid, t) for pid, t in prompts if pid not in TEST_PROMPTS]
    rng.shuffle(pool)
    dev, train = pool[: cfg.dev_prompts], pool[cfg.dev_prompts :]
    if cfg.max_prompts is not None:
        train, dev, test = train[: cfg.max_prompts], dev[: cfg.max_prompts], test[: cfg.max_prompts]
    jobs: list[Job] = []

    def seed() -> int:
        return rng.randrange(2**31)

    for pid, text in train:
        for spk in rng.sample(train_spk, cfg.renders_per_prompt):
            jobs.append(Job("train", f"{pid}-{spk.id}", "tts", text, spk, augment=True, seed=seed()))
    extra = [(p.stem, read_text_lines(p)) for p in cfg.extra_text]
    n_wordnet = cfg.wordnet_lines if cfg.max_prompts is None else min(cfg.wordnet_lines, 3)
    extra.append(("wordnet", wordnet_sentences(n_wordnet, cfg.seed)))
    for stem, lines in extra:
        for i, text in enumerate(lines):
            for spk in rng.sample(train_spk, cfg.renders_per_extra_line):
                jobs.append(
                    Job("train", f"{stem}{i:05d}-{spk.id}", "tts", text, spk, augment=True, seed=seed())
                )
    for pid, text in dev:
        spk = rng.choice(train_spk)
        jobs.append(Job("dev", f"{pid}-{spk.id}", "tts", text, spk, seed=seed()))
    for pid, text in test:
        for spk in rng.sample(train_spk, cfg.test_renders_per_prompt):
            jobs.append(Job("test_sentences_seen_voices", f"{pid}-{spk.id}", "tts", text, spk, seed=seed()))
        for spk in rng.sample(heldout_spk, cfg.test_renders_per_prompt):
            jobs.append(
                Job("test_sentences_heldout_voices", f"{pid}-{spk.id}", "tts", text, spk, seed=seed())
            )

    digit_speakers = sorted(s for s in index_fsdd(cfg.fsdd) if s != HELDOUT_FSDD_SPEAKER)
    scale = 1 if cfg.max_prompts is None else 0
    n_train = cfg.train_digit_utts if scale else min(cfg.train_digit_utts, 4)
    n_dev = cfg.dev_digit_utts if scale else min(cfg.dev_digit_utts, 2)
    n_test = cfg.test_digit_utts if scale else min(cfg.test_digit_utts, 4)
    for split, n, speakers, aug in (
        ("train", n_train, digit_speakers, True),
        ("dev", n_dev, digit_speakers, False),
        ("test_digits_heldout_speaker", n_test, [HELDOUT_FSDD_SPEAKER], False),
    ):
        for i in range(n):
            spk = rng.choice(speakers)
            jobs.append(
                Job(
                    split,
                    f"digits{i:05d}-{spk}",
                    "digits",
                    digit_speaker=spk,
                    n_digits=rng.randint(2, 7),
                    augment=aug,
                    seed=seed(),
                )
            )
    return jobs


def _takes_for(split: str, takes: dict[int, list[Path]]) -> dict[int, list[Path]]:
    """Training uses takes 5-49 of each digit, dev takes 0-4; the held-out speaker, all."""
    if split == "train":
        return {d: p[5:] for d, p in takes.items()}
    if split == "dev":
        return {d: p[:5] for d, p in takes.items()}
    return takes


_FSDD_CACHE: dict[str, dict] = {}


def run_job(job: Job, out: Path, fsdd: Path) -> Utterance:
    """Make one utterance, write its WAV, and return its manifest line."""
    import soundfile as sf

    rng = np.random.default_rng(job.seed)
    if job.kind == "tts":
        wave = render(spoken_form(job.text), job.speaker)
        wave = wave / (np.max(np.abs(wave)) + 1e-9) * 0.7
        speaker, source, text = job.speaker.id, f"tts:{job.speaker.engine}", normalize(job.text)
    else:
        key = str(fsdd)
        if key not in _FSDD_CACHE:
            _FSDD_CACHE[key] = index_fsdd(fsdd)
        takes = _takes_for(job.split, _FSDD_CACHE[key][job.digit_speaker])
        wave, text = connected_digits(takes, rng, job.n_digits)
        speaker, source = f"fsdd-{job.digit_speaker}", "fsdd"
    if job.augment:
        wave = augment(wave, rng)
    rel = Path("wav") / job.split / f"{_safe(job.uid)}.wav"
    (out / rel).parent.mkdir(parents=True, exist_ok=True)
    sf.write(out / rel, wave, SAMPLE_RATE, subtype="PCM_16")
    return Utterance(str(rel), text, round(len(wave) / SAMPLE_RATE, 3), speaker, source)


def manifest_name(job: Job) -> str:
    """Training audio is split by kind so a recipe can weight sentences against digits."""
    if job.split == "train":
        return "train_digits" if job.kind == "digits" else "train_sentences"
    return job.split


def _safe(uid: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.+-]", "_", uid)


def _run(args):
    return run_job(*args)


def build_corpus(cfg: CorpusConfig, out: str | Path, progress: bool = True) -> dict[str, Path]:
    """Render every job and write one manifest per split; returns ``{split: manifest}``."""
    from tqdm import tqdm

    out = Path(out)
    jobs = plan_jobs(cfg)
    results: dict[str, list[Utterance]] = {}
    args = [(job, out, cfg.fsdd) for job in jobs]
    with ProcessPoolExecutor(max_workers=max(cfg.workers, 1)) as ex:
        it = ex.map(_run, args, chunksize=16)
        for job, utt in tqdm(
            zip(jobs, it, strict=False), total=len(jobs), desc="rendering", disable=not progress, unit="utt"
        ):
            results.setdefault(manifest_name(job), []).append(utt)
    manifests = {}
    for split, utts in sorted(results.items()):
        manifests[split] = out / f"{split}.jsonl"
        write_manifest(manifests[split], utts)
    return manifests
