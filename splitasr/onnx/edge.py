"""The device side of the split on ONNX Runtime, without torch.

``OnnxEdge("ds2").encode(wave, "proj", "deepcod+ans")`` returns the same
:class:`~splitasr.encoded.Encoded` record, with a payload in the same format, as
:meth:`splitasr.pipeline.Edge.encode` with the torch model, so an unchanged server
(:class:`splitasr.pipeline.Cloud`) decodes it. What runs:

1. the front end in numpy (:mod:`splitasr.onnx.frontend`): DS2's log-mel, Whisper's
   log-mel with its utterance-wide ``max - 8`` floor;
2. the head graph from the features to the split point (``<model>.<point>[.int8].onnx``,
   written by :func:`splitasr.onnx.export.export_onnx`); Whisper's runs once per 30-s
   window, each window zero-padded to the frames its stem convolutions read;
3. the codec (:mod:`splitasr.codecs`, torch-free): a learned codec's device encoder runs
   on its ONNX graph (:meth:`splitasr.codecs.learned.Learned.with_encoder`), then the
   same rounding, entropy coder and payload header as the torch edge.

Imports numpy, onnxruntime and :mod:`splitasr.codecs` / :mod:`splitasr.audio`; never torch.
Files come from ``onnx_dir`` (a folder with ``manifest.json``) or, by default, the files
shipped in the package (``splitasr/assets/onnx/<model>/``: the default split point of
each model); every file's SHA-256 is checked against the manifest when it is loaded.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from splitasr.codecs import Codec, CodecError, get_codec
from splitasr.codecs.learned import Learned
from splitasr.codecs.rd import Lrd
from splitasr.codecs.state import shipped_state_dir
from splitasr.encoded import Encoded
from splitasr.errors import SplitASRError
from splitasr.onnx import frontend

MANIFEST = "manifest.json"
MANIFEST_FORMAT = 1
SHIPPED_ROOT = Path(__file__).resolve().parent.parent / "assets" / "onnx"
PRECISIONS = ("int8", "float")
# Models whose shipped folder lends its files to another (the dyn model's front end and
# stem are whisper-tiny.en's, frozen): a point missing from a model's own manifest is
# looked up in its base's.
BASES = {"whisper-tiny.en-dyn": "whisper-tiny.en"}


class OnnxEdgeError(SplitASRError):
    """The ONNX edge cannot serve a request: no files for the model or point, a file that
    does not match its manifest, or a bad waveform."""


def shipped_dir(model: str) -> Path:
    """Where the package ships ``model``'s ONNX files: ``splitasr/assets/onnx/<model>/``."""
    return SHIPPED_ROOT / model


class _Bundle:
    """One folder of exported files: its manifest, and sessions opened on demand."""

    def __init__(self, folder: Path, threads: int):
        path = folder / MANIFEST
        if not path.is_file():
            raise OnnxEdgeError(f"{folder}: no {MANIFEST} (write one with `splitasr export-onnx`)")
        try:
            self.manifest = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise OnnxEdgeError(f"{path}: not a readable manifest ({exc})") from None
        if self.manifest.get("format") != MANIFEST_FORMAT:
            raise OnnxEdgeError(f"{path}: manifest format {self.manifest.get('format')!r}, expected 1")
        self.folder, self.threads = folder, threads
        self._sessions: dict[str, Any] = {}
        self._arrays: dict[str, np.ndarray] = {}
        self._lock = threading.Lock()

    def _checked_bytes(self, name: str) -> bytes:
        entry = self.manifest["files"].get(name)
        path = self.folder / name
        if entry is None or not path.is_file():
            raise OnnxEdgeError(f"{self.folder}: {name} is missing")
        data = path.read_bytes()
        if hashlib.sha256(data).hexdigest() != entry["sha256"]:
            raise OnnxEdgeError(f"{path}: SHA-256 does not match the manifest (a changed or partial file)")
        return data

    def session(self, name: str):
        """An ONNX Runtime session of file ``name`` (one thread per op, full graph
        optimisation), opened once."""
        import onnxruntime as ort

        with self._lock:
            if name not in self._sessions:
                opts = ort.SessionOptions()
                opts.intra_op_num_threads = self.threads
                opts.inter_op_num_threads = 1
                opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
                opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
                self._sessions[name] = ort.InferenceSession(
                    self._checked_bytes(name), opts, providers=["CPUExecutionProvider"]
                )
            return self._sessions[name]

    def array(self, name: str) -> np.ndarray:
        """A ``.npy`` array of the folder (the mel filter banks), loaded once, no pickle."""
        import io

        with self._lock:
            if name not in self._arrays:
                self._arrays[name] = np.load(io.BytesIO(self._checked_bytes(name)), allow_pickle=False)
            return self._arrays[name]


def _run(session, x: np.ndarray) -> np.ndarray:
    """One graph on one input ``(1, T, C)`` float32 -> its one output."""
    name = session.get_inputs()[0].name
    return session.run(None, {name: np.ascontiguousarray(x, np.float32)})[0]


class OnnxEdge:
    """The device side on ONNX Runtime: waveform -> front end -> head -> codec -> payload.

    Args:
        model: the model's registry name (``whisper-tiny.en``, ``whisper-tiny.en-dyn``, ``ds2``).
        onnx_dir: a folder written by ``splitasr export-onnx`` (default: the files shipped
            for ``model``).
        precision: ``"int8"`` (quantised heads) or ``"float"``; codec encoders are float.
        threads: ONNX Runtime threads per graph (1: the emulated edge).
        state_dirs: codec state per split point (default: the shipped state of the
            model's codec home there), as :class:`splitasr.pipeline.CodecBank` takes it.

    Thread-safe: sessions and codecs are built under a lock and then only read.

    Raises:
        OnnxEdgeError: no manifest for the model, or one for another model.
    """

    def __init__(
        self,
        model: str,
        onnx_dir: str | Path | None = None,
        precision: str = "int8",
        threads: int = 1,
        state_dirs: dict[str, str | Path] | None = None,
    ):
        if precision not in PRECISIONS:
            raise OnnxEdgeError(f"precision {precision!r}: choose from {', '.join(PRECISIONS)}")
        folder = Path(onnx_dir) if onnx_dir is not None else shipped_dir(model)
        if onnx_dir is None and not (folder / MANIFEST).is_file() and model in BASES:
            folder = shipped_dir(BASES[model])
        if not folder.is_dir():
            raise OnnxEdgeError(f"no ONNX files for model {model!r} (looked in {folder})")
        self.bundle = _Bundle(folder, threads)
        self.base: _Bundle | None = None
        if onnx_dir is None and model in BASES and folder != shipped_dir(BASES[model]):
            base = shipped_dir(BASES[model])
            self.base = _Bundle(base, threads) if (base / MANIFEST).is_file() else None
        m = self.bundle.manifest
        if m["model"] != model and BASES.get(model) != m["model"]:
            raise OnnxEdgeError(f"{folder} holds files for {m['model']!r}, not {model!r}")
        self.name = model
        self.precision, self.threads = precision, threads
        self.manifest = m
        self.state_dirs = dict(state_dirs or {})
        self._codecs: dict[tuple[str, str], Codec] = {}
        self._lock = threading.Lock()

    @property
    def split_points(self) -> list[str]:
        """Every split point of the model, device-first (the payload names its index)."""
        return list(self.manifest["split_points"])

    @property
    def available_points(self) -> list[str]:
        """The points this edge has files for: ``audio``, ``features`` and every exported head."""
        heads = set(self.manifest["heads"]) | set(self.base.manifest["heads"] if self.base else ())
        return [p for p in self.split_points if p in ("audio", "features") or p in heads]

    def _head_entry(self, point: str) -> tuple[_Bundle, dict]:
        for bundle in (self.bundle, self.base):
            if bundle is not None and point in bundle.manifest["heads"]:
                return bundle, bundle.manifest["heads"][point]
        raise OnnxEdgeError(
            f"no ONNX head for {self.name} at {point!r} in {self.bundle.folder}; "
            f"export it with `splitasr export-onnx --model {self.name} --points {point}`"
        )

    def _check(self, wave: np.ndarray, point: str) -> np.ndarray:
        if point not in self.split_points:
            raise OnnxEdgeError(f"unknown split point {point!r}; choose from {', '.join(self.split_points)}")
        wave = np.asarray(wave)
        if wave.ndim != 1 or wave.shape[0] == 0:
            raise OnnxEdgeError(f"a waveform is (S,) with S >= 1, got shape {wave.shape}")
        wave = wave.astype(np.float32, copy=False)
        if not np.isfinite(wave).all():
            raise OnnxEdgeError("waveform contains NaN or infinity")
        return wave

    # ------------------------------------------------------------------ head

    def features(self, wave: np.ndarray) -> np.ndarray:
        """The activation at ``features``: ``(1, T, 80)`` float32 (Whisper: the frames that
        hold audio, at least one; DS2: ``S // 160 + 1``)."""
        mel = self.bundle.array(self.manifest["frontend"]["mel"])
        if self.manifest["kind"] == "whisper":
            feats = frontend.whisper_log_mel(wave, mel)
            if feats.shape[0] == 0:  # under one hop of audio: one frame of Whisper's padding
                feats = np.zeros((1, mel.shape[0]), np.float32)
        else:
            feats = frontend.log_mel(wave, mel)
        return feats[None]

    def head(self, wave: np.ndarray, point: str) -> np.ndarray:
        """The activation at ``point`` of one waveform ``(S,)``: ``(1, T, C)`` float32
        (``(1, S, 1)`` at ``audio``), as the torch model's head gives it."""
        wave = self._check(wave, point)
        if point == "audio":
            return wave.reshape(1, -1, 1)
        feats = self.features(wave)
        if point == "features":
            return feats
        bundle, entry = self._head_entry(point)
        session = bundle.session(entry["files"][self.precision])
        if self.manifest["kind"] != "whisper":
            return _run(session, feats)
        return self._whisper_windows(session, feats[0], point)

    def _whisper_windows(self, session, feats: np.ndarray, point: str) -> np.ndarray:
        """Whisper's head past the front end: ``feats (c, 80)`` -> ``(1, J, 384)``, one
        graph run per window (:func:`whisper_windows`)."""
        outs = [_run(session, x) for x in whisper_windows(feats, self.manifest["whisper"], point)]
        return outs[0] if len(outs) == 1 else np.concatenate(outs, axis=1)

    # ------------------------------------------------------------------ codec

    def codec(self, name: str, point: str) -> Codec:
        """The codec ``name`` at ``point`` with the shipped state of the model's codec home;
        a learned codec's device encoder runs on its exported graph."""
        key = (point, name)
        with self._lock:
            if key in self._codecs:
                return self._codecs[key]
        codec = get_codec(name, self.state_dir(point))
        transform = codec.transform
        if isinstance(transform, Learned | Lrd):
            codec = Codec(transform.with_encoder(self._encoder(point, transform)), codec.coder, codec.limits)
        with self._lock:
            return self._codecs.setdefault(key, codec)

    def state_dir(self, point: str) -> Path:
        """Where the codecs at ``point`` take their state from."""
        home = self.manifest["codec_homes"][point]
        return Path(self.state_dirs.get(point) or shipped_state_dir(home, point))

    def _encoder(self, point: str, transform: Learned | Lrd):
        key = f"{point}/{transform.name}"
        for bundle in (self.bundle, self.base):
            if bundle is not None and key in bundle.manifest["codecs"]:
                entry = bundle.manifest["codecs"][key]
                break
        else:
            raise OnnxEdgeError(
                f"no ONNX encoder for {transform.name} at {point!r} of {self.name}; "
                f"export it with `splitasr export-onnx --model {self.name} --points {point} "
                f"--codecs {transform.name}`"
            )
        _check_state(entry, self.state_dir(point), point, transform.name)
        session = bundle.session(entry["files"]["float"])
        qm_mel = bundle.array(bundle.manifest["frontend"]["qm_mel"]) if transform.name == "bnf" else None
        stride = transform.config.stride
        pad = float(entry["pad_value"])

        def encode(x: np.ndarray) -> np.ndarray:
            if qm_mel is not None:  # bnf reads the waveform (1, S, 1): QM codes on the device
                x = frontend.qm_codes(x[0, :, 0], qm_mel)[None]
            t_lat = -(-x.shape[1] // stride)
            z = _run(session, x)[:, :t_lat]
            if z.shape[1] < t_lat:
                z = np.concatenate([z, np.full((1, t_lat - z.shape[1], z.shape[2]), pad, np.float32)], axis=1)
            return z

        return encode

    # ------------------------------------------------------------------ encode

    def encode(self, wave: np.ndarray, point: str, codec: str) -> Encoded:
        """Run the head to ``point`` on ``wave (S,)`` float32 at 16 kHz and compress what
        crosses the split: the payload the torch :class:`~splitasr.pipeline.Edge` makes.

        Raises:
            OnnxEdgeError: unknown point, no files for it, or a bad waveform.
            CodecError: an unknown codec or missing state.
        """
        wave = self._check(wave, point)
        c = self.codec(codec, point)
        t0 = time.perf_counter()
        h = self.head(wave, point)
        t1 = time.perf_counter()
        payload = c.compress(h, None, point=self.split_points.index(point))
        t2 = time.perf_counter()
        return Encoded(payload, point, c.name, int(wave.shape[0]), _ms(t1 - t0), _ms(t2 - t1))


def whisper_windows(feats: np.ndarray, info: dict, point: str) -> list[np.ndarray]:
    """The inputs of Whisper's head graph for the features ``(c, 80)`` of one utterance, one
    per 30-s window: ``(1, 2 J_w + 1, 80)``, the window's frames then zeros. A window of
    ``c_w`` frames gives ``J_w = min(1500, (c_w + 1) // 2 + 1)`` stem frames (1500 for a full
    one); the padded model's head past the stem (``info["trim"]`` false) first pads every
    window to 3000 frames, as Whisper does."""
    size, n_ctx = info["window_frames"], info["n_ctx"]
    pad_full = not info["trim"] and point not in ("features", "stem")
    out = []
    for start in range(0, feats.shape[0], size):
        window = feats[start : start + size]
        c = size if pad_full else window.shape[0]
        j = n_ctx if c >= 2 * n_ctx else min(n_ctx, (c + 1) // 2 + 1)
        padded = np.zeros((1, 2 * j + 1, feats.shape[1]), np.float32)
        padded[0, : window.shape[0]] = window
        out.append(padded)
    return out


def _check_state(entry: dict, folder: Path, point: str, name: str) -> None:
    """Refuse an encoder exported from other codec state than the one in ``folder`` that the
    codec uses (its payloads would not decode on a server holding that state)."""
    for fname, digest in entry.get("state_sha256", {}).items():
        path = folder / fname
        if path.is_file() and hashlib.sha256(path.read_bytes()).hexdigest() != digest:
            raise CodecError(
                f"the ONNX encoder of {name} at {point!r} was exported from other state than {path}; "
                "export it again"
            )


def _ms(seconds: float) -> float:
    return round(1000 * seconds, 3)
