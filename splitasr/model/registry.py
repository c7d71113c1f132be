"""Every recogniser by name: ``load_model("whisper-tiny.en")``, ``available_models()``.

One table from name to loader (as openai/whisper's ``_MODELS``), one default: the model
the CLI, the Python API and the README use unless told otherwise. Whisper tiny.en is the
default because it has the lower WER on real human speech that neither model trained on
(FSDD speaker lucas; docs/whisper.md); ``whisper-tiny.en-dyn`` is the same model with an
encoder fine-tuned to run on the audio frames only (20x cheaper, a little less accurate);
``ds2`` is the papers' DeepSpeech2-style model.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from splitasr.errors import CheckpointError, ConfigError

if TYPE_CHECKING:  # the names import without torch (the edge install's CLI lists them)
    from splitasr.model.stages import SplitModel

DEFAULT_MODEL = "whisper-tiny.en"
DECODER_PRECISIONS = ("float32", "float16", "int8")  # Whisper's text decoder (docs/whisper.md)


def _ds2(decoder_precision: str | None) -> SplitModel:
    from splitasr.model.checkpoint import DEFAULT_CHECKPOINT, load_checkpoint

    _float_only("ds2", decoder_precision)
    return load_checkpoint(DEFAULT_CHECKPOINT)


def _whisper_tiny_en(decoder_precision: str | None) -> SplitModel:
    from splitasr.model.whisper import load_whisper

    return load_whisper(decoder_precision=decoder_precision or "float16")


def _whisper_tiny_en_dyn(decoder_precision: str | None) -> SplitModel:
    from splitasr.model.whisper.weights import load_whisper_dyn

    return load_whisper_dyn(decoder_precision=decoder_precision or "float16")


def _float_only(name: str, decoder_precision: str | None) -> None:
    if decoder_precision not in (None, "float32"):
        raise ConfigError(f"{name} has no {decoder_precision} decoder (only Whisper models do)")


_MODELS: dict[str, Callable[[str | None], SplitModel]] = {
    "whisper-tiny.en": _whisper_tiny_en,
    "whisper-tiny.en-dyn": _whisper_tiny_en_dyn,
    "ds2": _ds2,
}


def has_text_decoder(name: str) -> bool:
    """Whether the named model has a text decoder whose precision can be chosen (Whisper's)."""
    return name in ("whisper-tiny.en", "whisper-tiny.en-dyn")


def available_models() -> list[str]:
    """The names :func:`load_model` knows, the default first."""
    return [DEFAULT_MODEL, *(name for name in _MODELS if name != DEFAULT_MODEL)]


def load_model(name_or_path: str | Path | None = None, *, decoder_precision: str | None = None) -> SplitModel:
    """A model by name (see :func:`available_models`; ``None``: :data:`DEFAULT_MODEL`) or a
    DS2 checkpoint file written by ``splitasr train``, in eval mode on the CPU, with every
    cache filled: safe to share between threads.

    ``decoder_precision`` (Whisper models): the text decoder's Linear layers in
    ``"float16"`` (``None``: the default; the checkpoint's own weights), ``"float32"`` or
    ``"int8"`` (docs/whisper.md).

    Raises:
        CheckpointError: an unknown name, or a file that is missing or not a checkpoint.
        ConfigError: an unknown precision, or int8 for a model without a text decoder.
    """
    name = DEFAULT_MODEL if name_or_path is None else str(name_or_path)
    if name in _MODELS:
        return _MODELS[name](decoder_precision)
    path = Path(name)
    if path.suffix == ".safetensors" or path.is_file():
        from splitasr.model.checkpoint import load_checkpoint

        _float_only(name, decoder_precision)
        return load_checkpoint(path)
    raise CheckpointError(
        f"unknown model {name!r}; choose from {', '.join(available_models())} or a checkpoint file"
    )
