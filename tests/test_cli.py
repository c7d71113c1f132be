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
    assert r.stdout.strip() and "Traceback" not in r.stderr


def test_transcribe_json_has_the_documented_fields(speech_dir):
    r = run("transcribe", "--json", str(speech_dir / "hello.wav"), str(speech_dir / "digits.wav"))
    assert r.returncode == 0, r.stderr
    rows = [json.loads(line) for line in r.stdout.splitlines()]
    assert [set(row) for row in rows] == [{"file", "text", "audio_seconds", "compute_ms"}] * 2
    assert all(row["audio_seconds"] > 0.5 and row["compute_ms"] > 0 for row in rows)


def test_beam_search_with_lm_runs(speech_dir):
    r = run("transcribe", "--model", "ds2", "--beam", "8", str(speech_dir / "digits.wav"))
    assert r.returncode == 0, r.stderr


def _bad_files(tmp_path):
    (tmp_path / "empty.wav").write_bytes(b"")
    (tmp_path / "text.wav").write_text("hello, I am not audio")
    sf.write(tmp_path / "zero.wav", np.zeros(0), 16000)
    sf.write(tmp_path / "odd_rate.wav", np.zeros(4000), 12345)
    sf.write(tmp_path / "long.wav", np.zeros(16000 * 4), 16000)
    return {
        "missing.wav": "no such file",
        "empty.wav": "file is empty",
        "text.wav": "not a readable audio file",
        "zero.wav": "zero length",
        "odd_rate.wav": "unsupported sample rate",
        "long.wav": "longer than the limit",
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
    assert 0 <= report["wer"] and 0 <= report["cer"] <= 1
    assert {"substitutions", "deletions", "insertions"} <= set(report)


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
