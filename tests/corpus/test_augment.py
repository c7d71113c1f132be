import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from splitasr.corpus.augment import add_noise, augment, change_speed


def test_noise_hits_the_requested_snr():
    rng = np.random.default_rng(0)
    wave = np.sin(np.arange(16000) / 5).astype(np.float32)
    noisy = add_noise(wave, 10.0, rng)
    snr = 10 * np.log10(np.mean(wave**2) / np.mean((noisy - wave) ** 2))
    assert abs(snr - 10.0) < 0.5


def test_speed_changes_length():
    assert abs(len(change_speed(np.zeros(16000, np.float32), 1.1)) - 16000 / 1.1) <= 1


@settings(max_examples=20, deadline=None)
@given(st.integers(0, 2**31 - 1))
def test_augment_is_deterministic_and_bounded(seed):
    wave = (np.random.default_rng(1).standard_normal(8000) * 0.3).astype(np.float32)
    a = augment(wave, np.random.default_rng(seed))
    b = augment(wave, np.random.default_rng(seed))
    assert np.array_equal(a, b) and np.abs(a).max() <= 1.0 and a.dtype == np.float32


def test_perturb_writes_copies_at_their_drawn_speed_with_the_transcript_kept(
    speech_manifest, tmp_path, capsys
):
    """Two copies an utterance; each copy's length is the original's over the factor in
    its speaker name; the same seed gives the same audio; a bad range is one line, exit 2."""
    import soundfile as sf

    from splitasr.audio import SAMPLE_RATE, load_audio
    from splitasr.cli import main
    from splitasr.manifest import read_manifest

    src = read_manifest(speech_manifest)
    assert main(["data", "perturb", "--manifest", str(speech_manifest), "--out", str(tmp_path / "a")]) == 0
    path = tmp_path / "a" / "m_perturbed.jsonl"
    assert capsys.readouterr().out.strip() == str(path)
    out = read_manifest(path)
    assert len(out) == 2 * len(src)
    for i, utt in enumerate(out):
        orig = src[i // 2]
        factor = float(utt.speaker.rsplit("-sp", 1)[1])
        assert utt.speaker.startswith(f"{orig.speaker}-sp") and 0.85 <= factor <= 1.2
        assert utt.text == orig.text and utt.source == orig.source
        n = len(load_audio(orig.resolve(speech_manifest.parent)))
        assert abs(sf.info(utt.resolve(path.parent)).frames - n / factor) <= 2
        assert abs(utt.duration - n / factor / SAMPLE_RATE) < 1e-3
    assert len({u.speaker for u in out}) > 1  # speeds are drawn, not one fixed factor
    assert main(["data", "perturb", "--manifest", str(speech_manifest), "--out", str(tmp_path / "b")]) == 0
    again = read_manifest(tmp_path / "b" / "m_perturbed.jsonl")
    assert [u.speaker for u in again] == [u.speaker for u in out]
    a, b = (sf.read(m.resolve(d))[0] for m, d in ((out[0], path.parent), (again[0], tmp_path / "b")))
    assert np.array_equal(a, b)
    capsys.readouterr()
    bad = ["data", "perturb", "--manifest", str(speech_manifest), "--out", str(tmp_path), "--speed", "2,3"]
    assert main(bad) == 2
    err = capsys.readouterr().err
    assert "speed range" in err and "Traceback" not in err


def test_perturb_keeps_apart_two_files_of_one_name_and_refuses_an_empty_manifest(tmp_path, capsys):
    """``a/x.wav`` (0.5 s) and ``b/x.wav`` (1 s) each get their own copy, of their own
    length; a second manifest into the same folder overwrites neither; a manifest with no
    utterances, or a negative limit, is one line and exit 2."""
    import json

    import soundfile as sf

    from splitasr.audio import SAMPLE_RATE
    from splitasr.cli import main
    from splitasr.corpus.augment import perturb_manifest
    from splitasr.manifest import read_manifest

    rows = []
    for folder, seconds in (("a", 0.5), ("b", 1.0)):
        (tmp_path / folder).mkdir()
        t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
        sf.write(tmp_path / folder / "x.wav", 0.3 * np.sin(2 * np.pi * 220 * t), SAMPLE_RATE)
        rows.append({"audio": f"{folder}/x.wav", "text": folder, "speaker": folder})
    for name in ("m", "n"):
        (tmp_path / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "out"
    first = perturb_manifest(tmp_path / "m.jsonl", out, copies=1)
    before = {u.audio: (out / u.audio).read_bytes() for u in read_manifest(first)}
    perturb_manifest(tmp_path / "n.jsonl", out, copies=1, seed=1)
    assert len(before) == 2 and all((out / a).read_bytes() == b for a, b in before.items())
    for utt, seconds in zip(read_manifest(first), (0.5, 1.0), strict=True):
        factor = float(utt.speaker.rsplit("-sp", 1)[1])
        assert abs(sf.info(out / utt.audio).frames - seconds * SAMPLE_RATE / factor) <= 2
    (tmp_path / "empty.jsonl").write_text("")
    capsys.readouterr()
    for extra in (
        ["--manifest", str(tmp_path / "empty.jsonl")],
        ["--manifest", str(tmp_path / "m.jsonl"), "--limit", "-1"],
    ):
        assert main(["data", "perturb", *extra, "--out", str(tmp_path / "e")]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and ("no utterances" in err or "limit must be" in err)
