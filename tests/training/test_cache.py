"""The teacher cache: ragged tensor and text columns round-trip bit for bit, a chunk's key
follows its audio (and, when asked, its transcripts), and an interrupted write leaves no
file under the real name."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

import splitasr.training.cache as cache
from splitasr.errors import ConfigError


@dataclass
class Item:
    x: torch.Tensor
    tokens: torch.Tensor
    text: str


def _items() -> list[Item]:
    g = torch.Generator().manual_seed(0)
    return [
        Item(torch.randn(5, 3, generator=g).half(), torch.tensor([1, 2, 3]), "one two"),
        Item(torch.randn(2, 3, generator=g).half(), torch.zeros(0, dtype=torch.int64), ""),
        Item(torch.randn(7, 3, generator=g).half(), torch.tensor([9]), "naïve café"),
    ]


def test_items_round_trip_bit_for_bit_with_their_dtypes_and_lengths(tmp_path):
    items = _items()
    cache.save_items(tmp_path / "c.npz", items)
    back = cache.load_items(tmp_path / "c.npz", Item)
    assert len(back) == 3
    for a, b in zip(items, back, strict=True):
        assert a.x.dtype == b.x.dtype == torch.float16 and torch.equal(a.x, b.x)
        assert b.tokens.dtype == torch.int64 and torch.equal(a.tokens, b.tokens)
        assert a.text == b.text
    with np.load(tmp_path / "c.npz", allow_pickle=False) as z:
        assert z["x_lens"].tolist() == [5, 2, 7] and z["tokens_lens"].tolist() == [3, 0, 1]


def test_an_interrupted_write_leaves_no_file_under_the_real_name(tmp_path, monkeypatch):
    def boom(path, **arrays):
        Path(path).write_bytes(b"half")
        raise KeyboardInterrupt

    monkeypatch.setattr(np, "savez", boom)
    with pytest.raises(KeyboardInterrupt):
        cache.save_items(tmp_path / "c.npz", _items())
    assert not (tmp_path / "c.npz").exists()


def _manifest(tmp_path: Path, texts: list[str]) -> Path:
    lines = []
    for i, t in enumerate(texts):
        (tmp_path / f"{i}.wav").write_bytes(bytes([i]) * (10 + i))
        lines.append(json.dumps({"audio": f"{i}.wav", "text": t, "duration": 1.0}))
    path = tmp_path / "m.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_a_pass_is_computed_once_per_chunk_and_resumes_where_it_stopped(tmp_path, monkeypatch):
    """Chunks of two over five utterances: three files; a second pass computes nothing; a
    touched audio file recomputes its chunk alone."""
    monkeypatch.setattr(cache, "CHUNK", 2)
    m = _manifest(tmp_path, ["a", "b", "c", "d", "e"])
    calls = []

    def compute(utts, root):
        calls.append([u.text for u in utts])
        return [Item(torch.full((1, 2), float(ord(u.text))), torch.tensor([0]), u.text) for u in utts]

    run = lambda: cache.cached_items([str(m)], 10, tmp_path / "c", ["h"], compute, Item)  # noqa: E731
    first = run()
    assert calls == [["a", "b"], ["c", "d"], ["e"]]
    assert [it.text for it in first] == ["a", "b", "c", "d", "e"]
    assert len(list((tmp_path / "c").glob("*.npz"))) == 3
    again = run()
    assert len(calls) == 3 and all(torch.equal(a.x, b.x) for a, b in zip(first, again, strict=True))
    st = (tmp_path / "2.wav").stat()
    os.utime(tmp_path / "2.wav", ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    run()
    assert calls[3:] == [["c", "d"]]
    everything = cache.cached_items([str(m)], 0, tmp_path / "c", ["h"], compute, Item)  # 0: all
    assert [it.text for it in everything] == ["a", "b", "c", "d", "e"] and len(calls) == 4
    with pytest.raises(ConfigError, match="must be >= 0"):
        cache.cached_items([str(m)], -1, tmp_path / "c", ["h"], compute, Item)


def test_the_key_follows_the_head_and_with_text_the_transcripts(tmp_path):
    from splitasr.manifest import read_manifest

    m1 = read_manifest(_manifest(tmp_path, ["a", "b"]))
    key = lambda head, utts, text=False: cache.chunk_path(tmp_path, head, utts, tmp_path, text)  # noqa: E731
    assert key(["h"], m1) == key(["h"], m1) and key(["h"], m1) != key(["g"], m1)
    m2 = read_manifest(_manifest(tmp_path, ["a", "B"]))  # same audio, another transcript
    assert key(["h"], m1) == key(["h"], m2)
    assert key(["h"], m1, True) != key(["h"], m2, True)
    assert cache.chunk_path("", ["h"], m1, tmp_path) is None


def test_a_text_column_of_empty_strings_round_trips(tmp_path):
    items = [Item(torch.zeros(1, 2), torch.tensor([1]), ""), Item(torch.ones(2, 2), torch.tensor([2]), "")]
    cache.save_items(tmp_path / "c.npz", items)
    back = cache.load_items(tmp_path / "c.npz", Item)
    assert [b.text for b in back] == ["", ""] and [len(b.x) for b in back] == [1, 2]


@dataclass
class _Scored:
    x: torch.Tensor
    score: float


def test_a_field_neither_str_nor_a_tensor_of_one_or_more_dims_is_refused_before_writing(tmp_path):
    with pytest.raises(TypeError, match="field 'score' holds float"):
        cache.save_items(tmp_path / "c.npz", [_Scored(torch.zeros(1), 0.5)])
    scalar = [Item(torch.zeros(1, 2), torch.tensor(3), "a")]  # a 0-d tensor has no length
    with pytest.raises(TypeError, match="field 'tokens' holds Tensor"):
        cache.save_items(tmp_path / "c.npz", scalar)
    mixed = [Item(torch.zeros(1, 2), torch.tensor([1]), "a"), Item(torch.zeros(1, 2), torch.tensor([1]), 7)]
    with pytest.raises(TypeError, match="field 'text' holds int, str"):
        cache.save_items(tmp_path / "c.npz", mixed)
    assert list(tmp_path.iterdir()) == []


def test_a_damaged_cache_file_is_one_clear_error_naming_it(tmp_path):
    """Lengths that do not add up to the data, columns of different lengths, a missing
    column, a truncated file: each a ConfigError that names the file and says to delete it,
    never a silently wrong split."""
    from splitasr.errors import ConfigError

    x, tokens = np.zeros((5, 3), np.float16), np.arange(4)
    cases = {
        "lens.npz": dict(x=x, x_lens=[2, 2, 9], tokens=tokens, tokens_lens=[1, 1, 2], text=["a", "b", "c"]),
        "count.npz": dict(x=x, x_lens=[2, 3], tokens=tokens, tokens_lens=[1, 1, 2], text=["a", "b", "c"]),
        "missing.npz": dict(x=x, x_lens=[5], tokens=tokens, tokens_lens=[4]),
        "numbers.npz": dict(x=x, x_lens=[5], tokens=tokens, tokens_lens=[4], text=[1.5]),
    }
    for name, arrays in cases.items():
        np.savez(tmp_path / name, **{k: np.asarray(v) for k, v in arrays.items()})
    whole = (tmp_path / "lens.npz").read_bytes()
    (tmp_path / "cut.npz").write_bytes(whole[: len(whole) // 2])
    for name in [*cases, "cut.npz"]:
        with pytest.raises(ConfigError, match=rf"{name}: damaged teacher cache file .*delete it"):
            cache.load_items(tmp_path / name, Item)


def test_a_chunk_file_holding_another_count_or_a_compute_that_drops_items_is_refused(tmp_path, monkeypatch):
    """The items stay one per utterance, in manifest order, or the pass stops."""
    from splitasr.errors import ConfigError
    from splitasr.manifest import read_manifest

    monkeypatch.setattr(cache, "CHUNK", 2)
    m = _manifest(tmp_path, ["a", "b"])
    one = lambda utts, root: [Item(torch.zeros(1, 2), torch.tensor([0]), u.text) for u in utts][:1]  # noqa: E731
    with pytest.raises(ValueError, match="compute gave 1 items for 2 utterances"):
        cache.cached_items([str(m)], 2, tmp_path / "c", ["h"], one, Item)
    utts = read_manifest(m)
    path = cache.chunk_path(tmp_path / "c", ["h"], utts, tmp_path)
    cache.save_items(path, one(utts, tmp_path))
    with pytest.raises(ConfigError, match="1 items for 2 utterances.*delete it"):
        cache.cached_items([str(m)], 2, tmp_path / "c", ["h"], one, Item)


def test_rd_keys_are_the_ones_rd_train_wrote_before_the_shared_cache(tmp_path):
    """rd_train's chunk files (stage 3's 3000 utterances and more) keep their names: the key
    is rebuilt here as rd_train's own ``_chunk_path`` built it before this module existed."""
    import hashlib

    from splitasr.manifest import read_manifest

    utts = read_manifest(_manifest(tmp_path, ["a", "b", "c"]))
    (tmp_path / "1.wav").unlink()  # a missing file keys by its path alone
    head = ["rd2", "fingerprint", "WhisperConfig(trim=True)", "stem"]
    wavs = [u.resolve(tmp_path) for u in utts]
    stats = [(str(w), *((w.stat().st_size, w.stat().st_mtime_ns) if w.exists() else ())) for w in wavs]
    audio = hashlib.sha1(json.dumps(stats).encode()).hexdigest()
    key = json.dumps([*head, audio])
    old = tmp_path / "c" / f"{hashlib.sha1(key.encode()).hexdigest()[:16]}.npz"
    assert cache.chunk_path(str(tmp_path / "c"), head, utts, tmp_path) == old


def test_codec_train_caches_its_pass_and_a_changed_transcript_recomputes_its_chunk(
    model, speech_manifest, tmp_path, monkeypatch, capsys
):
    """codec_train's items hold the labels, so its key holds the transcripts: the same
    manifest is read back without a pass (same tensors, same labels); one transcript changed
    recomputes the chunk, whose labels follow it. Progress is one stderr line per chunk."""
    import dataclasses

    import splitasr.training.codec_train as ct
    from splitasr.codecs.learned import LearnedCodecConfig
    from splitasr.manifest import read_manifest, write_manifest
    from splitasr.text import CharTokenizer

    cfg, cache_dir, passes = LearnedCodecConfig(), tmp_path / "c", []
    real = ct._teacher_items
    monkeypatch.setattr(ct, "_teacher_items", lambda *a: passes.append(len(a[2])) or real(*a))
    first = ct.prepare(model, cfg, [str(speech_manifest)], 10, cache_dir, progress=True)
    assert passes == [2] and len(list(cache_dir.glob("*.npz"))) == 1
    assert capsys.readouterr().err.startswith(f"teacher pass: {speech_manifest} [0:2] in ")
    again = ct.prepare(model, cfg, [str(speech_manifest)], 10, cache_dir)
    assert passes == [2]
    for a, b in zip(first, again, strict=True):
        assert all(torch.equal(getattr(a, f), getattr(b, f)) for f in ("x", "target", "teacher", "labels"))
        assert a.text == b.text
    utts = read_manifest(speech_manifest)
    utts[1] = dataclasses.replace(utts[1], text="four one one eight")
    changed = tmp_path / "m.jsonl"
    write_manifest(changed, utts)  # absolute audio paths: the same files
    third = ct.prepare(model, cfg, [str(changed)], 10, cache_dir)
    assert passes == [2, 2] and len(list(cache_dir.glob("*.npz"))) == 2
    assert third[1].text == "four one one eight"
    assert third[1].labels.tolist() == CharTokenizer().encode("four one one eight")
