"""Trace files: the shipped one, the step function, and every kind of bad file refused with
TraceError naming the line."""

from __future__ import annotations

import pytest

from splitasr.netem import Trace, TraceError, load_trace, parse_trace, shipped_trace
from splitasr.netem.trace import MAX_TRACE_BYTES


def test_the_shipped_paper001_trace_steps_100_200_300_ms():
    trace = load_trace(shipped_trace("paper001_100_200_300"))
    assert [trace.at(t).one_way_ms for t in (0, 59.9, 60, 119, 120, 1e6)] == [100, 100, 200, 200, 300, 300]
    assert (trace.at(0).up_kbps, trace.at(0).down_kbps) == (10_000, 50_000)
    assert trace.duration_s == 120


def test_header_optional_comments_skipped_and_first_row_holds_before_its_time():
    a = parse_trace("# a link\n\nt_seconds,one_way_ms,up_kbps,down_kbps\n5,10,100,200\n7,20,100,200\n")
    b = parse_trace("5,10,100,200\n7,20,100,200", jitter_ms=3, loss=0.1)
    assert a.rows == b.rows and isinstance(a, Trace)
    assert [a.at(t).one_way_ms for t in (0, 5, 6.9, 7)] == [10, 10, 10, 20]
    assert (b.at(8).jitter_ms, b.at(8).loss) == (3, 0.1)


BAD = {
    "not a number": ("0,10,100,200\n1,ten,100,200\n", 2, "one_way_ms 'ten' is not a number"),
    "fields": ("t_seconds,one_way_ms,up_kbps,down_kbps\n0,10,100\n", 2, "expected 4 fields"),
    "decreasing t": ("0,10,1,1\n2,10,1,1\n# c\n1,10,1,1\n", 4, "does not increase"),
    "repeated t": ("0,10,1,1\n0,20,1,1\n", 2, "does not increase"),
    "negative": ("0,-5,1,1\n", 1, "must be a finite number >= 0"),
    "nan": ("0,nan,1,1\n", 1, "must be a finite number >= 0"),
    "inf": ("0,10,inf,1\n", 1, "must be a finite number >= 0"),
    "zero rate": ("0,10,1,0\n", 1, "down_kbps 0 must be positive"),
    "other header": ("time,delay,up,down\n0,1,1,1\n", 1, "t_seconds 'time' is not a number"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_a_bad_trace_is_refused_with_its_line(tmp_path, case):
    text, line, message = BAD[case]
    path = tmp_path / "bad.csv"
    path.write_text(text)
    with pytest.raises(TraceError) as err:
        load_trace(path)
    assert f"bad.csv:{line}: " in str(err.value) and message in str(err.value)
    assert "\n" not in str(err.value)


def test_empty_oversized_binary_and_missing_files_are_refused(tmp_path):
    cases = {
        "empty.csv": b"t_seconds,one_way_ms,up_kbps,down_kbps\n",
        "big.csv": b"0,1,1,1\n" * (MAX_TRACE_BYTES // 8 + 1),
        "bin.csv": b"\xff\xfe\x00",
    }
    messages = {"empty.csv": "no rows", "big.csv": "larger than", "bin.csv": "not UTF-8"}
    for name, data in cases.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(TraceError, match=messages[name]):
            load_trace(tmp_path / name)
    with pytest.raises(TraceError, match="cannot read trace"):
        load_trace(tmp_path / "missing.csv")
