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
    assert len({u.speaker for u in out}) == len(out)  # every copy at its own speed
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
