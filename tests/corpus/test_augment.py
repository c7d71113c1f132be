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
