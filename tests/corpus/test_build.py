import hashlib
from pathlib import Path

import pytest

from splitasr.corpus.build import TEST_PROMPTS, CorpusConfig, build_corpus, plan_jobs
from splitasr.corpus.tts import make_speakers
from splitasr.manifest import read_manifest

from ..conftest import SHARED

needs_shared = pytest.mark.skipif(not (SHARED / "fsdd").is_dir(), reason="../shared/data is not present")


def quick_config(**kw) -> CorpusConfig:
    return CorpusConfig(
        arctic=SHARED / "text" / "cmuarctic.data",
        fsdd=SHARED / "fsdd" / "recordings",
        max_prompts=2,
        renders_per_prompt=2,
        workers=1,
        **kw,
    )


def test_at_least_30_training_speakers_and_heldout_speakers_are_unseen():
    train, heldout = make_speakers(seed=0)
    assert len({s.id for s in train}) >= 30
    assert len(heldout) >= 2
    assert not {s.id for s in train} & {s.id for s in heldout}
    assert not {s.variant for s in train if s.variant} & {s.variant for s in heldout if s.variant}


@needs_shared
def test_plan_holds_out_test_prompts_heldout_voices_and_lucas():
    jobs = plan_jobs(
        CorpusConfig(
            arctic=SHARED / "text" / "cmuarctic.data", fsdd=SHARED / "fsdd" / "recordings", wordnet_lines=0
        )
    )
    train = [j for j in jobs if j.split == "train"]
    _, heldout = make_speakers(0)
    assert not any(j.uid.split("-")[0] in TEST_PROMPTS for j in train)
    assert not any(j.speaker in heldout for j in train if j.speaker)
    assert not any(j.digit_speaker == "lucas" for j in jobs if j.split != "test_digits_heldout_speaker")
    assert all(j.speaker in heldout for j in jobs if j.split == "test_sentences_heldout_voices")
    assert all(2 <= j.n_digits <= 7 for j in jobs if j.kind == "digits")


def _digest(folder: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(folder.rglob("*")):
        if p.is_file():
            h.update(p.name.encode() + p.read_bytes())
    return h.hexdigest()


@needs_shared
def test_quick_build_writes_valid_manifests_and_is_deterministic(tmp_path):
    a = build_corpus(quick_config(), tmp_path / "a", progress=False)
    build_corpus(quick_config(), tmp_path / "b", progress=False)
    assert set(a) == {
        "train_sentences",
        "train_digits",
        "dev",
        "test_sentences_seen_voices",
        "test_sentences_heldout_voices",
        "test_digits_heldout_speaker",
    }
    for split, path in a.items():
        utts = read_manifest(path)
        assert utts, split
        for u in utts:
            assert u.resolve(path.parent).is_file() and u.duration > 0.3 and u.text and u.speaker
    assert _digest(tmp_path / "a") == _digest(tmp_path / "b")
    digits = read_manifest(a["test_digits_heldout_speaker"])
    assert all(u.speaker == "fsdd-lucas" and u.source == "fsdd" for u in digits)


@needs_shared
def test_user_text_file_is_rendered(tmp_path):
    text = tmp_path / "mine.txt"
    text.write_text("A sentence of my own.\n\n")
    m = build_corpus(quick_config(extra_text=[text], wordnet_lines=0), tmp_path / "c", progress=False)
    assert any(u.text == "a sentence of my own" for u in read_manifest(m["train_sentences"]))
