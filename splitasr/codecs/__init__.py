"""Codecs for what crosses a split point: ``get_codec("q8+ans").compress(x, lens)``.

Importing this package registers every built-in codec part.
"""

from splitasr.codecs import basic  # noqa: F401  (registers f32, pack, zstd)
from splitasr.codecs.base import (
    Codec,
    CodecError,
    available_codecs,
    get_codec,
    register_coder,
    register_transform,
)

__all__ = ["Codec", "CodecError", "available_codecs", "get_codec", "register_coder", "register_transform"]
