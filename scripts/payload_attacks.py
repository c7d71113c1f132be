"""Crafted codec payloads against the decoder: what each costs now, and header sizes.

Prints three Markdown tables for docs/codecs.md:

1. header bytes of ``deepcod+ans`` at a 3-s utterance (DS2 ``proj``, Whisper ``stem``),
   before (the JSON header of format version 1, computed from its layout) and after;
2. the attacks of issue 11, each with a valid CRC: time and traced peak of the refusal;
3. peak memory of honest decodes over the size of their float32 output.

    PYTHONPATH=. python scripts/payload_attacks.py              # tables 1-3 (about a minute)
    PYTHONPATH=. python scripts/payload_attacks.py --limit-f32  # + f32+ans at 64 M values (GBs, minutes)

Peaks are ``tracemalloc``'s (numpy allocations included; torch's are not, which is why
learned codecs must refuse before their network runs).
"""

from __future__ import annotations

import argparse
import json
import time
import tracemalloc

import numpy as np
import torch

from splitasr.codecs import CodecError, get_codec
from splitasr.codecs.audio_codecs import frame_packets
from splitasr.codecs.base import DecodeLimits, Header, pack_payload, unpack_payload
from splitasr.codecs.state import shipped_state_dir


def measure(fn) -> tuple[str, float, float]:
    """``(outcome, ms, peak MB)`` of ``fn()``."""
    tracemalloc.start()
    t0 = time.perf_counter()
    try:
        fn()
        outcome = "decoded"
    except CodecError as exc:
        outcome = f"refused: {exc}"
    ms = (time.perf_counter() - t0) * 1000
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return outcome, ms, peak / 2**20


def old_header_bytes(codec: str, shape: tuple[int, int, int], params: dict) -> int:
    """Format version 1: magic, version, lengths, ndim (12 bytes), shape (4 per dim), JSON, CRC."""
    meta = json.dumps(
        {"codec": codec, "params": params, "dtype": "float32", "lens": [shape[1]] * shape[0]},
        separators=(",", ":"),
    )
    return 12 + 4 * len(shape) + len(meta) + 4


def header_table() -> None:
    from splitasr.model.registry import load_model
    from splitasr.pipeline import Edge

    print("| model, point | shape (N, T, C) | header before (JSON) | header after | payload after |")
    print("|---|---|---|---|---|")
    wave = torch.from_numpy(np.random.default_rng(0).normal(0, 0.1, 48000).astype(np.float32))
    for model_name, point in (("ds2", "proj"), ("whisper-tiny.en", "stem")):
        model = load_model(model_name)  # Whisper's head sends the audio frames only at stem
        codec = get_codec("deepcod+ans", shipped_state_dir(model_name, point))
        payload = Edge(model).encode(wave, point, codec).payload
        header = codec.read_header(payload)
        before = old_header_bytes("deepcod+ans", header.shape, {"id": "0123abcd"})
        print(
            f"| {model_name} `{point}` | {header.shape} | {before} (+5 in the body) | {header.size} "
            f"| {len(payload)} |"
        )


def attack_table() -> None:
    proj = shipped_state_dir("ds2", "proj")
    limits = DecodeLimits.for_point(50, 256)  # what the pipeline passes at proj: 120 s, C = 256
    rows = []

    def honest(name, state, x):
        codec = get_codec(name, state)
        payload = codec.compress(x)
        header, body = unpack_payload(payload, codec.state_hash, None, codec.name)
        return codec, header, body

    def crafted(codec, header, body, shape, lens=None, params=None):
        lens = (shape[1],) * shape[0] if lens is None else lens
        h = Header(header.codec, shape, lens, header.params if params is None else params)
        return pack_payload(h, body, codec.state_hash)

    x = torch.from_numpy(np.random.default_rng(1).laplace(0, 1, (1, 4, 256)).astype(np.float32))
    ae, h, body = honest("ae+ans", proj, x)
    for what, shape, lim in (
        ("ae+ans: 10^6 frames (issue: 122 B -> 3 GB)", (1, 10**6, 256), None),
        ("ae+ans: 10^6 frames, pipeline limits", (1, 10**6, 256), limits),
        ("ae+ans: 250,000 frames (64 M values), small body", (1, 250_000, 256), None),
        ("ae+ans: 4 channels instead of 256", (1, 4, 4), None),
        ("ae+ans: 65 items", (65, 4, 256), None),
    ):
        payload = crafted(ae, h, body, shape)
        rows.append((what, len(payload), *measure(lambda p=payload, lim=lim: ae.decompress(p, lim))))
    payload = crafted(ae, h, body, (1, 4, 256), lens=(5,))
    rows.append(
        ("ae+ans: valid length 5 of 4 frames", len(payload), *measure(lambda: ae.decompress(payload)))
    )
    dc, h, body = honest("deepcod+ans", proj, x)
    payload = crafted(dc, h, body, (1, 6000, 256))
    rows.append(
        ("deepcod+ans: 6000 frames, small body", len(payload), *measure(lambda: dc.decompress(payload)))
    )

    cs = get_codec("cs4+ans")
    for c, note in ((100_000, " (issue: 119 B -> 13 s, 1.2 GB)"), (4096, "")):
        payload = pack_payload(Header("cs4+ans", (1, 1, c), (1,), bytes(8)), bytes(100))
        rows.append((f"cs4+ans: C = {c}{note}", len(payload), *measure(lambda p=payload: cs.decompress(p))))

    opus = get_codec("opus12")
    stream = frame_packets([bytes([16 << 3 | 3, 48])] * 2000)  # 2000 x 120 ms in 6 kB
    params = bytes([len(stream) & 0x7F | 0x80, len(stream) >> 7, 0xB8, 0x02])
    payload = pack_payload(Header("opus12+pack", (1, 1600, 1), (1600,), params), stream)
    what = "opus12: 240 s of packets for 0.1 s (issue: 5 kB -> 20 min decoded)"
    rows.append((what, len(payload), *measure(lambda: opus.decompress(payload))))
    nested = b"SPLC\x01" + b'{"a":' * 5000 + b"1" + b"}" * 5000
    what = "old JSON header nested 5000 deep (issue: RecursionError)"
    rows.append((what, len(nested), *measure(lambda: opus.decompress(nested))))
    f32 = get_codec("f32+ans")
    payload = f32.compress(x)
    header, body = unpack_payload(payload)
    payload = pack_payload(Header("f32+ans", (1, 250_000, 256), (250_000,)), body)
    rows.append(
        (
            "f32+ans: 64 M values, own tables, small body",
            len(payload),
            *measure(lambda: f32.decompress(payload)),
        )
    )
    bad = bytearray(f32.compress(x))
    bad[8] ^= 1
    rows.append(("f32+ans: one header bit flipped", len(bad), *measure(lambda: f32.decompress(bytes(bad)))))

    print("| attack (valid CRC unless said) | payload bytes | result | ms | peak MB |")
    print("|---|---|---|---|---|")
    for what, size, outcome, ms, peak in rows:
        print(f"| {what} | {size} | {outcome[:90]} | {ms:.1f} | {peak:.1f} |")


def memory_table(limit_f32: bool) -> None:
    rng = np.random.default_rng(2)
    proj = shipped_state_dir("ds2", "proj")
    cases = [
        ("f32+pack", None, (1, 16384, 256)),
        ("f32+zstd", None, (1, 16384, 256)),
        ("f32+huffman", proj, (1, 16384, 256)),
        ("f32+ans", None, (1, 16384, 256)),
        ("f32+ans", proj, (1, 16384, 256)),
        ("f16+ans", None, (1, 16384, 256)),
        ("q8+ans", proj, (1, 16384, 256)),
        ("q4+huffman", None, (1, 16384, 256)),
        ("q2+pack", proj, (1, 16384, 256)),
        ("intp4+ans", None, (1, 16384, 256)),
        ("dct50+huffman", proj, (1, 16384, 256)),
        ("cs4+pack", None, (1, 1024, 256)),
        ("pcm16+pack", None, (1, 1_920_000, 1)),
        ("flac+pack", None, (1, 1_920_000, 1)),
    ]
    if limit_f32:
        cases.append(("f32+ans", None, (1, 250_000, 256)))
    print("| codec | state | shape | output MB | payload MB | decode peak MB | peak / output | ms |")
    print("|---|---|---|---|---|---|---|---|")
    for name, state, shape in cases:
        if shape[2] == 1:
            x = (0.3 * np.sin(np.arange(shape[1]) / 9) + rng.normal(0, 0.01, shape[1])).astype(np.float32)
            x = torch.from_numpy(x)[None, :, None]
        else:
            x = torch.from_numpy(rng.laplace(0, 1, shape).astype(np.float32))
        codec = get_codec(name, state)
        payload = codec.compress(x)
        del x
        out_mb = np.prod(shape) * 4 / 2**20
        outcome, ms, peak = measure(lambda c=codec, p=payload: c.decompress(p))
        assert outcome == "decoded", outcome
        print(
            f"| {name} | {'shipped' if state else '-'} | {shape} | {out_mb:.1f} | {len(payload) / 2**20:.1f} "
            f"| {peak:.1f} | {peak / out_mb:.2f} | {ms:.0f} |"
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--limit-f32", action="store_true", help="also decode f32+ans at 64 M values")
    ap.add_argument("--skip-models", action="store_true", help="no header table (it loads DS2 and Whisper)")
    args = ap.parse_args()
    torch.set_num_threads(2)
    if not args.skip_models:
        header_table()
        print()
    attack_table()
    print()
    memory_table(args.limit_f32)


if __name__ == "__main__":
    main()
