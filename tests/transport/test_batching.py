"""Dynamic batching: ``Cloud.transcribe_batch`` gives each item its single-request result
(a bad payload fails only its own item), and a server with ``max_batch=8`` answers 16
concurrent requests each with its own transcript, some of them batched."""

from __future__ import annotations

import threading

import pytest
import torch

from splitasr.errors import SplitASRError
from splitasr.pipeline import Cloud, Edge, _pad
from splitasr.transport.client import CloudClient
from splitasr.transport.server import ServerThread

POINTS = (("proj", "q8+ans"), ("gru1", "q8+ans"), ("audio", "flac+pack"))


def _utterances(waves: list[torch.Tensor]) -> list[torch.Tensor]:
    """Six utterances of different lengths from the two synthesised ones."""
    out = []
    for w in waves:
        out += [w, w[: int(0.6 * len(w))], w[len(w) // 5 :]]
    return out


@pytest.fixture(scope="module")
def jobs(model, waves):
    edge = Edge(model)
    return [
        (edge.encode(w, point, codec).payload, point, codec)
        for point, codec in POINTS
        for w in _utterances(waves)
    ]


def test_batched_ds2_texts_equal_single_texts_at_every_point(model, jobs):
    cloud = Cloud(model)
    want = [cloud.transcribe(p, point, codec).text for p, point, codec in jobs]
    got = cloud.transcribe_batch([(p, point, codec, None) for p, point, codec in jobs])
    assert [g.text for g in got] == want and all(want)
    assert {g.batch for g in got} == {6}  # one group of six per resume point


def test_batched_ds2_tail_rows_match_single_runs(model, jobs):
    cloud = Cloud(model)
    for point in ("proj",):
        acts = [cloud.activation(p, pt, c) for p, pt, c in jobs if pt == point]
        resume = acts[0][2]
        h, lens = _pad([a[0] for a in acts], [a[1] for a in acts])
        assert h.shape[0] == len(acts) and h.shape[1] == max(a[0].shape[1] for a in acts)
        out, out_lens = cloud.tail(h, lens, resume)
        for row, (hi, li, _) in enumerate(acts):
            one, one_lens = cloud.tail(hi, li, resume)
            n = int(one_lens[0])
            assert int(out_lens[row]) == n
            # not bit for bit: the GRU's matrix products block differently for B > 1
            torch.testing.assert_close(out[row, :n], one[0, :n], atol=1e-4, rtol=1e-4)


def test_a_bad_payload_fails_only_its_own_item(model, jobs):
    cloud = Cloud(model)
    good = [j for j in jobs if j[1] == "proj"][:3]
    items = [(good[0][0], "proj", "q8+ans", None), (b"\x00garbage" * 4, "proj", "q8+ans", None)]
    items += [(good[1][0], "nowhere", "q8+ans", None), (good[2][0], "proj", "q8+ans", None)]
    items += [(good[1][0][:-7], "proj", "q8+ans", None)]  # truncated
    got = cloud.transcribe_batch(items)
    assert got[0].text == cloud.transcribe(*good[0]).text and got[0].batch == 2
    assert got[3].text == cloud.transcribe(*good[2]).text and got[3].batch == 2
    for bad in (got[1], got[2], got[4]):
        assert isinstance(bad, SplitASRError)


def test_server_batches_concurrent_requests_and_answers_each_its_own(model, jobs):
    cloud = Cloud(model)
    proj = [j for j in jobs if j[1] in ("proj", "gru1")]
    want = [cloud.transcribe(p, point, codec).text for p, point, codec in proj]
    bad = b"\x00not a payload" * 3
    replies, errors = {}, {}
    with ServerThread({"ds2": cloud}, max_batch=8, max_wait_ms=20) as s:

        def run(i):
            with CloudClient(f"127.0.0.1:{s.port}", timeout_s=60) as c:
                try:
                    if i == 15:
                        c.transcribe(bad, "ds2", "proj", "q8+ans", request_id=i)
                    else:
                        p, point, codec = proj[i % len(proj)]
                        replies[i] = c.transcribe(p, "ds2", point, codec, request_id=i)
                except Exception as exc:  # noqa: BLE001 - checked below
                    errors[i] = exc

        threads = [threading.Thread(target=run, args=(i,)) for i in range(16)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
    assert set(errors) == {15} and errors[15].code.name == "INVALID_ARGUMENT"
    assert sorted(replies) == list(range(15))
    for i, reply in replies.items():
        assert reply.request_id == i and reply.text == want[i % len(proj)]
        assert 1 <= reply.timings.batch_size <= 8
    assert max(r.timings.batch_size for r in replies.values()) > 1


def test_a_lone_request_does_not_wait_for_a_batch(model, jobs):
    cloud = Cloud(model)
    p, point, codec = next(j for j in jobs if j[1] == "proj")
    with ServerThread({"ds2": cloud}, max_batch=8, max_wait_ms=5000) as s:
        with CloudClient(f"127.0.0.1:{s.port}", timeout_s=60) as c:
            for _ in range(3):  # one after another: nothing else is ever in the server
                reply = c.transcribe(p, "ds2", point, codec)
                assert reply.timings.batch_size == 1 and reply.timings.queue_ms < 2500


def test_a_request_cancelled_while_batched_does_not_break_the_others(model, jobs):
    cloud = Cloud(model)
    p, point, codec = next(j for j in jobs if j[1] == "proj")
    want = cloud.transcribe(p, point, codec).text
    results = {}
    with ServerThread({"ds2": cloud}, max_batch=8, max_wait_ms=300) as s:

        def run(i, timeout_s):
            with CloudClient(f"127.0.0.1:{s.port}", timeout_s=timeout_s) as c:
                try:
                    results[i] = c.transcribe(p, "ds2", point, codec, request_id=i).text
                except Exception as exc:  # noqa: BLE001 - checked below
                    results[i] = exc

        # 0 and 2 give up while the batch still waits for more requests; 1 and 3 wait
        threads = [threading.Thread(target=run, args=(i, 0.1 if i % 2 == 0 else 30)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
        run(4, 30)  # and the server keeps serving
    assert results[1] == results[3] == results[4] == want
    for i in (0, 2):
        assert results[i].code.name == "DEADLINE_EXCEEDED"


@pytest.mark.parametrize("name", ["whisper-tiny.en", "whisper-tiny.en-dyn"])
def test_batched_whisper_tails_equal_single_runs_bit_for_bit(whisper, name, waves):
    from splitasr.model.registry import load_model

    model = whisper if name == "whisper-tiny.en" else load_model(name)
    edge, cloud = Edge(model), Cloud(model, decoder=model.make_decoder(beam=1))
    items = [(edge.encode(w, "stem", "deepcod+ans").payload, "stem", "deepcod+ans", None) for w in waves]
    items.append((edge.encode(waves[0][: len(waves[0]) // 2], "stem", "deepcod+ans").payload, *items[0][1:]))
    got = cloud.transcribe_batch(items)
    assert [g.text for g in got] == [cloud.transcribe(*i).text for i in items]
    assert {g.batch for g in got} == {len(items)}
    acts = [cloud.activation(*i[:3]) for i in items]
    out, out_lens = cloud.tail(*_pad([a[0] for a in acts], [a[1] for a in acts]), acts[0][2])
    for row, (h, lens, resume) in enumerate(acts):
        one, one_lens = cloud.tail(h, lens, resume)
        n = int(one_lens[0])
        assert int(out_lens[row]) == n and torch.equal(out[row, :n], one[0, :n])
