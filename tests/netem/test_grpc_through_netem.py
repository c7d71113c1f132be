"""A real gRPC call through the emulator: the DS2 server (``ServerThread``) answered through
an ``lte`` link gives the same transcript as directly, takes at least the link's round
trips, and the emulator counts at least the payload on the wire."""

from __future__ import annotations

import time

import torch

from splitasr.audio import load_audio
from splitasr.netem import PROFILES, EmulatorThread
from splitasr.pipeline import Cloud, Edge
from splitasr.transport.client import CloudClient
from splitasr.transport.server import ServerThread


def test_a_split_request_through_lte_gives_the_direct_transcript(model, speech_dir):
    wave = torch.from_numpy(load_audio(speech_dir / "hello.wav"))
    payload = Edge(model).encode(wave, "proj", "q8+ans").payload
    with ServerThread({"ds2": Cloud(model)}) as server:
        with CloudClient(f"127.0.0.1:{server.port}", timeout_s=30) as direct:
            want = direct.transcribe(payload, "ds2", "proj", "q8+ans").text
        with EmulatorThread(("127.0.0.1", server.port), profile=PROFILES["lte"]) as em:
            with CloudClient(f"127.0.0.1:{em.port}", timeout_s=30) as client:
                first = client.transcribe(payload, "ds2", "proj", "q8+ans")  # connects
                up = em.stats.bytes_up
                t0 = time.perf_counter()
                second = client.transcribe(payload, "ds2", "proj", "q8+ans")
                elapsed = time.perf_counter() - t0
            assert first.text == second.text == want and want
            # one round trip (50 ms) + the payload at 10 Mbit/s + the server's own time
            serialise_s = 8 * len(payload) / 10e6
            assert elapsed >= 0.050 + serialise_s + second.timings.total_ms / 1000 * 0.9
            assert em.stats.bytes_up - up >= len(payload) and em.stats.connections == 1
