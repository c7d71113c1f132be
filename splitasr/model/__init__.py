"""Recognisers as ordered, named stages with a split point at every boundary."""

from splitasr.model.registry import DEFAULT_MODEL, available_models, load_model
from splitasr.model.stages import AUDIO, SplitModel, SplitPointInfo

__all__ = ["AUDIO", "DEFAULT_MODEL", "SplitModel", "SplitPointInfo", "available_models", "load_model"]
