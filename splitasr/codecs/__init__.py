"""Codecs for what crosses a split point: ``get_codec("q8+ans").compress(x, lens, point=i)``,
``read_header(payload)`` to route a payload, ``codec.decompress(payload, DecodeLimits(...))``.

Importing this package registers every built-in codec part.
"""

import splitasr.codecs.audio_codecs  # noqa: F401  (registers pcm16, flac, opus6..opus24)
import splitasr.codecs.baselines  # noqa: F401  (registers intp2/4/8, cs4/8, dct25/50/75)
from splitasr.codecs import (
    basic,  # noqa: F401  (registers f32, pack, zstd)
    entropy,  # noqa: F401  (registers huffman, ans)
    learned,  # noqa: F401  (registers ae, deepcod, bnf)
    quantize,  # noqa: F401  (registers f16, q8, q6, q4, q2)
    rd,  # noqa: F401  (registers lrd)
)
from splitasr.codecs.base import (
    Codec,
    CodecError,
    DecodeLimits,
    Header,
    available_codecs,
    get_codec,
    read_header,
    register_coder,
    register_transform,
)

__all__ = [
    "Codec",
    "CodecError",
    "DecodeLimits",
    "Header",
    "available_codecs",
    "get_codec",
    "read_header",
    "register_coder",
    "register_transform",
]
