"""Cloud-only baselines at the ``audio`` split point: send the waveform with a standard codec.

The activation is the 16 kHz waveform as ``(N, S, 1)`` float32 in ``[-1, 1]``:

* ``pcm16``: 16-bit PCM, symbols ``(N, S, 1)`` uint16 (offset binary), alphabet 65536;
* ``flac``: FLAC (libsndfile via soundfile, compression level 8, the highest) of the 16-bit PCM;
* ``opus6``, ``opus8``, ``opus10``, ``opus12``, ``opus16``, ``opus24``: Opus (libopus
  through PyAV) at 6 to 24 kbit/s, VBR, 20 ms frames, 16 kHz input; decoded with FFmpeg's
  Opus decoder at 48 kHz, the encoder's pre-skip dropped, resampled to 16 kHz with soxr
  and cut to exactly ``S``.

``flac`` and ``opus*`` carry the codec's bytes as symbols ``(sum(nbytes),)`` uint8 with
``params = {"nbytes": [bytes of item 0, ...]}`` (varints in the header; Opus adds its
pre-skip); the default ``pack`` coder stores them as they are. Opus packets are framed by
a LEB128 length (one byte below 128), not Ogg: about 0.4 kbit/s of framing instead of
Ogg's pages and headers.

Decoding is bounded by the declared sample count ``S``: an item may hold at most
``2 S + 4096`` bytes (more than 16-bit PCM), a FLAC stream must declare exactly ``S``
samples of 16-bit mono at 16 kHz in its STREAMINFO, and an Opus stream's packets
(durations read from their TOC bytes, RFC 6716) must add up to ``S`` plus the pre-skip,
plus at most 120 ms of padding, all checked before anything is decoded.

Measured on a 7.2-s espeak-ng en-us utterance ("The quick brown fox jumps over the lazy
dog. Speech recognition split between the edge and the cloud saves bandwidth."), whole
payload including the header: ``pcm16+pack`` 256.1, ``flac+pack`` 144.2, ``opus6+pack``
6.5, ``opus12+pack`` 12.0, ``opus24+pack`` 21.6 kbit/s (av 18.1.0, libopus in the wheel).
On 4 s of espeak-ng en-us+m3 / +f2 / +klatt ("the quick brown fox jumps over the lazy dog
near the river bank"): flac 142.9 / 163.9 / 124.8, opus6 6.7 / 6.6 / 6.5, opus12 12.1 /
11.9 / 10.9, opus24 22.0 / 23.2 / 17.3 kbit/s: Opus VBR spends less on simpler signals.
"""

from __future__ import annotations

import io

import numpy as np

from splitasr.audio import SAMPLE_RATE, resample
from splitasr.codecs.base import (
    CodecError,
    ParamReader,
    ParamWriter,
    Symbols,
    Transform,
    register_transform,
)
from splitasr.errors import MissingDependencyError

OPUS_RATE = 48000  # FFmpeg's Opus decoders always output 48 kHz
AV_HINT = "the opus codecs need PyAV: pip install av==18.1.0"


# ---------------------------------------------------------------- shared helpers


def _waveforms(x: np.ndarray) -> np.ndarray:
    """``x`` ``(N, S, 1)`` as ``(N, S)`` float32; refuses other channel counts and NaN/inf."""
    if x.ndim != 3 or x.shape[2] != 1:
        raise CodecError(f"audio codecs take waveforms of shape (N, S, 1), got {x.shape}")
    wave = np.asarray(x[:, :, 0], dtype=np.float32)
    if wave.size and not np.isfinite(wave).all():
        raise CodecError("waveform contains NaN or infinity")
    return wave


def to_int16(wave: np.ndarray) -> np.ndarray:
    """Float samples to int16 by ``round(x * 32768)``, clipped; ``k / 32768`` maps to ``k``."""
    return np.clip(np.rint(np.asarray(wave, np.float64) * 32768.0), -32768, 32767).astype(np.int16)


def from_int16(q: np.ndarray) -> np.ndarray:
    return (q.astype(np.float32) / np.float32(32768.0)).astype(np.float32)


def _ns(shape: tuple[int, ...]) -> tuple[int, int]:
    if len(shape) != 3 or shape[2] != 1:
        raise CodecError(f"audio payload shape must be (N, S, 1), got {tuple(shape)}")
    return int(shape[0]), int(shape[1])


def max_item_bytes(num_samples: int) -> int:
    """The most bytes a coded item of ``num_samples`` samples may hold: more than 16-bit
    PCM plus any container overhead, so the symbols stay O(declared output)."""
    return 2 * num_samples + 4096


def _nbytes(params: dict, n: int, num_samples: int) -> list[int]:
    """The per-item byte counts from ``params``, checked: ``n`` counts, each at most
    :func:`max_item_bytes` of ``num_samples``."""
    counts = params.get("nbytes")
    if not isinstance(counts, list) or len(counts) != n:
        raise CodecError("payload parameters lack one byte count per item")
    if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in counts):
        raise CodecError("payload byte counts must be non-negative integers")
    if any(v > max_item_bytes(num_samples) for v in counts):
        raise CodecError(f"an item declares more bytes than {num_samples} samples can take")
    return counts


class _ByteStream(Transform):
    """A transform whose symbols are a standard codec's bytes, one stream per item.

    Symbols ``(sum(nbytes),)`` uint8, alphabet 256; ``params["nbytes"]`` splits them.
    Subclasses implement :meth:`encode_item` (``(S,)`` float32 -> bytes) and
    :meth:`decode_item` (bytes -> ``(S,)`` float32).
    """

    lossless = False
    has_preskip = False  # params carry a pre-skip after the byte counts

    def encode_item(self, wave: np.ndarray) -> bytes:
        raise NotImplementedError

    def check_item(self, data: bytes, num_samples: int, params: dict) -> None:
        """Refuse an item whose stream would decode to more than ``num_samples``, cheaply."""

    def decode_item(self, data: bytes, num_samples: int, params: dict) -> np.ndarray:
        raise NotImplementedError

    def extra_params(self) -> dict:
        return {}

    def check_layout(self, shape, limits):
        _ns(shape)

    def pack_params(self, params, shape):
        w = ParamWriter()
        for v in params["nbytes"]:
            w.varint(v)
        if "preskip" in params:
            w.varint(params["preskip"])
        return w.bytes()

    def unpack_params(self, blob, shape):
        n, s = _ns(shape)
        r = ParamReader(blob, self.name)
        params = {"nbytes": [r.varint(max_item_bytes(s)) for _ in range(n)]}
        if self.has_preskip:
            params["preskip"] = r.varint(OPUS_RATE - 1)
        r.done()
        return params

    def forward(self, x: np.ndarray) -> Symbols:
        waves = _waveforms(x)
        streams = [self.encode_item(w) if w.size else b"" for w in waves]
        data = np.frombuffer(b"".join(streams), np.uint8).copy()
        return Symbols(data, 256, {"nbytes": [len(s) for s in streams], **self.extra_params()})

    def inverse(self, symbols, params, shape):
        n, s = _ns(shape)
        counts = _nbytes(params, n, s)
        raw = np.ascontiguousarray(symbols, dtype=np.uint8).tobytes()
        if len(raw) != sum(counts):
            raise CodecError("symbol count does not match the per-item byte counts")
        items = np.split(np.frombuffer(raw, np.uint8), np.cumsum(counts)[:-1]) if n else []
        items = [item.tobytes() for item in items]
        for i, item in enumerate(items):  # every item checked before any is decoded
            if s and not item:
                raise CodecError(f"item {i} has no bytes for {s} samples")
            if s:
                self.check_item(item, s, params)
        out = np.zeros((n, s, 1), np.float32)
        for i, item in enumerate(items):
            if s:
                out[i, :, 0] = self.decode_item(item, s, params)
        return out

    def symbol_layout(self, params, shape):
        n, s = _ns(shape)
        return (sum(_nbytes(params, n, s)),), 256


# ---------------------------------------------------------------- PCM and FLAC


@register_transform("pcm16", id=16)
class Pcm16(Transform):
    """16-bit PCM: symbols ``(N, S, 1)`` uint16 = int16 sample + 32768, alphabet 65536.

    Lossless up to the 16-bit quantisation (error at most 1/32768, ``x = 1.0`` included).
    """

    lossless = False

    def check_layout(self, shape, limits):
        _ns(shape)

    def forward(self, x: np.ndarray) -> Symbols:
        waves = _waveforms(x)
        codes = (to_int16(waves).astype(np.int32) + 32768).astype(np.uint16)
        return Symbols(codes[:, :, None], 65536)

    def inverse(self, symbols, params, shape):
        _ns(shape)
        if tuple(symbols.shape) != tuple(shape):
            raise CodecError(f"symbols have shape {tuple(symbols.shape)}, expected {tuple(shape)}")
        return from_int16((symbols.astype(np.int32) - 32768).astype(np.int16))

    def symbol_layout(self, params, shape):
        _ns(shape)
        return tuple(int(v) for v in shape), 65536


@register_transform("flac", id=17)
class Flac(_ByteStream):
    """FLAC of the 16-bit PCM (:func:`to_int16`): exact for input already on the 16-bit grid."""

    def encode_item(self, wave: np.ndarray) -> bytes:
        import soundfile as sf

        buf = io.BytesIO()
        sf.write(buf, to_int16(wave), SAMPLE_RATE, format="FLAC", subtype="PCM_16", compression_level=1.0)
        return buf.getvalue()

    def check_item(self, data: bytes, num_samples: int, params: dict) -> None:
        rate, channels, bits, total = flac_streaminfo(data)
        if (rate, channels, bits, total) != (SAMPLE_RATE, 1, 16, num_samples):
            raise CodecError(
                f"FLAC stream declares {total} samples of {bits}-bit audio, {channels} channel(s) at "
                f"{rate} Hz; the payload expects {num_samples} of 16-bit mono at {SAMPLE_RATE} Hz"
            )

    def decode_item(self, data: bytes, num_samples: int, params: dict) -> np.ndarray:
        import soundfile as sf

        try:
            q, rate = sf.read(io.BytesIO(data), frames=num_samples + 1, dtype="int16", always_2d=True)
        except Exception as exc:  # libsndfile raises its own error types
            raise CodecError(f"corrupt FLAC stream ({type(exc).__name__})") from None
        if rate != SAMPLE_RATE or q.shape != (num_samples, 1):
            raise CodecError(f"FLAC stream holds {q.shape[0]} samples at {rate} Hz, expected {num_samples}")
        return from_int16(q[:, 0])


def flac_streaminfo(data: bytes) -> tuple[int, int, int, int]:
    """``(sample rate, channels, bits per sample, total samples)`` from a FLAC stream's
    STREAMINFO block (which libFLAC always writes first), without decoding anything."""
    if len(data) < 42 or data[:4] != b"fLaC" or data[4] & 0x7F != 0 or data[5:8] != b"\x00\x00\x22":
        raise CodecError("corrupt FLAC stream (no STREAMINFO)")
    bits = int.from_bytes(data[18:26], "big")
    return bits >> 44, ((bits >> 41) & 7) + 1, ((bits >> 36) & 31) + 1, bits & ((1 << 36) - 1)


# ---------------------------------------------------------------- Opus


def _import_av():
    try:
        import av
    except ImportError:
        raise MissingDependencyError(AV_HINT) from None
    return av


def frame_packets(packets: list[bytes]) -> bytes:
    """Packets -> ``len | packet | len | packet ...`` with LEB128 lengths."""
    out = bytearray()
    for p in packets:
        n = len(p)
        while n >= 0x80:
            out.append((n & 0x7F) | 0x80)
            n >>= 7
        out.append(n)
        out += p
    return bytes(out)


def unframe_packets(data: bytes) -> list[bytes]:
    """Inverse of :func:`frame_packets`; refuses a length running past the end."""
    packets, pos = [], 0
    while pos < len(data):
        n, shift = 0, 0
        while True:
            if pos >= len(data) or shift > 21:
                raise CodecError("corrupt Opus packet framing")
            b = data[pos]
            pos += 1
            n |= (b & 0x7F) << shift
            shift += 7
            if b < 0x80:
                break
        if pos + n > len(data):
            raise CodecError("Opus packet runs past the end of its stream")
        packets.append(data[pos : pos + n])
        pos += n
    return packets


_SILK_48K = (480, 960, 1920, 2880)  # 10, 20, 40, 60 ms at 48 kHz
_CELT_48K = (120, 240, 480, 960)  # 2.5, 5, 10, 20 ms


def opus_packet_samples(packet: bytes) -> int:
    """Samples at 48 kHz that an Opus packet decodes to, from its TOC byte (RFC 6716, 3.1)."""
    if not packet:
        raise CodecError("empty Opus packet")
    toc = packet[0]
    config, code = toc >> 3, toc & 3
    if config < 12:
        size = _SILK_48K[config % 4]
    elif config < 16:
        size = _SILK_48K[config % 2]  # hybrid: 10 or 20 ms
    else:
        size = _CELT_48K[config % 4]
    if code == 0:
        frames = 1
    elif code in (1, 2):
        frames = 2
    else:
        if len(packet) < 2 or not 1 <= packet[1] & 0x3F:
            raise CodecError("corrupt Opus packet (frame count)")
        frames = packet[1] & 0x3F
    if frames * size > 5760:
        raise CodecError("corrupt Opus packet (over 120 ms)")
    return frames * size


class _Opus(_ByteStream):
    """Opus at ``bitrate`` bit/s; ``params["preskip"]``: encoder delay in 48 kHz samples."""

    bitrate = 12000
    has_preskip = True

    def _encoder(self):
        av = _import_av()
        try:
            ctx = av.CodecContext.create("libopus", "w")
        except Exception as exc:
            raise CodecError(f"this PyAV build has no libopus encoder ({exc})") from None
        ctx.sample_rate = SAMPLE_RATE
        ctx.layout = "mono"
        ctx.format = "flt"
        ctx.bit_rate = self.bitrate
        ctx.open()
        return ctx

    def extra_params(self) -> dict:
        if getattr(self, "_preskip", None) is None:
            extradata = self._encoder().extradata  # OpusHead: pre-skip is the LE uint16 at byte 10
            self._preskip = int.from_bytes(extradata[10:12], "little")
        return {"preskip": self._preskip}

    def encode_item(self, wave: np.ndarray) -> bytes:
        av = _import_av()
        ctx = self._encoder()
        frame = av.AudioFrame.from_ndarray(
            np.ascontiguousarray(wave[None, :], np.float32), format="flt", layout="mono"
        )
        frame.sample_rate, frame.pts = SAMPLE_RATE, 0
        packets = [bytes(p) for p in ctx.encode(frame)] + [bytes(p) for p in ctx.encode(None)]
        return frame_packets(packets)

    def check_item(self, data: bytes, num_samples: int, params: dict) -> None:
        preskip = params.get("preskip")
        if not isinstance(preskip, int) or not 0 <= preskip < OPUS_RATE:
            raise CodecError("Opus payload has no valid pre-skip")
        total = sum(opus_packet_samples(p) for p in unframe_packets(data))
        if not preskip + 3 * num_samples <= total <= preskip + 3 * num_samples + 5760:
            raise CodecError(
                f"Opus stream holds {total / OPUS_RATE:.3f} s, not the {num_samples} samples declared"
            )

    def decode_item(self, data: bytes, num_samples: int, params: dict) -> np.ndarray:
        av = _import_av()
        preskip = params["preskip"]
        packets = unframe_packets(data)
        ctx = None
        for name in ("opus", "libopus"):  # FFmpeg's native decoder is sample-aligned with the input
            try:
                ctx = av.CodecContext.create(name, "r")
                break
            except Exception:
                continue
        if ctx is None:
            raise CodecError("this PyAV build has no Opus decoder")
        ctx.sample_rate, ctx.layout = OPUS_RATE, "mono"
        chunks = []
        try:
            for packet in [*packets, None]:
                for frame in ctx.decode(av.Packet(packet) if packet is not None else None):
                    a = frame.to_ndarray()
                    a = a.astype(np.float32) / 32768 if a.dtype == np.int16 else a.astype(np.float32)
                    chunks.append(a.reshape(-1) if a.shape[0] == 1 else a.mean(axis=0))
        except CodecError:
            raise
        except Exception as exc:  # av.error.InvalidDataError and friends
            raise CodecError(f"corrupt Opus stream ({type(exc).__name__})") from None
        wave48 = np.concatenate(chunks)[preskip:] if chunks else np.zeros(0, np.float32)
        wave = resample(wave48, OPUS_RATE, SAMPLE_RATE) if wave48.size else wave48
        out = np.zeros(num_samples, np.float32)
        out[: min(num_samples, wave.size)] = wave[:num_samples]
        return out


@register_transform("opus6", id=18)
class Opus6(_Opus):
    bitrate = 6000


@register_transform("opus8", id=19)
class Opus8(_Opus):
    bitrate = 8000


@register_transform("opus10", id=20)
class Opus10(_Opus):
    bitrate = 10000


@register_transform("opus12", id=21)
class Opus12(_Opus):
    bitrate = 12000


@register_transform("opus16", id=22)
class Opus16(_Opus):
    bitrate = 16000


@register_transform("opus24", id=23)
class Opus24(_Opus):
    bitrate = 24000
