"""Dynamic batching: ``Cloud.transcribe_batch`` gives each item its single-request result
(a bad payload fails only its own item), and a server with ``max_batch=8`` answers 16
concurrent requests each with its own transcript, some of them batched."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest
import torch

from splitasr.audio import SAMPLE_RATE, load_audio
from splitasr.errors import SplitASRError
from splitasr.model.whisper.model import _windows
from splitasr.pipeline import Cloud, Edge, _pad
from splitasr.text import normalize
from splitasr.transport.client import CloudClient
from splitasr.transport.server import ServerThread
from tests.conftest import SHARED

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


class _SlowFirstBatch(Cloud):
    """A cloud whose first batch takes half a second: what arrives meanwhile queues."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.batches = 0

    def transcribe_batch(self, items):
        self.batches += 1
        if self.batches == 1:
            time.sleep(0.5)
        return super().transcribe_batch(items)


def test_a_request_cancelled_while_queued_does_not_break_the_others(model, jobs):
    cloud = _SlowFirstBatch(model)
    p, point, codec = next(j for j in jobs if j[1] == "proj")
    want = cloud.transcribe(p, point, codec).text
    results = {}
    with ServerThread({"ds2": cloud}, workers=1, max_batch=8, max_wait_ms=50) as s:

        def run(i, timeout_s):
            with CloudClient(f"127.0.0.1:{s.port}", timeout_s=timeout_s) as c:
                try:
                    results[i] = c.transcribe(p, "ds2", point, codec, request_id=i).text
                except Exception as exc:  # noqa: BLE001 - checked below
                    results[i] = exc

        first = threading.Thread(target=run, args=(99, 30))
        first.start()  # holds the only worker for 0.5 s
        time.sleep(0.15)
        # 0 and 2 give up while they wait in the queue; 1 and 3 wait
        threads = [threading.Thread(target=run, args=(i, 0.1 if i % 2 == 0 else 30)) for i in range(4)]
        for t in threads:
            t.start()
        for t in [first, *threads]:
            t.join(timeout=60)
        run(4, 30)  # and the server keeps serving
    assert results[99] == results[1] == results[3] == results[4] == want
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


FSDD = SHARED / "fsdd" / "recordings"
SENTENCES = Path(__file__).resolve().parents[2] / "data" / "corpus" / "test_sentences_seen_voices.jsonl"


def _real_utterances() -> list[torch.Tensor]:
    """Real speech of different lengths: FSDD digits alone and connected (1 to 12 digits,
    four speakers, 0.3 s to ~5 s), one over 30 s (digits, 28 s of silence, digits: two
    windows), and a corpus sentence when the corpus is built."""
    digit = [
        torch.from_numpy(load_audio(FSDD / f"{d}_{s}_{k}.wav"))
        for k, (d, s) in enumerate(
            zip("718302946518", ["lucas", "george", "jackson", "nicolas"] * 3, strict=True)
        )
    ]
    waves = [digit[0], digit[2], torch.cat(digit[3:5]), torch.cat(digit[4:11])]
    waves += [torch.cat(digit), torch.cat([*digit[:3], torch.zeros(28 * SAMPLE_RATE), *digit[3:6]])]
    if SENTENCES.is_file():
        rows = sorted(
            (json.loads(line) for line in SENTENCES.read_text().splitlines()), key=lambda r: r["duration"]
        )
        paths = [SENTENCES.parent / rows[i]["audio"] for i in (len(rows) // 2,)]
        waves += [torch.from_numpy(load_audio(p)) for p in paths if p.is_file()]
    return waves


@pytest.fixture(
    scope="module", params=["whisper-tiny.en", "whisper-tiny.en-dyn:float32", "whisper-tiny.en-dyn:float16"]
)
def whisper_memories(request, whisper):
    """(model, encoder outputs (T_i, C) of the real utterances through ``stem`` + ``deepcod+ans``)."""
    from splitasr.model.registry import load_model

    name, _, precision = request.param.partition(":")
    model = whisper if name == "whisper-tiny.en" else load_model(name, decoder_precision=precision)
    edge, cloud = Edge(model), Cloud(model)
    memories = []
    for wave in _real_utterances():
        h, lens, resume = cloud.activation(
            edge.encode(wave, "stem", "deepcod+ans").payload, "stem", "deepcod+ans"
        )
        out, out_lens = cloud.tail(h, lens, resume)
        memories.append(out[0, : int(out_lens[0])])
    return model, memories


@pytest.mark.skipif(not FSDD.is_dir(), reason=f"{FSDD} (FSDD recordings) not found")
@pytest.mark.parametrize("beam", [1, 5])
def test_whisper_batched_text_decoder_gives_the_single_token_ids(whisper_memories, beam):
    """Every window of every utterance decoded in one batch (rows leaving as they end)
    gives the token ids of decoding it alone; decode_batch gives decode's texts."""
    model, memories = whisper_memories
    decoder = model.make_decoder(beam=beam)
    size = model.config.n_audio_ctx
    owner = [i for i, m in enumerate(memories) for _ in _windows(m.shape[0], size)]
    windows = [m[a:b] for m in memories for a, b in _windows(m.shape[0], size)]
    assert len(memories) >= 6 and len(windows) == len(memories) + 1  # the long one has two
    assert len({w.shape[0] for w in windows}) > 1 or not model.config.trim
    with torch.inference_mode():
        single = [decoder.tokens(w) for w in windows]
        batched = decoder.tokens_batch(windows)
    assert batched == single
    assert len({len(ids) for ids in single}) > 3  # windows end at different steps
    lengths = torch.tensor([m.shape[0] for m in memories])
    padded = torch.zeros(len(memories), int(lengths.max()), memories[0].shape[1])
    for i, m in enumerate(memories):
        padded[i, : m.shape[0]] = m
    texts = decoder.decode_batch(padded, lengths)
    per_item = [
        [decoder.text_of(ids) for j, ids in zip(owner, single, strict=True) if j == i]
        for i in range(len(memories))
    ]
    assert texts == [" ".join(t for t in w if t) for w in per_item]  # as decode() joins windows
    assert sum("7" in t or "seven" in t.lower() for t in texts) >= 3


@pytest.mark.skipif(not FSDD.is_dir(), reason=f"{FSDD} (FSDD recordings) not found")
@pytest.mark.parametrize("beam", [1, 5])
def test_int8_text_decoder_batched_gives_the_single_texts_on_clear_speech(beam):
    """int8 rows are quantised on their own (RowInt8Linear), so batching does not coarsen
    them; on clear real speech the batched texts are the single ones. (Float32 GEMMs and
    attention still differ in the last bit between batch sizes, and int8 rounding can turn
    that into another choice at a near-tie on unclear audio: docs/whisper.md.)"""
    from splitasr.model.registry import load_model

    model = load_model("whisper-tiny.en-dyn", decoder_precision="int8")
    names = ["3_lucas_12.wav", "7_lucas_0.wav", "0_lucas_3.wav", "5_george_1.wav", "9_jackson_0.wav"]
    waves = [torch.from_numpy(load_audio(FSDD / n)) for n in names]
    decoder = model.make_decoder(beam=beam)
    with torch.inference_mode():
        memories = [model(w[None])[0][0] for w in waves]
        single = [decoder.text_of(decoder.tokens(m)) for m in memories]
        batched = [decoder.text_of(ids) for ids in decoder.tokens_batch(memories)]
    assert batched == single
    assert [normalize(t) for t in single] == ["three", "seven", "zero", "five", "nine"]


class _CountingDecoder:
    """Wraps a real decoder and records the batch size of each decode_batch call."""

    def __init__(self, decoder):
        self.decoder, self.calls = decoder, []

    def decode(self, logits, length=None):
        return self.decoder.decode(logits, length)

    def decode_batch(self, logits, lengths):
        self.calls.append(int(logits.shape[0]))
        return self.decoder.decode_batch(logits, lengths)


def test_transcribe_batch_decodes_each_decoders_items_as_one_batch(whisper, waves):
    """A batch of items naming different decoders: one text batch per decoder, each text
    that decoder's single-request text, text_ms shared within a decoder's batch."""
    edge, cloud = Edge(whisper), Cloud(whisper, decoder=_CountingDecoder(whisper.make_decoder(beam=1)))
    beam5 = _CountingDecoder(whisper.make_decoder(beam=5))
    payloads = [edge.encode(w, "stem", "deepcod+ans").payload for w in waves]
    payloads.append(edge.encode(waves[0][: len(waves[0]) // 2], "stem", "deepcod+ans").payload)
    items = [(p, "stem", "deepcod+ans", beam5 if i % 2 else None) for i, p in enumerate(payloads)]
    items.append((b"\x00garbage" * 4, "stem", "deepcod+ans", beam5))
    got = cloud.transcribe_batch(items)
    assert cloud.decoder.calls == [2] and beam5.calls == [1]
    for i, (payload, point, codec, decoder) in enumerate(items[:-1]):
        assert got[i].text == cloud.transcribe(payload, point, codec, decoder).text and got[i].batch == 3
    assert got[0].text_ms == got[2].text_ms and isinstance(got[3], SplitASRError)
