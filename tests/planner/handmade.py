"""Hand-made profiles whose every prediction is worked out by hand in the tests.

A "base" machine: whole model 10 ms per second of audio, CTC search 2 ms; split points
``audio`` (head 0, tail 10 ms/s) and ``proj`` (head 2 ms/s, tail 8 ms/s); codecs
``pcm16+pack`` at audio (32000 B/s, free), ``q8+ans`` at proj (1000 B/s, 0.1 ms each way)
and ``deepcod+ans`` at proj (100 B/s, encode 0.2, decode 0.3 ms). The cloud is the base
machine, the edge the base machine ten times slower. Model ``ds2``, so the shipped WER
table applies (q8+ans at proj +0.06 points, deepcod+ans +2.05, pcm16+pack lossless).
"""

from splitasr.planner.profiles import CodecProfile, Fit, Machine, PointProfile, Profile, TextProfile


def base(role: str = "cloud") -> Profile:
    return Profile(
        role=role,
        model="ds2",
        machine=Machine("hand-made base machine", threads=1),
        full_ms=Fit(0.0, 10.0),
        text=TextProfile("ctc", search_ms=Fit(2.0, 0.0)),
        points=(
            PointProfile("audio", Fit(0.0, 0.0), Fit(0.0, 10.0)),
            PointProfile("proj", Fit(0.0, 2.0), Fit(0.0, 8.0)),
        ),
        codecs=(
            CodecProfile("audio", "pcm16+pack", Fit(0.0), Fit(0.0), Fit(0.0, 32000.0)),
            CodecProfile("proj", "q8+ans", Fit(0.1), Fit(0.1), Fit(0.0, 1000.0)),
            CodecProfile("proj", "deepcod+ans", Fit(0.2), Fit(0.3), Fit(0.0, 100.0)),
        ),
        lengths=(1.0, 8.0),
        source="tests/planner/handmade.py",
    )


def edge_and_cloud() -> tuple[Profile, Profile]:
    from dataclasses import replace

    return replace(base("edge").slowed(10.0), role="edge"), base("cloud")
