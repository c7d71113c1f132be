import numpy as np
import pytest
import soundfile as sf
import torch

from splitasr import audio
from splitasr.errors import AudioError


def test_log_mel_shape_is_100_frames_per_second_by_80_bins():
    wave = torch.randn(2, 16000) * 0.1
    feats = audio.log_mel(wave)
    assert feats.shape == (2, 101, 80)
    assert torch.isfinite(feats).all()


def test_log_mel_is_deterministic():
    wave = torch.from_numpy(np.random.default_rng(0).standard_normal(8000).astype(np.float32))
    assert torch.equal(audio.log_mel(wave), audio.log_mel(wave.clone()))


def test_silence_gives_finite_floor():
    feats = audio.log_mel(torch.zeros(1, 1600))
    assert torch.allclose(feats, torch.full_like(feats, np.log(audio.LOG_FLOOR)))


def test_mel_filters_come_from_librosa_shape():
    assert audio.mel_filters().shape == (80, 201)


def test_qm_features_are_uint8_32_bins_and_use_the_range():
    wave = torch.randn(1, 32000) * 0.3
    codes = audio.qm_features(wave)
    assert codes.dtype == torch.uint8 and codes.shape == (1, 201, 32)
    silent = audio.qm_features(torch.zeros(1, 1600))
    assert int(silent.max()) == 0  # the log floor is below QM_MIN_LOG: clipped to 0
    assert int(codes.max()) > 128


def test_qm_dequantize_is_within_half_a_step():
    wave = torch.randn(1, 16000) * 0.3
    logs = audio.log_mel(wave, n_mels=audio.QM_N_MELS).clamp(audio.QM_MIN_LOG, audio.QM_MAX_LOG)
    back = audio.qm_dequantize(audio.qm_features(wave))
    step = (audio.QM_MAX_LOG - audio.QM_MIN_LOG) / 255
    assert (back - logs).abs().max() <= step / 2 + 1e-4


def test_load_audio_resamples_8k_and_downmixes_stereo(tmp_path):
    t = np.arange(8000) / 8000
    stereo = np.stack([np.sin(2 * np.pi * 300 * t), np.zeros_like(t)], axis=1) * 0.5
    sf.write(tmp_path / "s.wav", stereo, 8000)
    wave = audio.load_audio(tmp_path / "s.wav")
    assert wave.dtype == np.float32 and len(wave) == 16000
    assert np.abs(wave).max() == pytest.approx(0.25, abs=1e-3)  # mean of a 0.5 sine and silence


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda p: None, "no such file"),
        (lambda p: p.write_bytes(b""), "empty"),
        (lambda p: p.write_text("not audio at all"), "not a readable audio file"),
        (lambda p: sf.write(p, np.zeros((0,)), 16000), "zero length"),
        (lambda p: sf.write(p, np.zeros(1000), 12345), "unsupported sample rate"),
        (lambda p: sf.write(p, np.zeros(16000 * 3), 16000), "longer than the limit"),
    ],
)
def test_bad_input_gives_one_line_error_naming_the_file(tmp_path, make, message):
    path = tmp_path / "x.wav"
    make(path)
    with pytest.raises(AudioError) as err:
        audio.load_audio(path, max_seconds=2.0)
    text = str(err.value)
    assert message in text and str(path) in text and "\n" not in text


@pytest.mark.parametrize("subtype", ["FLOAT", "DOUBLE"])
@pytest.mark.parametrize(
    ("value", "problem"),
    [
        (np.nan, "1 of 1600 samples are NaN or infinite"),
        (np.inf, "1 of 1600 samples are NaN or infinite"),
        (-np.inf, "1 of 1600 samples are NaN or infinite"),
        (2.5, "float samples reach 2.5, far outside [-1, 1] (at most 2 is accepted"),
        (-32767.0, "float samples reach 32767, far outside [-1, 1] (at most 2 is accepted"),
    ],
)
def test_float_wav_with_nan_inf_or_far_out_of_range_samples_is_refused(tmp_path, subtype, value, problem):
    wave = np.full(1600, 0.1)
    wave[800] = value
    path = tmp_path / "float.wav"
    sf.write(path, wave, 16000, subtype=subtype)
    with pytest.raises(AudioError) as err:
        audio.load_audio(path)
    assert str(err.value).startswith(f"{path}: {problem}") and "\n" not in str(err.value)


def test_nan_in_one_channel_of_a_stereo_float_file_is_refused(tmp_path):
    wave = np.zeros((800, 2))
    wave[10:13, 1] = np.nan
    sf.write(tmp_path / "st.wav", wave, 8000, subtype="FLOAT")
    with pytest.raises(AudioError, match=r"st\.wav: 3 of 1600 samples are NaN or infinite$"):
        audio.load_audio(tmp_path / "st.wav")


def test_float_overshoot_up_to_the_limit_is_kept_and_integer_full_scale_is_fine(tmp_path):
    wave = np.sin(2 * np.pi * 440 * np.arange(1600) / 16000) * audio.MAX_ABS_SAMPLE
    sf.write(tmp_path / "hot.wav", wave, 16000, subtype="FLOAT")
    assert np.array_equal(audio.load_audio(tmp_path / "hot.wav"), wave.astype(np.float32))  # not clipped
    sf.write(tmp_path / "pcm.wav", np.sign(wave), 16000, subtype="PCM_16")
    assert np.abs(audio.load_audio(tmp_path / "pcm.wav")).max() == 1.0
