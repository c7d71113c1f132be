"""``EdgeClient(planner=...)`` with ``mode="auto"``, live: a loopback server behind the link
emulator, hand-made profiles whose break-even points are worked out below.

Profiles (ds2): the edge runs the whole model at 150 ms per second of audio (+ 2 ms CTC
search); the cloud's tail costs 10 ms/s; the only offloaded option is ``cloud audio
pcm16+pack`` (32000 B/s, lossless: the tail gets the very samples of the 16-bit WAV, so
every transcript equals the direct pipeline's). For ``s`` seconds at RTT ``R`` and uplink
``B`` kbit/s: edge ``150 s + 2``, cloud ``256000 s / B + R + 10 s + 2`` ms. For the ~1.5-s
utterances here: edge ~227 ms; cloud ~65 ms at 40 ms RTT and 10 Mbit/s (fast link), ~1.2 s
at 600 ms RTT and 1 Mbit/s (slow link).
"""

from __future__ import annotations

import time

import pytest

from splitasr.netem import EmulatorThread, LinkProfile
from splitasr.pipeline import recognise
from splitasr.planner.estimator import NetworkEstimator
from splitasr.planner.policy import Planner
from splitasr.planner.profiles import CodecProfile, Fit, Machine, PointProfile, Profile, TextProfile
from splitasr.transport.client import CloudClient, EdgeClient
from splitasr.transport.server import ServerThread

FAST = LinkProfile("fast", one_way_ms=20, up_kbps=10_000, down_kbps=50_000)
SLOW = LinkProfile("slow", one_way_ms=300, up_kbps=1_000, down_kbps=2_000)
GREEDY = 1


def _profile(role: str, full_b: float) -> Profile:
    return Profile(
        role=role,
        model="ds2",
        machine=Machine(f"hand-made {role}", threads=1),
        full_ms=Fit(0.0, full_b),
        text=TextProfile("ctc", search_ms=Fit(2.0, 0.0)),
        points=(PointProfile("audio", Fit(0.0, 0.0), Fit(0.0, full_b)),),
        codecs=(CodecProfile("audio", "pcm16+pack", Fit(0.0), Fit(0.0), Fit(0.0, 32000.0)),),
        lengths=(1.0, 8.0),
        source="tests/transport/test_auto.py",
    )


@pytest.fixture(scope="module")
def planner() -> Planner:
    return Planner(_profile("edge", 150.0), _profile("cloud", 10.0))


@pytest.fixture(scope="module")
def utterances(waves):
    """The session's synthesised utterances, each with the direct pipeline's transcript."""
    return waves


@pytest.fixture(scope="module")
def direct(model, utterances) -> list[str]:
    greedy = model.make_decoder(beam=GREEDY)
    return [recognise(model, w, greedy) for w in utterances]


def _client(model, planner, port: int, estimator: NetworkEstimator) -> EdgeClient:
    cloud = CloudClient(f"127.0.0.1:{port}", timeout_s=10)
    return EdgeClient(
        model, cloud, decoder=model.make_decoder(beam=GREEDY), planner=planner, estimator=estimator
    )


def test_fast_link_offloads_then_a_slow_link_moves_the_planner_to_the_edge(
    model, clouds, planner, utterances, direct
):
    est = NetworkEstimator(rtt_ms=100.0, up_kbps=10_000.0)
    with ServerThread(clouds) as server, EmulatorThread(("127.0.0.1", server.port), profile=FAST) as em:
        client = _client(model, planner, em.port, est)
        probed = est.rtt_samples  # the client probed when it was made
        try:
            fast = [client.transcribe(w, mode="auto", beam=GREEDY) for w in utterances]
            rtt_fast = est.estimate().rtt_ms
            em.set_profile(SLOW)
            slow = []
            for _ in range(3):
                slow += [client.transcribe(w, mode="auto", beam=GREEDY) for w in utterances]
        finally:
            client.cloud.close()
    # the client probed on connecting (a health check), so no utterance waited for a probe
    assert probed == 1 and all("probe" not in r.timings for r in fast + slow)
    # fast link: every utterance to the cloud, the reply fed back, transcripts right
    assert [r.decision for r in fast] == ["cloud audio pcm16+pack"] * len(fast)
    assert all(r.fallback is None and r.mode == "cloud" and r.request_timing is not None for r in fast)
    assert est.rtt_samples >= len(fast)  # the probe and every reply
    assert 20.0 <= rtt_fast <= 200.0, rtt_fast  # emulated RTT 40 ms (+ gRPC, loopback, the server's clock)
    for r in fast:  # predicted vs measured: the planner's number is on the result
        assert r.predicted_ms is not None and r.predicted_ms < 150.0
        assert "cloud audio pcm16+pack" in r.explain() and "chosen: cloud audio pcm16+pack" in r.explain()
    # slow link: offloads until the estimate catches up, then the edge, and it stays there
    kinds = [r.decision for r in slow]
    first_edge = kinds.index("edge")
    assert 1 <= first_edge <= 4, kinds
    assert all(k == "edge" for k in kinds[first_edge:]), kinds
    assert est.estimate().rtt_ms > 300.0
    assert all(
        r.mode == "edge" and r.fallback is None and "round_trip" not in r.timings for r in slow[first_edge:]
    )
    assert [r.text for r in fast] == direct
    assert [r.text for r in slow] == direct * 3


def test_server_down_falls_back_marks_the_outage_and_stops_waiting(
    model, clouds, planner, utterances, direct
):
    est = NetworkEstimator(rtt_ms=100.0, up_kbps=10_000.0, outage_after=3, outage_probe_s=600.0)
    server = ServerThread(clouds).start()
    em = EmulatorThread(("127.0.0.1", server.port), profile=FAST).start()
    client = _client(model, planner, em.port, est)
    try:
        first = client.transcribe(utterances[0], mode="auto", beam=GREEDY)
        assert first.decision == "cloud audio pcm16+pack" and first.fallback is None
        server.stop()
        results = []
        for i in range(6):
            w = utterances[i % len(utterances)]
            t = time.perf_counter()
            r = client.transcribe(w, mode="auto", beam=GREEDY)
            results.append((r, time.perf_counter() - t))
    finally:
        client.cloud.close()
        em.stop()
        server.stop()
    # three tries at the cloud, each failing over to the edge with the gRPC reason
    for r, _ in results[:3]:
        assert r.decision == "cloud audio pcm16+pack" and r.mode == "cloud"
        assert r.fallback is not None and "UNAVAILABLE" in r.fallback
    assert est.outage and est.failures >= 3
    # then edge-only straight away: no cloud call, no deadline waited for
    for r, wall in results[3:]:
        assert r.decision == "edge" and r.fallback is None and "round_trip" not in r.timings
        assert wall < 5.0
        assert "OUTAGE" in r.explain()
    texts = [r.text for r, _ in results]
    assert texts == [direct[i % len(direct)] for i in range(6)]


def test_streaming_auto_decides_once_per_utterance_among_streamable_options(
    model, clouds, planner, utterances, direct
):
    from splitasr.planner.experiments import shipped_inputs

    shipped = shipped_inputs("ds2")
    full = Planner(shipped.edge, shipped.cloud, shipped.wer)
    streaming = EdgeClient(model, None, planner=full).streaming_planner()
    labels = [o.label for o in streaming.options]
    assert "edge" in labels and "cloud audio pcm16+pack" in labels
    assert "split audio>proj bnf+ans" not in labels  # its decoder needs the whole utterance
    assert all(
        o.kind == "edge" or (o.point in model.streamable_points and o.resume is None)
        for o in streaming.options
    )
    est = NetworkEstimator(rtt_ms=100.0, up_kbps=10_000.0)
    with ServerThread(clouds) as server, EmulatorThread(("127.0.0.1", server.port), profile=FAST) as em:
        client = _client(model, planner, em.port, est)
        try:
            rs = [client.transcribe_stream(w, mode="auto", beam=GREEDY, chunk_ms=500) for w in utterances]
        finally:
            client.cloud.close()
    assert [r.decision for r in rs] == ["cloud audio pcm16+pack"] * len(rs)
    assert all(r.mode == "stream" and r.point == "audio" and r.fallback is None for r in rs)
    assert [r.text for r in rs] == direct
    assert est.rtt_samples >= 1 + len(rs)  # the probe, then one network sample per utterance


def test_cli_policy_auto_explains_each_file_and_refuses_bad_profiles(
    model, clouds, planner, speech_dir, direct, tmp_path, capsys
):
    from splitasr.cli import main
    from splitasr.planner.profiles import save_profile

    edge, cloud = tmp_path / "edge.json", tmp_path / "cloud.json"
    save_profile(planner.edge, edge)
    save_profile(planner.cloud, cloud)
    files = [str(p) for p in sorted(speech_dir.glob("*.wav"))]
    flags = ["--model", "ds2", "--beam", "1", "--edge-profile", str(edge), "--cloud-profile", str(cloud)]
    with ServerThread(clouds) as server:
        code = main(
            [
                "edge",
                "transcribe",
                *files,
                "--cloud",
                f"127.0.0.1:{server.port}",
                "--policy",
                "auto",
                *flags,
                "--explain",
            ]
        )
    out = capsys.readouterr().out
    assert code == 0
    for f, text in zip(files, direct, strict=True):
        assert f"{f}\t{text}" in out
    # loopback, RTT ~0: the cloud wins; each file has its decision and its table
    assert out.count("[auto: cloud audio pcm16+pack; predicted ") == len(files)
    assert out.count("chosen: cloud audio pcm16+pack, least predicted total") == len(files)
    assert "+ probe " not in out  # the client probed on connecting: no file waited for one
    # a bad profile: one line, exit 2, no traceback
    bad = tmp_path / "bad.json"
    bad.write_text('{"version": 1, "role": "edge", "slope": 3}')
    code = main(
        [
            "edge",
            "transcribe",
            files[0],
            "--cloud",
            "127.0.0.1:1",
            "--policy",
            "auto",
            "--edge-profile",
            str(bad),
        ]
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("splitasr: error: ") and "bad.json" in err[0]
    code = main(
        ["edge", "transcribe", files[0], "--cloud", "127.0.0.1:1", "--policy", "auto", "--split", "proj"]
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err == [
        "splitasr: error: --policy auto chooses edge, cloud or split: no --mode, --split or --codec"
    ]


def test_a_missed_deadline_finishes_on_the_edge_and_counts_as_a_failure(
    model, clouds, planner, utterances, direct
):
    est = NetworkEstimator(rtt_ms=100.0, up_kbps=10_000.0, outage_after=3)
    stalled = LinkProfile("tunnel", one_way_ms=20, up_kbps=10_000, down_kbps=50_000, outages=((0.0, 30.0),))
    with ServerThread(clouds) as server, EmulatorThread(("127.0.0.1", server.port), profile=FAST) as em:
        client = _client(model, planner, em.port, est)
        try:
            ok = client.transcribe(utterances[0], mode="auto", beam=GREEDY)  # probes, connects
            em.set_profile(stalled)  # nothing gets through for 30 s
            t = time.perf_counter()
            late = client.transcribe(utterances[1], mode="auto", beam=GREEDY, timeout_s=0.5)
            wall = time.perf_counter() - t
        finally:
            client.cloud.close()
    assert ok.fallback is None and ok.decision == "cloud audio pcm16+pack"
    assert late.decision == "cloud audio pcm16+pack" and late.fallback.startswith("DEADLINE_EXCEEDED")
    assert late.timings["round_trip"] >= 500.0 and wall < 5.0
    assert late.text == direct[1]
    assert est.failures == 1 and not est.outage  # one miss: not yet an outage


def test_a_stale_estimate_is_probed_in_the_background_while_the_edge_runs(model, clouds, planner, utterances):
    """Slow link (RTT ~600 ms): the planner keeps to the edge, so only probes measure the link.
    A stale estimate sends a probe on a background thread; the utterance does not wait for
    its 600-ms round trip, and the estimator has the answer afterwards."""
    est = NetworkEstimator(rtt_ms=100.0, up_kbps=10_000.0, probe_age_s=0.2)
    with ServerThread(clouds) as server, EmulatorThread(("127.0.0.1", server.port), profile=SLOW) as em:
        client = _client(model, planner, em.port, est)  # probes on connecting (waits ~600 ms)
        try:
            assert est.rtt_samples == 1 and est.estimate().rtt_ms > 500.0
            time.sleep(0.3)  # the estimate is now stale
            t = time.perf_counter()
            r = client.transcribe(utterances[0], mode="auto", beam=GREEDY)
            wall = time.perf_counter() - t
            in_flight = client._probing is not None and client._probing.is_alive()
            client.wait_for_probe(5.0)
        finally:
            client.cloud.close()
    assert r.decision == "edge" and "probe" not in r.timings
    assert in_flight and wall < 0.6  # the edge answered while the probe was still out
    assert est.rtt_samples == 2 and est.estimate().rtt_ms > 500.0
