"""The streaming head: chunk by chunk, bit for bit the whole-utterance head at every
streamable point of both models, for chunks from one sample to longer than the utterance,
on real speech (FSDD) and the synthetic utterances; and the two ends of the split path
(EdgeStream -> CloudStream) with their checks."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from splitasr.audio import load_audio
from splitasr.codecs.base import CodecError
from splitasr.pipeline import Cloud, Edge, PipelineError

FSDD = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "fsdd" / "recordings"
# 1 sample; 1 frame + 1 sample; 200 ms; an odd 4001; longer than any utterance here
CHUNKS = (161, 3200, 4001, 10**7)


@pytest.fixture(scope="module")
def speech(speech_dir) -> torch.Tensor:
    """Real speech when the shared FSDD folder is there (three digits by two speakers,
    2.4 s), else the synthetic sentence; float32 ``(S,)`` at 16 kHz."""
    files = [FSDD / f for f in ("4_jackson_0.wav", "1_nicolas_3.wav", "7_jackson_12.wav")]
    if all(f.is_file() for f in files):
        return torch.cat([torch.from_numpy(load_audio(f)) for f in files])
    return torch.from_numpy(load_audio(speech_dir / "hello.wav"))


def _streamed(model, point: str, wave: torch.Tensor, chunk: int) -> torch.Tensor:
    """The head stream's output for ``wave`` fed in ``chunk``-sample pieces, after the
    cloud's end-of-stream step: ``(1, T, C)``."""
    stream = model.head_stream(point)
    parts = [stream.push(wave[i : i + chunk]) for i in range(0, wave.shape[0], chunk)]
    parts.append(stream.finish())
    return model.stream_end(torch.cat(parts, dim=1), point, stream.floor)


def _whole(model, point: str, wave: torch.Tensor) -> torch.Tensor:
    with torch.inference_mode():
        return model.head(wave.unsqueeze(0), None, point)[0]


def test_which_points_stream(model, whisper):
    assert model.streamable_points == ["audio", "features", "conv", "res1", "res2", "proj"]
    assert whisper.streamable_points == ["audio", "features"]  # the stem sees the utterance's floor
    g = model.stream_geometry("proj")
    assert (g.hop, g.context) == (320, 200 + 160 + 2 * 2 * 320)
    for m, point in ((model, "gru1"), (whisper, "stem")):
        with pytest.raises(ValueError, match="does not stream"):
            m.stream_geometry(point)


@pytest.mark.parametrize("chunk", CHUNKS)
@pytest.mark.parametrize("point", ["audio", "features", "conv", "res1", "res2", "proj"])
def test_ds2_chunked_head_equals_the_whole_head_bit_for_bit(model, speech, point, chunk):
    whole = _whole(model, point, speech)
    got = _streamed(model, point, speech, chunk)
    assert got.shape == whole.shape and torch.equal(got, whole)


@pytest.mark.parametrize("chunk", CHUNKS)
@pytest.mark.parametrize("point", ["audio", "features"])
def test_whisper_chunked_head_equals_the_whole_head_bit_for_bit(whisper, speech, point, chunk):
    whole = _whole(whisper, point, speech)
    got = _streamed(whisper, point, speech, chunk)
    assert got.shape == whole.shape and torch.equal(got, whole)


def test_whisper_frames_wait_for_the_floor_until_the_end(whisper, speech):
    """Before the end each frame carries the floor known so far; the final one only
    raises values (it is the utterance's, >= every earlier one)."""
    stream = whisper.head_stream("features")
    sent = torch.cat([stream.push(speech), stream.finish()], dim=1)
    final = whisper.stream_end(sent, "features", stream.floor)
    assert stream.floor is not None and bool((final >= sent).all())
    assert float(final.min()) == pytest.approx(stream.floor)


@pytest.mark.parametrize("point", ["features", "proj"])
def test_one_sample_at_a_time(model, whisper, speech, point):
    wave = speech[:20000]  # 1.25 s: one push per sample, a window per new frame
    for m in (model, whisper) if point == "features" else (model,):
        assert torch.equal(_streamed(m, point, wave, 1), _whole(m, point, wave))


@pytest.mark.parametrize("samples", [100, 170, 555, 8000])
def test_utterances_shorter_than_the_window_and_than_a_frame(model, whisper, speech, samples):
    wave = speech[4000 : 4000 + samples]
    for m, point in ((model, "proj"), (model, "features"), (whisper, "features")):
        assert torch.equal(_streamed(m, point, wave, 64), _whole(m, point, wave)), (m.name, point)


def test_edge_stream_payloads_decode_to_the_whole_head(model, speech):
    edge, cloud = Edge(model), Cloud(model)
    es, cs = edge.stream("proj", "f32+pack"), cloud.stream("proj", "f32+pack")
    for i in range(0, speech.shape[0], 3200):
        for payload in es.push(speech[i : i + 3200]):
            cs.add(payload)
    for payload in es.finish():
        cs.add(payload)
    act = cs.end(es.floor)
    assert torch.equal(act.h, _whole(model, "proj", speech))
    assert cs.chunks >= 3 and es.frames == cs.frames == act.h.shape[1]


@pytest.mark.parametrize(
    ("name", "point", "codec"), [("ds2", "proj", "q8+ans"), ("ds2", "audio", "pcm16+pack")]
)
def test_a_streamed_utterance_gives_the_unary_transcript(model, speech, name, point, codec):
    edge, cloud = Edge(model), Cloud(model)
    es, cs = edge.stream(point, codec), cloud.stream(point, codec)
    for i in range(0, speech.shape[0], 3200):
        for payload in es.push(speech[i : i + 3200]):
            cs.add(payload)
    for payload in es.finish():
        cs.add(payload)
    got = cs.finish(floor=es.floor)
    want = cloud.transcribe(edge.encode(speech, point, codec).payload, point, codec)
    assert got.text == want.text and got.text
    assert got.tail_ms > 0 and got.decode_ms > 0


def test_whisper_features_stream_gives_the_unary_transcript(whisper, speech):
    edge, cloud = Edge(whisper), Cloud(whisper)
    es, cs = edge.stream("features", "f32+pack"), cloud.stream("features", "f32+pack")
    for i in range(0, speech.shape[0], 4000):
        for payload in es.push(speech[i : i + 4000]):
            cs.add(payload)
    for payload in es.finish():
        cs.add(payload)
    got = cs.finish(floor=es.floor)
    assert (
        got.text
        == cloud.transcribe(edge.encode(speech, "features", "f32+pack").payload, "features", "f32+pack").text
    )


def test_points_that_do_not_stream_are_refused_on_both_sides(model, whisper):
    for m, point in ((model, "gru1"), (model, "classifier"), (whisper, "stem"), (whisper, "block2")):
        with pytest.raises(PipelineError, match="does not stream"):
            Edge(m).stream(point, "q8+ans")
        with pytest.raises(PipelineError, match="does not stream"):
            Cloud(m).stream(point, "q8+ans")
    with pytest.raises(PipelineError, match="unknown split point"):
        Cloud(model).stream("gru9", "q8+ans")


def test_cloud_stream_bounds_and_checks_every_chunk(model, speech):
    edge = Edge(model)
    chunk = edge.compress(torch.zeros(1, 40, 256), torch.tensor([40]), "proj", "f32+pack")
    short = Cloud(model, max_seconds=1.0)  # 51 frames at proj
    cs = short.stream("proj", "f32+pack")
    assert cs.add(chunk) == 40
    with pytest.raises(PipelineError, match="passed 51 frames"):
        cs.add(chunk)
    cs = Cloud(model).stream("proj", "f32+pack")
    two = edge.compress(torch.zeros(2, 5, 256), torch.tensor([5, 5]), "proj", "f32+pack")
    with pytest.raises(CodecError, match="2 items"):
        cs.add(two)
    with pytest.raises(PipelineError, match="codec"):
        cs.add(edge.compress(torch.zeros(1, 5, 256), torch.tensor([5]), "proj", "q8+ans"))
    with pytest.raises(PipelineError, match="another split point"):
        cs.add(edge.compress(torch.zeros(1, 5, 1280), torch.tensor([5]), "res2", "f32+pack"))
    with pytest.raises(CodecError):
        cs.add(chunk[:-3])
    with pytest.raises(PipelineError, match="no audio"):
        cs.end()
    cs.add(chunk)
    with pytest.raises(PipelineError, match="streams no floor"):
        cs.end(floor=-0.5)
    with pytest.raises(PipelineError, match="finite"):
        cs.end(floor=float("nan"))
    assert cs.end().h.shape == (1, 40, 256)


def test_pushing_after_the_end_is_an_error(model, speech):
    stream = model.head_stream("proj")
    stream.push(speech[:100])
    stream.finish()
    with pytest.raises(ValueError, match="finished"):
        stream.push(speech[:100])
