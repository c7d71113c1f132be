"""Export the heads and the learned codecs' device parts to ONNX (the cloud/dev side: torch).

``export_onnx("ds2", out_dir, points=["proj"])`` writes, for every requested split point
past the front end, one graph ``<model>.<point>.onnx`` from the features to the activation
at that point (float32, and ``.int8.onnx`` quantised with :mod:`onnxruntime.quantization`),
for every learned codec with state at that point one graph of its encoder
(``<model>.<point>.<codec>.onnx``), the mel filter banks the numpy front end uses
(:mod:`splitasr.onnx.frontend`; ``mel<M>.npy``), and ``manifest.json`` naming all of them
with their SHA-256. :class:`splitasr.onnx.edge.OnnxEdge` runs them without torch.

Graphs (one utterance, batch 1, the time axis dynamic; opset 17, TorchScript exporter):

* DS2, point ``p``: log-mel ``(1, T, 80)`` -> activation ``(1, T', C)`` (the stages from
  ``conv`` to ``p``; every frame valid, so the length masks are dropped);
* Whisper, point ``p`` (``stem`` or a block): one 30-s window of log-mel, zero-padded by the
  edge to ``2J + 1`` frames for the ``J`` stem frames it yields -> ``(1, J, 384)`` (the two
  stem convolutions as one padded window computes them, then the blocks);
* codec encoders: the transform's input -> the encoder's output before rounding, cut or
  padded to the latent's length by the edge (``pad_value`` in the manifest).

int8: static quantisation (QDQ, weights int8 per channel, activation ranges calibrated on
the shipped sample utterances) of the Conv and MatMul/Gemm nodes
(:func:`quantise_int8`); docs/edge.md says why, with the alternatives measured.
"""

from __future__ import annotations

import hashlib
import io
import json
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from splitasr import audio
from splitasr.codecs import get_codec
from splitasr.codecs.base import CodecError
from splitasr.codecs.learned import Learned
from splitasr.codecs.rd import Lrd
from splitasr.codecs.state import STATE_ROOT, shipped_state_dir
from splitasr.errors import SplitASRError
from splitasr.model.stages import AUDIO, SplitModel

OPSET = 20  # Gelu is an ONNX op from 20: one kernel, also between int8 convolutions
MANIFEST = "manifest.json"
MANIFEST_FORMAT = 1
LEARNED_TRANSFORMS = ("deepcod", "ae", "bnf", "lrd")
SHIPPED_ROOT = Path(__file__).resolve().parent.parent / "assets" / "onnx"


class ExportError(SplitASRError):
    """An export the model or its state cannot give (unknown point, no codec state)."""


# ---------------------------------------------------------------------------- graphs


class Ds2Body(nn.Module):
    """DS2 from the log-mel features ``(1, T, 80)`` to the activation at ``point``."""

    def __init__(self, model: SplitModel, point: str):
        super().__init__()
        names = model.split_points[2 : model.split_points.index(point) + 1]
        self.names = names
        self.stages = nn.ModuleList(model.stages[n] for n in names)

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        # Between convolutions the maps stay (1, C, T', F'): one transpose to (1, T', C * F')
        # where a stage wants frames (the point, or proj), none per residual block.
        x, maps = feats, None
        for name, stage in zip(self.names, self.stages, strict=True):
            if name == "conv":
                x = (x - stage.feat_mean) / stage.feat_std
                maps = torch.relu(stage.norm(stage.conv(x.unsqueeze(1))))  # (1, C, T', F')
                continue
            if name.startswith("res"):
                y = torch.relu(stage.norm1(stage.conv1(maps)))
                maps = torch.relu(stage.norm2(stage.conv2(y)) + maps)
                continue
            if maps is not None:
                x, maps = maps.permute(0, 2, 1, 3).flatten(2), None
            if name == "proj":
                x = F.gelu(stage.norm(stage.linear(x)))
            elif name.startswith("gru"):
                x, _ = stage.gru(stage.norm(x))
            elif name == "classifier":
                x = stage.linear(x)
            else:
                raise ExportError(f"no ONNX graph for DS2 stage {name!r}")
        return maps.permute(0, 2, 1, 3).flatten(2) if maps is not None else x


class WhisperBody(nn.Module):
    """Whisper from one window of log-mel, zero-padded to ``2J + 1`` frames ``(1, 2J+1, 80)``,
    to the ``J`` frames ``(1, J, 384)`` at ``point`` (``stem`` or a block)."""

    def __init__(self, model: SplitModel, point: str):
        super().__init__()
        self.stem = model.stages["stem"]
        names = model.split_points[3 : model.split_points.index(point) + 1]
        self.blocks = nn.ModuleList(model.stages[n] for n in names)

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        s = self.stem
        h = F.gelu(F.conv1d(feats.transpose(1, 2), s.conv1.weight, s.conv1.bias, padding=1))
        h = F.gelu(F.conv1d(h, s.conv2.weight, s.conv2.bias, stride=2, padding=1))  # (1, C, J + 1)
        x = h[..., :-1].transpose(1, 2)
        for block in self.blocks:
            x = block.block(x)
        return x


class LearnedEncoder(nn.Module):
    """The device part of a learned codec, before its latent is cut to length:
    ``(1, T, in_dim)`` -> ``(1, T_enc, latent_dim)`` (bnf: QM codes over 255; lrd: before the gain)."""

    def __init__(self, transform: Learned | Lrd):
        super().__init__()
        self.net = transform.net
        self.kind = "lrd" if isinstance(transform, Lrd) else transform.config.kind

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        net = self.net
        z = (x - net.in_mean) / net.in_std
        if self.kind == "lrd":
            return net.enc2(F.gelu(net.enc1(z.transpose(1, 2)))).transpose(1, 2)
        levels = net.cfg.levels - 1
        if self.kind == "ae":
            return torch.sigmoid(net.enc(z)) * levels
        if self.kind == "deepcod":
            return torch.sigmoid(net.enc(z.transpose(1, 2))).transpose(1, 2) * levels
        z = net.pointwise(net.depthwise(z.transpose(1, 2)))
        return torch.tanh(torch.relu(net.bn(z))).transpose(1, 2) * levels


def pad_value(transform: Learned | Lrd) -> float:
    """What the encoder's latent holds in frames past its convolution's output (the torch
    encoder pads the pre-activation with zeros): ``sigmoid(0) * (levels - 1)`` for ae and
    deepcod, 0 for bnf and lrd."""
    if isinstance(transform, Lrd) or transform.config.kind == "bnf":
        return 0.0
    return 0.5 * (transform.config.levels - 1)


def _onnx_bytes(module: nn.Module, example: torch.Tensor, in_name: str, out_name: str) -> bytes:
    buf = io.BytesIO()
    with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module.eval(),
            (example,),
            buf,
            dynamo=False,
            input_names=[in_name],
            output_names=[out_name],
            dynamic_axes={in_name: {1: "frames"}, out_name: {1: "out_frames"}},
            opset_version=OPSET,
            do_constant_folding=True,
        )
    return buf.getvalue()


CALIBRATION_SAMPLES = Path(__file__).resolve().parent.parent / "assets" / "samples"


def calibration_inputs(model: SplitModel, point: str, wavs: list[Path] | None = None) -> list[np.ndarray]:
    """Inputs of ``model``'s head graph at ``point`` for a few real utterances (default: the
    shipped samples, ``splitasr/assets/samples/*.flac``), through the edge's own front end."""
    from splitasr.onnx import frontend
    from splitasr.onnx.edge import whisper_windows

    wavs = wavs or sorted(CALIBRATION_SAMPLES.glob("*.flac"))
    mel = audio.mel_filters(80).numpy()
    out = []
    for path in wavs:
        wave = audio.load_audio(path)
        if _model_kind(model) == "whisper":
            out += whisper_windows(frontend.whisper_log_mel(wave, mel), _whisper_info(model), point)
        else:
            out.append(frontend.log_mel(wave, mel)[None])
    return out


def quantise_int8(src: Path, dst: Path, inputs: list[np.ndarray], input_name: str = "features") -> None:
    """Static int8 quantisation of ``src`` into ``dst`` (QDQ format, which ONNX Runtime
    fuses into integer kernels: QLinearConv, QLinearMatMul): weights int8 per channel,
    activations uint8 with ranges calibrated (min-max) on ``inputs``. The GRUs stay float."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.items = iter([{input_name: x} for x in inputs])

        def get_next(self):
            return next(self.items, None)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        quantize_static(
            str(src),
            str(dst),
            Reader(),
            quant_format=QuantFormat.QDQ,
            op_types_to_quantize=["Conv", "MatMul", "Gemm"],
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
        )


# ---------------------------------------------------------------------------- manifest


@dataclass(frozen=True)
class ExportReport:
    """What one :func:`export_onnx` call wrote: the manifest's path and the seconds it took."""

    manifest: Path
    seconds: float


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _model_kind(model: SplitModel) -> str:
    return "whisper" if model.name.startswith("whisper") else "ds2"


def head_points(model: SplitModel) -> list[str]:
    """Split points with a head graph: every point past ``features``."""
    return model.split_points[2:]


def export_onnx(
    model: SplitModel | str,
    out_dir: str | Path,
    points: list[str] | None = None,
    codecs: list[str] | None = None,
    int8: bool = True,
    state_dirs: dict[str, str | Path] | None = None,
    calibration: list[Path] | None = None,
) -> ExportReport:
    """Export ``model``'s heads at ``points`` (default: every point) and the device parts
    of the learned codecs ``codecs`` (default: every learned codec) at those of the points
    where they have state (``audio`` and ``features`` included) into ``out_dir``, with
    ``manifest.json``.
    ``calibration``: audio files for the int8 activation ranges (default: the shipped samples).

    Raises:
        ExportError: an unknown point or codec, or a codec named with state at none of the points.
    """
    from splitasr.model.registry import load_model

    t0 = time.perf_counter()
    model = load_model(model) if isinstance(model, str) else model
    kind = _model_kind(model)
    points = list(model.split_points) if points is None else list(points)
    for p in points:
        if p not in model.split_points:
            raise ExportError(
                f"unknown split point {p!r} of {model.name}; choose from {', '.join(model.split_points)}"
            )
    for c in codecs or []:
        if c not in LEARNED_TRANSFORMS:
            raise ExportError(
                f"{c!r} has no device network to export; choose from {', '.join(LEARNED_TRANSFORMS)}"
            )
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    files: dict[str, dict] = {}

    def add(name: str, precision: str, inputs: list[str], outputs: list[str]) -> str:
        path = out / name
        files[name] = {
            "sha256": sha256(path),
            "bytes": path.stat().st_size,
            "precision": precision,
            "inputs": inputs,
            "outputs": outputs,
        }
        return name

    n_mels = 80
    mel_files = {}
    for m in sorted({n_mels, audio.QM_N_MELS}):
        name = f"mel{m}.npy"
        np.save(out / name, audio.mel_filters(m).numpy().astype(np.float32), allow_pickle=False)
        mel_files[m] = add(name, "float32", [], [])

    heads: dict[str, dict] = {}
    for p in points:
        if p in (AUDIO, "features"):
            continue
        body = WhisperBody(model, p) if kind == "whisper" else Ds2Body(model, p)
        example = torch.randn(1, 301 if kind == "whisper" else 300, n_mels)
        base = f"{model.name}.{p}"
        (out / f"{base}.onnx").write_bytes(_onnx_bytes(body, example, "features", "activation"))
        entry = {"float": add(f"{base}.onnx", "float32", ["features"], ["activation"])}
        if int8:
            quantise_int8(
                out / f"{base}.onnx", out / f"{base}.int8.onnx", calibration_inputs(model, p, calibration)
            )
            entry["int8"] = add(f"{base}.int8.onnx", "int8", ["features"], ["activation"])
        heads[p] = {"files": entry}

    codec_entries: dict[str, dict] = {}
    for p in points:
        home = model.codec_home(p)
        state_dir = Path((state_dirs or {}).get(p) or shipped_state_dir(home, p))
        for t in codecs or LEARNED_TRANSFORMS:
            if not (state_dir / f"{t}.safetensors").is_file():
                continue
            try:
                transform = get_codec(t, state_dir).transform
            except CodecError as exc:
                raise ExportError(str(exc)) from None
            enc = LearnedEncoder(transform)
            width = audio.QM_N_MELS if t == "bnf" else transform.config.in_dim
            name = f"{model.name}.{p}.{t}.onnx"
            (out / name).write_bytes(_onnx_bytes(enc, torch.rand(1, 120, width), "input", "latent"))
            codec_entries[f"{p}/{t}"] = {
                "files": {"float": add(name, "float32", ["input"], ["latent"])},
                "pad_value": pad_value(transform),
                "state": _state_ref(state_dir),
                "state_sha256": {f: sha256(state_dir / f) for f in _state_files(state_dir, t)},
            }

    for t in codecs or []:
        if not any(key.endswith(f"/{t}") for key in codec_entries):
            raise ExportError(f"no {t} state at any of the points {', '.join(points)} of {model.name}")
    manifest = {
        "format": MANIFEST_FORMAT,
        "model": model.name,
        "kind": kind,
        "split_points": list(model.split_points),
        "points": [p for p in model.split_points if p in points],
        "codec_homes": {p: model.codec_home(p) for p in model.split_points},
        "sample_rate": model.sample_rate,
        "opset": OPSET,
        "frontend": {
            "n_mels": n_mels,
            "mel": mel_files[n_mels],
            "qm_mel": mel_files[audio.QM_N_MELS],
        },
        "whisper": _whisper_info(model) if kind == "whisper" else None,
        "heads": heads,
        "codecs": codec_entries,
        "files": files,
    }
    path = out / MANIFEST
    path.write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    return ExportReport(path, round(time.perf_counter() - t0, 2))


def _whisper_info(model) -> dict:
    """How the edge windows Whisper: 3000 feature frames per window, 1500 encoder frames;
    ``pad_windows``: whether the head pads every window to full length past the stem (the
    padded model) or keeps the audio frames only (``trim``, the dyn model)."""
    from splitasr.model.whisper.model import WINDOW_FRAMES

    return {
        "window_frames": WINDOW_FRAMES,
        "n_ctx": model.config.n_audio_ctx,
        "trim": bool(model.config.trim),
    }


def _state_ref(state_dir: Path) -> str:
    """The state folder as ``<model>/<point>`` when shipped, else its path."""
    try:
        return str(state_dir.resolve().relative_to(STATE_ROOT.resolve()))
    except ValueError:
        return str(state_dir)


def _state_files(state_dir: Path, transform: str) -> list[str]:
    return sorted(f.name for f in state_dir.glob(f"{transform}*.safetensors"))
