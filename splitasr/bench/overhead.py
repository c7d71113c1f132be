"""Protocol overhead on the wire: the bytes a unary split request costs beyond its payload,
counted at the link emulator (TCP payload bytes: HTTP/2 frames, HPACK headers, gRPC's
message prefix and the protobuf fields; no TCP/IP headers).

:func:`measure_overhead` puts a ``loopback`` :class:`~splitasr.netem.LinkEmulator` in front
of a running server, sends ``warmup`` then ``requests`` identical requests one after the
other on one channel (steady state: HPACK's dynamic table is warm, the connection set up),
and splits the uplink bytes of the measured requests by what they are: every HTTP/2 frame
is parsed from the emulator's tap, HEADERS blocks are split per header field (decoded with
``hpack``, the dev extra), DATA into frame headers, gRPC's 5-byte prefix, the protobuf
fields and the payload. ``splitasr bench overhead`` runs it for real payloads.
"""

from __future__ import annotations

import bisect
import collections
import threading
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from splitasr.errors import MissingDependencyError, SplitASRError
from splitasr.netem import EmulatorThread
from splitasr.transport import splitasr_pb2 as pb
from splitasr.transport.client import CloudClient

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
FRAME_HEADER = 9
GRPC_PREFIX = 5
FRAME_TYPES = {
    0: "DATA",
    1: "HEADERS",
    2: "PRIORITY",
    3: "RST_STREAM",
    4: "SETTINGS",
    5: "PUSH_PROMISE",
    6: "PING",
    7: "GOAWAY",
    8: "WINDOW_UPDATE",
    9: "CONTINUATION",
}
TARGET_BYTES = 64


@dataclass
class Overhead:
    """Bytes per request (means over the measured requests), uplink unless named down.

    ``overhead`` = ``up_per_request - payload_bytes``; ``parts`` splits it (frame headers,
    each header field's HPACK bytes, gRPC prefix, protobuf fields, other frames' bodies);
    ``frames`` counts the frames per request by type.
    """

    label: str
    payload_bytes: int
    message_bytes: int
    requests: int
    up_per_request: float
    down_per_request: float
    reply_message_bytes: int
    overhead: float
    parts: dict[str, float] = field(default_factory=dict)
    frames: dict[str, float] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


class _Recorder:
    """The emulator's tap: uplink bytes per connection, each chunk tagged with the request
    index that was current when it was delivered (-1: warm-up)."""

    def __init__(self) -> None:
        self.label = -1
        self.lock = threading.Lock()
        self.up: dict[int, list[tuple[int, bytes]]] = collections.defaultdict(list)
        self.down_bytes: collections.Counter[int] = collections.Counter()

    def tap(self, direction: str, conn: int, data: bytes) -> None:
        with self.lock:
            if direction == "up":
                self.up[conn].append((self.label, data))
            else:
                self.down_bytes[self.label] += len(data)

    def totals(self, first: int, last: int) -> tuple[int, int]:
        """Uplink and downlink bytes delivered while a request in ``first..last`` was current."""
        with self.lock:
            up = sum(len(c) for chunks in self.up.values() for lab, c in chunks if first <= lab <= last)
            down = sum(n for lab, n in self.down_bytes.items() if first <= lab <= last)
        return up, down


def measure_overhead(
    address: str,
    request: pb.TranscribeRequest,
    requests: int = 50,
    warmup: int = 5,
    label: str = "",
    timeout_s: float = 60.0,
    client_factory: Callable[[str], CloudClient] | None = None,
) -> Overhead:
    """Send ``request`` ``warmup + requests`` times through a loopback emulator to the
    server at ``address`` (``host:port``) on one channel; returns the uplink bytes per
    measured request and their breakdown (module docstring).

    ``client_factory(address)`` makes the client (default: :class:`CloudClient` with a
    ``timeout_s`` deadline, what the edge sends); pass one to try channel options.
    """
    if requests < 1 or warmup < 1:
        raise SplitASRError("measure_overhead needs at least one warm-up and one measured request")
    host, _, port = address.rpartition(":")
    rec = _Recorder()
    make = client_factory or (lambda a: CloudClient(a, timeout_s=timeout_s))
    with EmulatorThread((host, int(port)), tap=rec.tap) as em:
        with make(f"127.0.0.1:{em.port}") as client:
            # Request i's window runs from its start to the next one's; one more request
            # after the measured ones closes the last window. A frame sent just after a
            # reply (a window update) lands in the next window: in steady state the warm-up
            # hands one in as the last measured request hands one out.
            for i in range(warmup + requests + 1):
                rec.label = i - warmup
                reply = client.call(request, timeout_s)
    up, down = rec.totals(0, requests - 1)
    with rec.lock:
        streams = {conn: list(chunks) for conn, chunks in rec.up.items()}
    parts, frames, headers = _breakdown(streams, first=0, last=requests - 1)
    n = requests
    message = len(request.SerializeToString())
    payload = len(request.payload)
    parts = {k: round(v / n, 2) for k, v in parts.items()}
    data = parts.pop("DATA body", 0.0)
    parts["gRPC message prefix"] = round(data - message, 2)
    parts["protobuf fields"] = message - payload
    return Overhead(
        label=label or f"{request.model}/{request.point}/{request.codec}",
        payload_bytes=payload,
        message_bytes=message,
        requests=n,
        up_per_request=round(up / n, 2),
        down_per_request=round(down / n, 2),
        reply_message_bytes=len(reply.SerializeToString()),
        overhead=round(up / n - payload, 2),
        parts=dict(sorted(parts.items(), key=lambda kv: -kv[1])),
        frames={k: round(v / n, 2) for k, v in sorted(frames.items())},
        headers=headers,
    )


def _breakdown(
    streams: dict[int, list[tuple[int, bytes]]], first: int, last: int
) -> tuple[dict[str, float], dict[str, int], dict[str, str]]:
    """Parse each connection's uplink (preface, then frames) and sum, over the frames that
    began while a request in ``first..last`` was current: bytes per part and frames per
    type; ``headers`` holds the last value seen per field name (for the report)."""
    try:
        import hpack
    except ImportError:
        raise MissingDependencyError("the header breakdown needs hpack (pip install -e '.[dev]')") from None
    parts: dict[str, float] = collections.Counter()
    frames: dict[str, int] = collections.Counter()
    headers: dict[str, str] = {}
    for chunks in streams.values():
        stream = b"".join(c for _, c in chunks)
        starts = list(_cumulative(len(c) for _, c in chunks))
        labels = [lab for lab, _ in chunks]
        decoder = hpack.Decoder()
        pos = len(PREFACE) if stream.startswith(PREFACE) else 0
        while pos + FRAME_HEADER <= len(stream):
            length = int.from_bytes(stream[pos : pos + 3], "big")
            kind = FRAME_TYPES.get(stream[pos + 3], f"type {stream[pos + 3]}")
            body = stream[pos + FRAME_HEADER : pos + FRAME_HEADER + length]
            counted = first <= labels[bisect.bisect_right(starts, pos) - 1] <= last
            if kind in ("HEADERS", "CONTINUATION"):
                flags = stream[pos + 4]
                fields = _header_fields(decoder, _strip_headers_frame(body, flags))
                for name, value, size in fields:
                    headers[name] = value
                    if counted:
                        parts[f"header {name}"] += size
            elif counted:
                parts[f"{kind} body"] += length
            if counted:
                parts["HTTP/2 frame headers"] += FRAME_HEADER
                frames[kind] += 1
            pos += FRAME_HEADER + length
    return dict(parts), dict(frames), headers


def _cumulative(sizes) -> list[int]:
    out, total = [], 0
    for s in sizes:
        out.append(total)
        total += s
    return out


def _strip_headers_frame(body: bytes, flags: int) -> bytes:
    """A HEADERS frame's header block: without padding (0x8) and priority (0x20) fields."""
    pad = body[0] if flags & 0x8 else 0
    start = (1 if flags & 0x8 else 0) + (5 if flags & 0x20 else 0)
    return body[start : len(body) - pad]


def _header_fields(decoder, block: bytes) -> list[tuple[str, str, int]]:
    """``(name, value, encoded bytes)`` per representation of an HPACK block (RFC 7541 §6),
    decoded one representation at a time so each one's size is known."""
    out = []
    pos = 0
    while pos < len(block):
        end = _representation_end(block, pos)
        decoded = decoder.decode(block[pos:end], raw=False)
        if decoded:
            name, value = decoded[0]
            out.append((name, value, end - pos))
        else:  # a dynamic table size update
            out.append(("(table size update)", "", end - pos))
        pos = end
    return out


def _representation_end(block: bytes, pos: int) -> int:
    first = block[pos]
    if first & 0x80:  # indexed field
        return _int_end(block, pos, 7)[1]
    if first & 0x40:  # literal, incremental indexing
        index, pos = _int_end(block, pos, 6)
    elif first & 0x20:  # table size update
        return _int_end(block, pos, 5)[1]
    else:  # literal without indexing / never indexed
        index, pos = _int_end(block, pos, 4)
    if index == 0:
        pos = _string_end(block, pos)
    return _string_end(block, pos)


def _int_end(block: bytes, pos: int, prefix: int) -> tuple[int, int]:
    mask = (1 << prefix) - 1
    value = block[pos] & mask
    pos += 1
    if value < mask:
        return value, pos
    shift = 0
    while True:
        b = block[pos]
        pos += 1
        value += (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            return value, pos


def _string_end(block: bytes, pos: int) -> int:
    length, pos = _int_end(block, pos, 7)
    return pos + length


SUMMARY_COLUMNS = [
    ("label", "request", ""),
    ("payload_bytes", "payload B", "d"),
    ("up_per_request", "up B/request", ".1f"),
    ("overhead", "overhead B", ".1f"),
    ("protobuf", "protobuf fields", ".1f"),
    ("frame_headers", "HTTP/2 frame headers", ".1f"),
    ("hpack", "HPACK headers", ".1f"),
    ("prefix", "gRPC prefix", ".1f"),
    ("flow", "WINDOW_UPDATE + PING bodies", ".1f"),
    ("down_per_request", "down B/request", ".1f"),
]


def summary_row(r: Overhead) -> dict:
    """One table row: the overhead in the groups the docs discuss."""
    parts = r.parts
    return {
        **{k: getattr(r, k) for k in ("label", "payload_bytes", "up_per_request", "overhead")},
        "protobuf": parts.get("protobuf fields", 0.0),
        "frame_headers": parts.get("HTTP/2 frame headers", 0.0),
        "hpack": sum(v for k, v in parts.items() if k.startswith("header ")),
        "prefix": parts.get("gRPC message prefix", 0.0),
        "flow": sum(v for k, v in parts.items() if k.endswith(" body")),
        "down_per_request": r.down_per_request,
    }


def run_overhead_bench(
    configs: Sequence[str],
    out: str | Path,
    requests: int = 50,
    warmup: int = 5,
    beam: int | None = None,
    audio: str | None = None,
    command: str = "",
) -> list[Overhead]:
    """``splitasr bench overhead``: for each ``MODEL/POINT/CODEC`` in ``configs``, a real
    payload (``audio``, or a sentence synthesised with the corpus voice) sent to an
    in-process server through the emulator; writes results.json and table.md to ``out``."""
    import torch

    from splitasr.audio import load_audio
    from splitasr.bench.report import machine_description, markdown_table, write_results
    from splitasr.model.registry import load_model
    from splitasr.pipeline import Cloud, Edge
    from splitasr.transport.server import ServerThread

    parsed = [_parse_config(c) for c in configs]
    models = {name: load_model(name) for name in dict.fromkeys(m for m, _, _ in parsed)}
    if audio:
        wave = torch.from_numpy(load_audio(audio))
    else:
        from splitasr.corpus.tts import Speaker, render

        wave = torch.from_numpy(render(SENTENCE, Speaker("espeak-ng", "en-us", "m3", rate=160)))
    results = []
    with ServerThread({name: Cloud(m) for name, m in models.items()}) as server:
        maker = CloudClient("127.0.0.1:1")  # only builds requests; never connects
        for name, point, codec in parsed:
            payload = Edge(models[name]).encode(wave, point, codec).payload
            request = maker.request(payload, name, point, codec, beam)
            results.append(
                measure_overhead(f"127.0.0.1:{server.port}", request, requests=requests, warmup=warmup)
            )
        maker.close()
    rows = [summary_row(r) for r in results]
    table = markdown_table(rows, SUMMARY_COLUMNS)
    details = [
        f"\n{r.label}: frames per request "
        + ", ".join(f"{k} {v:g}" for k, v in r.frames.items())
        + "; "
        + ", ".join(f"{k} {v:g}" for k, v in r.parts.items())
        for r in results
    ]
    payload = {
        "machine": machine_description(),
        "audio_seconds": round(len(wave) / 16000, 3),
        "beam": beam,
        "results": [r.to_dict() for r in results],
    }
    write_results(Path(out), payload, table + "\n" + "\n".join(details), command)
    return results


SENTENCE = "the sun is bright today"


def _parse_config(text: str) -> tuple[str, str, str]:
    parts = text.split("/")
    if len(parts) != 3 or not all(parts):
        raise SplitASRError(f"{text!r}: expected MODEL/POINT/CODEC, e.g. ds2/proj/deepcod+ans")
    return parts[0], parts[1], parts[2]


__all__ = ["Overhead", "measure_overhead", "run_overhead_bench", "summary_row"]
