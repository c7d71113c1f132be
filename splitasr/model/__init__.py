"""Recognisers as ordered, named stages with a split point at every boundary.

The registry's names (``available_models``, ``DEFAULT_MODEL``) import without torch, so
that the edge install's CLI can list them; ``AUDIO``, ``SplitModel`` and ``SplitPointInfo``
come from :mod:`splitasr.model.stages` (torch) when first asked for.
"""

from splitasr.model.registry import DEFAULT_MODEL, available_models, load_model

_STAGES = ("AUDIO", "SplitModel", "SplitPointInfo")


def __getattr__(name: str):
    if name in _STAGES:
        from splitasr.model import stages

        return getattr(stages, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["AUDIO", "DEFAULT_MODEL", "SplitModel", "SplitPointInfo", "available_models", "load_model"]
