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
