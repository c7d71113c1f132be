"""``make demo``: synthesise a few utterances on the spot, transcribe them, show timings
and the split points the model offers."""

from __future__ import annotations

import tempfile
from pathlib import Path

DEMO_SENTENCES = (
    ("The quick brown fox jumps over the lazy dog.", "espeak-ng", "en-us", "f4"),
    ("Please call Stella and ask her to bring these things.", "espeak-ng", "en-gb", "m6"),
    ("Seven three one nine.", "flite", "rms", ""),
)


def run_demo(model_path: str | None = None) -> None:
    import soundfile as sf

    from splitasr.audio import SAMPLE_RATE
    from splitasr.corpus.tts import Speaker, render
    from splitasr.model.registry import load_model
    from splitasr.transcribe import transcribe
    from splitasr.wer import error_rates

    model = load_model(model_path)
    with tempfile.TemporaryDirectory() as tmp:
        files, refs = [], []
        for i, (text, engine, voice, variant) in enumerate(DEMO_SENTENCES):
            speaker = Speaker(
                engine,
                voice,
                variant,
                rate=100 if engine == "flite" else 165,
                pitch=0 if engine == "flite" else 50,
            )
            path = Path(tmp) / f"demo{i}.wav"
            sf.write(path, render(text, speaker), SAMPLE_RATE)
            files.append(path)
            refs.append(text)
        transcribe(model, files[:1])  # warm-up: first-call costs (filter bank, allocator) are not timed
        results = transcribe(model, files, model.make_decoder())
    print(
        f"Held-out synthetic voices, transcribed on this CPU by the whole {model.name} model "
        "(its default decoder):\n"
    )
    for ref, r in zip(refs, results, strict=False):
        wer = error_rates([ref], [r.text])["wer"]
        print(
            f"  said: {ref}\n  heard: {r.text}\n  {r.audio_seconds:.2f} s of audio in {r.compute_ms:.0f} ms "
            f"(RTF {r.compute_ms / 1000 / r.audio_seconds:.3f}), WER {wer:.0%}\n"
        )
    print("Split points (head runs on the device up to and including the point):\n")
    print(f"  {'point':<12} {'values/frame':>12} {'frames/s':>9} {'raw kbit/s':>11} {'head params':>12}")
    for p in model.point_info():
        print(
            f"  {p.name:<12} {p.dim:>12} {p.frames_per_second:>9g} {p.raw_kbps:>11.1f} {p.params_head:>12,}"
        )
