"""Serving backends for the cloud tier beyond the embedded server (docs/serving.md).

:mod:`splitasr.serving.ray` runs the tails as a Ray Serve deployment behind the same gRPC
ingress (``splitasr serve --backend ray``). Ray is an optional extra: import that module
through :func:`load_ray_backend`, which says how to install it when it is missing.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from splitasr.errors import MissingDependencyError

RAY_EXTRA = "pip install 'splitasr[cloud,ray]'"


def load_ray_backend() -> ModuleType:
    """:mod:`splitasr.serving.ray`, or a one-line :class:`MissingDependencyError` when Ray
    Serve is not installed."""
    try:
        importlib.import_module("ray.serve")
    except ImportError as exc:
        raise MissingDependencyError(
            f"--backend ray needs Ray Serve ({exc.name or 'ray'} is missing): {RAY_EXTRA}"
        ) from None
    return importlib.import_module("splitasr.serving.ray")


__all__ = ["RAY_EXTRA", "load_ray_backend"]
