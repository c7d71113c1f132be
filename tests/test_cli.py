"""The CLI as a user runs it: a real subprocess, real files, exit codes and stderr."""

import json
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "splitasr.cli", *args], capture_output=True, text=True, timeout=300
    )


def test_transcribe_prints_text(speech_dir):
    r = run("transcribe", str(speech_dir / "hello.wav"))
    assert r.returncode == 0, r.stderr
    assert r.stdout == "The sun is bright today.\n" and "Traceback" not in r.stderr


def test_transcribe_json_has_the_documented_fields(speech_dir):
    r = run("transcribe", "--json", str(speech_dir / "hello.wav"), str(speech_dir / "digits.wav"))
    assert r.returncode == 0, r.stderr
    rows = [json.loads(line) for line in r.stdout.splitlines()]
    assert [set(row) for row in rows] == [{"file", "text", "audio_seconds", "compute_ms"}] * 2
    assert [row["text"] for row in rows] == ["The sun is bright today.", "Four one one seven."]
    for row, name in zip(rows, ("hello", "digits"), strict=True):
        assert row["file"] == str(speech_dir / f"{name}.wav")
        assert row["audio_seconds"] == round(sf.info(row["file"]).frames / 16000, 3)
        assert 0 < row["compute_ms"] < 60_000  # wall time: only its range is knowable


def test_beam_search_with_lm_runs(speech_dir):
    r = run("transcribe", "--model", "ds2", "--beam", "8", str(speech_dir / "digits.wav"))
    assert r.returncode == 0, r.stderr
    assert r.stdout == "for one one seven\n"  # "four one one seven"; greedy says "for one on seven"


def _bad_files(tmp_path):
    (tmp_path / "empty.wav").write_bytes(b"")
    (tmp_path / "text.wav").write_text("hello, I am not audio")
    sf.write(tmp_path / "zero.wav", np.zeros(0), 16000)
    sf.write(tmp_path / "odd_rate.wav", np.zeros(4000), 12345)
    sf.write(tmp_path / "long.wav", np.zeros(16000 * 4), 16000)
    nan = np.full(16000, 0.1)
    nan[100] = np.nan
    sf.write(tmp_path / "nan.wav", nan, 16000, subtype="FLOAT")
    sf.write(tmp_path / "loud.wav", np.full(16000, 3000.0), 16000, subtype="FLOAT")  # int16-scaled floats
    return {
        "missing.wav": "no such file",
        "empty.wav": "file is empty",
        "text.wav": "not a readable audio file",
        "zero.wav": "zero length",
        "odd_rate.wav": "unsupported sample rate",
        "long.wav": "longer than the limit",
        "nan.wav": "1 of 16000 samples are NaN or infinite",
        "loud.wav": "float samples reach 3000, far outside [-1, 1]",
    }


def test_each_bad_input_gets_one_line_and_exit_2_while_good_files_still_run(tmp_path, speech_dir):
    expected = _bad_files(tmp_path)
    files = [str(tmp_path / name) for name in expected] + [str(speech_dir / "hello.wav")]
    r = run("transcribe", "--json", "--max-seconds", "3", *files)
    assert r.returncode == 2
    assert "Traceback" not in r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == len(expected)
    for line, (name, problem) in zip(lines, expected.items(), strict=False):
        assert line.startswith("splitasr: error: ") and name in line and problem in line
    assert json.loads(r.stdout)["file"].endswith("hello.wav")


def test_stereo_is_downmixed_and_transcribed(tmp_path, speech_dir):
    wave, rate = sf.read(speech_dir / "hello.wav")
    sf.write(tmp_path / "stereo.flac", np.stack([wave, wave], axis=1), rate)
    mono = run("transcribe", str(speech_dir / "hello.wav"))
    stereo = run("transcribe", str(tmp_path / "stereo.flac"))
    assert stereo.returncode == 0 and stereo.stdout == mono.stdout


@pytest.fixture()
def manifest(tmp_path, speech_dir):
    path = tmp_path / "m.jsonl"
    path.write_text(
        json.dumps(
            {
                "audio": str(speech_dir / "hello.wav"),
                "text": "the sun is bright today",
                "duration": 1.5,
                "speaker": "x",
                "source": "tts",
            }
        )
        + "\n"
        + json.dumps(
            {
                "audio": str(speech_dir / "digits.wav"),
                "text": "four one one seven",
                "duration": 1.5,
                "speaker": "x",
                "source": "tts",
            }
        )
        + "\n"
    )
    return path


def test_eval_reports_wer_cer_and_edit_counts(manifest):
    r = run("eval", "--manifest", str(manifest), "--json")
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)
    assert report["utterances"] == 2 and report["words"] == 9
    # Whisper (the default) gets both right: "The sun is bright today." and "Four one one seven."
    assert (report["wer"], report["cer"]) == (0.0, 0.0)
    assert (report["substitutions"], report["deletions"], report["insertions"]) == (0, 0, 0)


def test_eval_counts_ds2_greedy_errors(manifest):
    r = run("eval", "--manifest", str(manifest), "--json", "--model", "ds2", "--beam", "1")
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)
    # DS2 greedy: "the sunis bright to day" (jiwer aligns 4 substitutions) and "for one on seven"
    # (2); 4 characters wrong of 41.
    counts = (report["words"], report["substitutions"], report["deletions"], report["insertions"])
    assert counts == (9, 6, 0, 0)
    assert report["wer"] == pytest.approx(6 / 9) and report["cer"] == pytest.approx(4 / 41)


def test_eval_defaults_to_each_models_decoding_convention(manifest):
    """DS2 without --beam: beam 32 with the word LM, which fixes most of greedy's errors."""
    r = run("eval", "--manifest", str(manifest), "--json", "--model", "ds2")
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)
    assert report["decoder"] == "BeamSearchDecoder"
    assert (report["words"], report["substitutions"], report["deletions"], report["insertions"]) == (
        9,
        2,
        0,
        1,
    )


def test_eval_on_a_missing_or_broken_manifest_is_a_clean_error(tmp_path):
    r = run("eval", "--manifest", str(tmp_path / "nope.jsonl"))
    assert r.returncode == 2 and "no such manifest" in r.stderr and "Traceback" not in r.stderr
    (tmp_path / "bad.jsonl").write_text("{not json\n")
    r = run("eval", "--manifest", str(tmp_path / "bad.jsonl"))
    assert r.returncode == 2 and "bad.jsonl:1" in r.stderr


def test_info_lists_split_points():
    r = run("info", "--model", "ds2")
    assert r.returncode == 0
    for point in ("audio", "features", "conv", "proj", "classifier"):
        assert point in r.stdout


def test_transcribe_eval_and_info_default_to_whisper():
    """The default is the model with the lower WER on real speech neither trained on."""
    r = run("info")
    assert r.returncode == 0 and r.stdout.startswith("whisper-tiny.en:")
    assert all(p in r.stdout for p in ("stem", "block4"))


def test_missing_checkpoint_is_a_clean_error(speech_dir, tmp_path):
    r = run("transcribe", "--model", str(tmp_path / "none.safetensors"), str(speech_dir / "hello.wav"))
    assert r.returncode == 2 and "checkpoint not found" in r.stderr and "Traceback" not in r.stderr


@pytest.mark.parametrize(
    ("args", "line"),
    [
        (["--threads", "-1"], "--threads -1: must be a positive count, or 0 for PyTorch's default"),
        (["--model", "ds2", "--beam", "8", "--lm", "{tmp}/missing.arpa"], "{tmp}/missing.arpa: no such"),
        (
            ["--model", "ds2", "--beam", "8", "--lm", "{tmp}/garbage.arpa"],
            "{tmp}/garbage.arpa: not a readable ARPA or kenlm binary language model (FormatLoadException.",
        ),
    ],
)
def test_bad_threads_or_lm_is_one_line_and_exit_2(tmp_path, speech_dir, args, line):
    (tmp_path / "garbage.arpa").write_text("not a language model\n")
    args = [a.format(tmp=tmp_path) for a in args]
    r = run("transcribe", *args, str(speech_dir / "digits.wav"))
    assert r.returncode == 2 and r.stdout == "" and "Traceback" not in r.stderr
    lines = r.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("splitasr: error: " + line.format(tmp=tmp_path)), lines


def test_decoder_precision_picks_whispers_decoder_and_is_refused_for_ds2(speech_dir):
    wav = str(speech_dir / "hello.wav")
    for precision in ("float32", "float16"):
        r = run("transcribe", "--decoder-precision", precision, wav)
        assert (r.returncode, r.stdout) == (0, "The sun is bright today.\n"), (precision, r.stderr)
    r = run("transcribe", "--model", "ds2", "--decoder-precision", "int8", wav)
    assert (r.returncode, r.stdout) == (2, "")
    assert r.stderr == "splitasr: error: ds2 has no int8 decoder (only Whisper models do)\n"


def test_server_applies_the_decoder_precision_to_whisper_models_only():
    from splitasr.transport.server import load_clouds

    clouds = load_clouds(["ds2", "whisper-tiny.en-dyn"], decoder_precision="int8")
    assert clouds["whisper-tiny.en-dyn"].model.text_decoder.precision == "int8"
    assert not hasattr(clouds["ds2"].model, "text_decoder")
