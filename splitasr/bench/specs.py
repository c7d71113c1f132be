"""Model specs of the benchmarks' ``--models``: ``NAME`` or ``NAME:PRECISION``.

``whisper-tiny.en,whisper-tiny.en-dyn:int8`` names two models to measure side by side:
the exact Whisper with its default text decoder and the trimmed-encoder one with int8
decoder weights. The precision is checked here (before anything is timed); whether the
model has such a decoder is :func:`~splitasr.model.registry.load_model`'s to say (ds2
has none: a ConfigError), so :func:`load_specs` loads every model before a bench starts.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from splitasr.errors import ConfigError
from splitasr.model.registry import DECODER_PRECISIONS

if TYPE_CHECKING:
    from splitasr.model.stages import SplitModel


@dataclass(frozen=True)
class ModelSpec:
    """One model to benchmark: a registry name or checkpoint path, and the text decoder's
    precision (``None``: the model's default)."""

    name: str
    precision: str | None = None

    @property
    def label(self) -> str:
        """The spec as written: ``name`` or ``name:precision``."""
        return self.name if self.precision is None else f"{self.name}:{self.precision}"

    def load(self) -> SplitModel:
        """The model (raises CheckpointError for an unknown name, ConfigError for a
        precision the model lacks)."""
        from splitasr.model.registry import load_model

        return load_model(self.name, decoder_precision=self.precision)


def parse_model_specs(text: str) -> list[ModelSpec]:
    """``"a,b:int8"`` -> ``[ModelSpec("a"), ModelSpec("b", "int8")]``.

    Raises:
        ConfigError: an empty list or item, or a precision other than float32/float16/int8.
    """
    specs = []
    for item in text.split(","):
        item = item.strip()
        name, sep, precision = item.rpartition(":") if ":" in item else (item, "", "")
        if not name:
            raise ConfigError(
                f"--models {text!r}: empty model name (give NAME or NAME:PRECISION, comma-separated)"
            )
        if sep and precision not in DECODER_PRECISIONS:
            raise ConfigError(
                f"--models: {item!r}: unknown precision {precision!r}; "
                f"choose from {', '.join(DECODER_PRECISIONS)}"
            )
        specs.append(ModelSpec(name, precision or None))
    return specs


def load_specs(specs: list[ModelSpec]) -> list[tuple[ModelSpec, SplitModel]]:
    """Every spec's model, loaded up front so that a bad one fails before any timing."""
    return [(spec, spec.load()) for spec in specs]


def decoder_precision(model: SplitModel) -> str:
    """The precision of the model's text decoder; ``"float32"`` for a model without one
    (ds2: float32 throughout)."""
    text = getattr(model, "text_decoder", None)
    return text.precision if text is not None else "float32"
