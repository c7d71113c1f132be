"""The one split path: every model x split point x lossless codec gives the unsplit
transcript; one shared model serves many threads at once with single-threaded results;
the cloud refuses payloads that do not match the request."""

from __future__ import annotations

import threading

import pytest
import torch

from splitasr.audio import SAMPLE_RATE, load_audio
from splitasr.codecs import CodecError
from splitasr.codecs.base import CODERS, TRANSFORMS
from splitasr.errors import SplitASRError
from splitasr.pipeline import Cloud, Edge, PipelineError, recognise

LOSSLESS = sorted(f"{t}+{c}" for t, cls in TRANSFORMS.items() if cls.lossless for c in CODERS)
PHRASES = {
    "a": "turn the lights off in the kitchen",
    "b": "nine two six",
    "c": "what is the weather like tomorrow",
    "d": "call my sister",
}


@pytest.fixture(scope="module")
def waves(speech_dir, tmp_path_factory) -> list[torch.Tensor]:
    """Six short utterances: the shared two and four more in another espeak-ng voice."""
    import soundfile as sf

    from splitasr.corpus.tts import Speaker, render

    d = tmp_path_factory.mktemp("phrases")
    speaker = Speaker("espeak-ng", "en-gb", "f2", rate=150, pitch=60)
    paths = [speech_dir / "hello.wav", speech_dir / "digits.wav"]
    for name, text in PHRASES.items():
        sf.write(d / f"{name}.wav", render(text, speaker), SAMPLE_RATE, subtype="PCM_16")
        paths.append(d / f"{name}.wav")
    return [torch.from_numpy(load_audio(p)) for p in paths]


def test_lossless_codecs_are_named_as_expected():
    assert LOSSLESS == ["f32+ans", "f32+huffman", "f32+pack", "f32+zstd"]


def _every_point_and_lossless_codec(model, wave):
    """The unsplit transcript, and for each (point, lossless codec) whether the split path
    gives the unsplit model's output bit for bit (and so its transcript)."""
    decoder = model.make_decoder(beam=1)
    edge, cloud = Edge(model), Cloud(model, decoder=decoder)
    with torch.inference_mode():
        full, full_lens = model(wave[None])
    exact = {}
    for point in model.split_points:
        for codec in LOSSLESS:
            sent = edge.encode(wave, point, codec)
            h, lens, resume = cloud.activation(sent.payload, point, codec)
            out, out_lens = cloud.tail(h, lens, resume)
            exact[point, codec] = torch.equal(out, full) and torch.equal(out_lens, full_lens)
    text = cloud.transcribe(edge.encode(wave, "features", "f32+ans").payload, "features", "f32+ans").text
    assert text == recognise(model, wave, decoder)
    return text, exact


def test_ds2_every_point_and_lossless_codec_gives_the_unsplit_transcript(model, waves):
    text, exact = _every_point_and_lossless_codec(model, waves[0])
    assert text == "the sunis bright to day"  # greedy DS2 on this espeak-ng voice, as it is
    assert len(exact) == len(model.split_points) * 4 and all(exact.values()), exact


def test_whisper_every_point_and_lossless_codec_gives_the_unsplit_transcript(whisper, waves):
    text, exact = _every_point_and_lossless_codec(whisper, waves[1])
    assert text == "Four one one seven."
    assert len(exact) == 7 * 4 and all(exact.values()), exact


def test_audio_point_crosses_as_n_s_1(model, waves):
    h, lens = Edge(model).head(waves[0], "audio")
    assert h.shape == (1, waves[0].shape[0], 1) and int(lens[0]) == waves[0].shape[0]
    assert torch.equal(h[0, :, 0], waves[0])


def _outputs(model, jobs, threads: int):
    """``(text, tail output)`` of each ``(wave, point, codec)`` job through the split path,
    run by ``threads`` threads at once sharing one Edge, one Cloud and its default decoder
    (Whisper beam 5; DS2 beam 32 with the word LM)."""
    edge, cloud = Edge(model), Cloud(model)
    results: list = [None] * len(jobs)
    barrier = threading.Barrier(threads)

    def work(k: int):
        barrier.wait()  # all threads start together
        for i in range(k, len(jobs), threads):
            wave, point, codec = jobs[i]
            sent = edge.encode(wave, point, codec)
            h, lens, resume = cloud.activation(sent.payload, point, codec)
            out, out_lens = cloud.tail(h, lens, resume)
            text = cloud.decoder.decode(out[0], int(out_lens[0]))
            results[i] = (text, out.clone(), out_lens.clone())

    pool = [threading.Thread(target=work, args=(k,)) for k in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join(timeout=600)
    return results


JOBS = {  # three split points each, codecs with and without shipped state
    "whisper": [("features", "f32+pack"), ("stem", "deepcod+ans"), ("block2", "f32+zstd")],
    "ds2": [("features", "f32+ans"), ("proj", "q8+ans"), ("gru1", "f32+pack")],
}


@pytest.mark.parametrize("name", ["whisper", "ds2"])
def test_eight_threads_on_one_model_match_single_threaded_outputs_exactly(name, request, waves):
    """8 threads x 3 split points at once on one shared model: every output bit-identical to
    the same job run alone."""
    model = request.getfixturevalue("whisper" if name == "whisper" else "model")
    jobs = [(waves[i % len(waves)], *JOBS[name][i % 3]) for i in range(8)]
    alone = _outputs(model, jobs, threads=1)
    together = _outputs(model, jobs, threads=8)
    assert all(r is not None for r in together)
    for (t1, o1, l1), (t8, o8, l8) in zip(alone, together, strict=True):
        assert t1 == t8 and torch.equal(l1, l8) and torch.equal(o1, o8)
    assert len({t for t, _, _ in alone}) >= 5  # different inputs, different texts


def _crafted(model, shape, lens, point="proj"):
    """An ``f32+pack`` payload with a valid CRC declaring ``shape`` and ``lens``."""
    import numpy as np

    from splitasr.codecs import get_codec
    from splitasr.codecs.base import Symbols

    codec = get_codec("f32+pack")
    sym = codec.transform.forward(np.zeros(shape, np.float32))
    body = codec.coder.encode(sym.data, sym.alphabet)
    return codec.pack_payload(
        Symbols(sym.data, 256), body, shape, lens, point=model.split_points.index(point)
    )


def test_cloud_refuses_empty_payloads_with_a_clean_error(model):
    cloud = Cloud(model, decoder=model.make_decoder(beam=1))
    for shape, lens in (((0, 5, 256), ()), ((1, 5, 256), (0,)), ((2, 5, 256), (5, 5))):
        with pytest.raises(SplitASRError):
            cloud.transcribe(_crafted(model, shape, lens), "proj", "f32+pack")


def test_cloud_refuses_a_payload_for_another_point_or_codec(model, waves):
    edge, cloud = Edge(model), Cloud(model, decoder=model.make_decoder(beam=1))
    sent = edge.encode(waves[0], "proj", "f32+pack")
    with pytest.raises(PipelineError, match="another split point"):
        cloud.transcribe(sent.payload, "conv", "f32+pack")
    with pytest.raises(PipelineError, match="made by codec 'f32\\+pack'"):
        cloud.transcribe(sent.payload, "proj", "f32+zstd")
    with pytest.raises(PipelineError, match="unknown split point 'nowhere'"):
        edge.encode(waves[0], "nowhere", "f32+pack")
    with pytest.raises(CodecError):
        cloud.transcribe(sent.payload[:-3], "proj", "f32+pack")


def test_cloud_refuses_a_payload_longer_than_its_max_seconds(model, waves):
    edge = Edge(model)
    cloud = Cloud(model, decoder=model.make_decoder(beam=1), max_seconds=0.5)
    sent = edge.encode(waves[0], "proj", "f32+pack")
    assert len(waves[0]) > SAMPLE_RATE  # over a second of speech
    with pytest.raises(CodecError, match="frames per item, over the limit of 26"):  # 0.5 s x 50 Hz + 1
        cloud.transcribe(sent.payload, "proj", "f32+pack")


@pytest.mark.parametrize("fill,words", [(float("nan"), "non-finite values"), (1e38, "output to NaN")])
def test_cloud_refuses_non_finite_values_alone_and_in_a_batch(model, waves, fill, words):
    """Regression: NaN crashed DS2's beam search (ValueError, an INTERNAL status at the
    server) and sent Whisper's text decoder to its token limit; 1e38s overflow in the tail."""
    edge, cloud = Edge(model), Cloud(model)  # the default decoder: beam search with the LM
    bad = edge.compress(torch.full((1, 30, 256), fill), torch.tensor([30]), "proj", "f32+pack")
    with pytest.raises(PipelineError, match=words):
        cloud.transcribe(bad, "proj", "f32+pack")
    good = edge.encode(waves[1], "proj", "f32+pack").payload
    got = cloud.transcribe_batch([(bad, "proj", "f32+pack", None), (good, "proj", "f32+pack", None)])
    assert isinstance(got[0], PipelineError) and words in str(got[0])
    assert got[1].text == cloud.transcribe(good, "proj", "f32+pack").text
