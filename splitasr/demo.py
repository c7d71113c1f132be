"""``make demo``: the product in one command. An embedded server and a link emulator start
in this process on loopback; the shipped samples are transcribed over emulated ``lte`` and
``3g`` links split between the device and the cloud, next to sending the audio itself
(PCM, Opus) and to running the whole model on the device, with the bytes sent and where
the time went."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

SAMPLES = Path(__file__).resolve().parent / "assets" / "samples"
PROFILES = ("lte", "3g")


@dataclass(frozen=True)
class Way:
    """One way to run an utterance in the demo."""

    mode: str
    point: str | None = None
    codec: str | None = None

    @property
    def label(self) -> str:
        if self.mode == "edge":
            return "edge only (whole model here)"
        if self.mode == "cloud":
            return f"cloud only, audio as {self.codec.split('+')[0]}"
        return f"split at {self.point}, {self.codec}"


def demo_ways(model_name: str) -> list[Way]:
    """Split at each model's shipped learned codec and its best near-lossless one, against
    cloud-only PCM and Opus 12 kbit/s (docs/tradeoff.md)."""
    if model_name == "ds2":
        split = [Way("split", "proj", "deepcod+ans"), Way("split", "features", "dct50+huffman")]
    else:
        split = [Way("split", "stem", "deepcod+ans"), Way("split", "features", "dct50+ans")]
    return [*split, Way("cloud", "audio", "pcm16+pack"), Way("cloud", "audio", "opus12+pack")]


def read_samples() -> list[dict]:
    """The shipped samples: ``{"audio": path, "text": reference, ...}``."""
    rows = [json.loads(line) for line in (SAMPLES / "samples.jsonl").read_text().splitlines() if line]
    return [{**r, "audio": str(SAMPLES / r["audio"])} for r in rows]


def run_demo(model_name: str | None = None, profiles: tuple[str, ...] = PROFILES) -> None:
    import torch
    from tqdm import tqdm

    from splitasr.audio import load_audio
    from splitasr.model.registry import DEFAULT_MODEL, load_model
    from splitasr.netem import EmulatorThread, get_profile
    from splitasr.pipeline import Cloud
    from splitasr.transport.client import CloudClient, EdgeClient
    from splitasr.transport.server import ServerThread

    name = model_name or DEFAULT_MODEL
    ways = demo_ways(name)
    samples = read_samples()
    with tqdm(total=4, desc="starting", bar_format="{desc}: {n}/{total} {postfix}") as bar:
        bar.set_postfix_str(f"loading {name}")
        model = load_model(name)
        bar.update()
        bar.set_postfix_str("codec state")
        cloud = Cloud(model)
        for w in ways:
            cloud.codecs.get(w.codec, w.point)
        bar.update()
        bar.set_postfix_str("server on loopback")
        server = ServerThread({name: cloud}).start()
        bar.update()
        bar.set_postfix_str(f"link emulators: {', '.join(profiles)}")
        target = ("127.0.0.1", server.port)
        links = {p: EmulatorThread(target=target, profile=get_profile(p)) for p in profiles}
        for em in links.values():
            em.start()
        bar.update()
        bar.set_postfix_str("ready")
    clients = {p: CloudClient(f"127.0.0.1:{em.port}", timeout_s=60) for p, em in links.items()}
    try:
        decoder = model.make_decoder()
        waves = [torch.from_numpy(load_audio(s["audio"])) for s in samples]
        with CloudClient(f"127.0.0.1:{server.port}", timeout_s=60) as direct:  # warm-up, untimed
            warm = EdgeClient(model, direct, decoder=decoder, model_name=name)
            for w in ways:
                warm.transcribe(waves[0], w.point, w.codec, mode=w.mode)
            warm.transcribe(waves[0], mode="edge")
        print(
            f"\n{name} over emulated links ({', '.join(_describe(p) for p in profiles)}); the server, the "
            "link emulator and the device share this machine's CPU (the device is not slowed down).\n"
        )
        for i, (sample, wave) in enumerate(zip(samples, waves, strict=True), 1):
            seconds = wave.shape[0] / model.sample_rate
            print(f'[{i}/{len(samples)}] said: "{sample["text"]}"  ({seconds:.2f} s, {sample["note"]})')
            print(
                f"  {'link':<5} {'how':<34} {'bytes up':>9} {'total ms':>9} {'device':>7} {'network':>8} "
                f"{'server':>7}  heard"
            )
            r = EdgeClient(model, None, decoder=decoder, model_name=name).transcribe(wave, mode="edge")
            _row("-", Way("edge").label, r)
            for p in profiles:
                client = EdgeClient(model, clients[p], decoder=decoder, model_name=name)
                for w in ways:
                    _row(p, w.label, client.transcribe(wave, w.point, w.codec, mode=w.mode))
            print()
        print(
            "device = head + encode (or the whole model); network = round trip minus the server's time; "
            "server = queue + decode + tail + text.\nMore: `splitasr bench e2e` (separate processes, every "
            "codec, slowdown factors), docs/transport.md."
        )
    finally:
        for c in clients.values():
            c.close()
        for em in links.values():
            em.stop()
        server.stop()


def _describe(profile: str) -> str:
    from splitasr.netem import get_profile

    p = get_profile(profile)
    return f"{p.name}: {_rate(p.up_kbps)} up, {p.one_way_ms:g} ms one way"


def _rate(kbps: float) -> str:
    return f"{kbps / 1000:g} Mbit/s" if kbps >= 1000 else f"{kbps:g} kbit/s"


def _row(link: str, how: str, r) -> None:
    t = r.timings
    device = t.get("edge", 0.0) + t.get("head", 0.0) + t.get("encode", 0.0)
    server = t.get("server", 0.0)
    net = t.get("network", 0.0)
    heard = r.text + (f"  [finished on the edge: {r.fallback}]" if r.fallback else "")
    cost = f"{r.bytes_up:>9,} {t['total']:>9.0f} {device:>7.0f} {net:>8.0f} {server:>7.0f}"
    print(f"  {link:<5} {how:<34} {cost}  {heard}")
