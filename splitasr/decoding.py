"""CTC decoders behind one small interface: ``decoder.decode(logits, length) -> text``.

* :class:`GreedyDecoder`: best class per frame, repeats collapsed, blanks dropped.
* :class:`BeamSearchDecoder`: pyctcdecode's beam search, optionally with a word n-gram
  language model (an ARPA file that kenlm loads) and a unigram list.
"""

from __future__ import annotations

import contextlib
import functools
import os
import sys
from pathlib import Path

import numpy as np
import torch

from splitasr.errors import ConfigError, MissingDependencyError
from splitasr.text import CharTokenizer


@contextlib.contextmanager
def _quiet_stderr():
    """Silence C-level writes to stderr (file descriptor 2) for a moment."""
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def _kenlm_reason(exc: Exception) -> str:
    """The useful part of kenlm's message, on one line.

    kenlm says ``Cannot read model '<path>' (<source:line> in <function> threw <Kind>. <why>)``.
    """
    if isinstance(exc, UnicodeDecodeError):
        return "binary data that is not a kenlm model"
    text = " ".join(str(exc).split())
    if " threw " in text:
        text = text.split(" threw ", 1)[1]
    elif text.startswith("Cannot read model ") and " (" in text:
        text = text.split(" (", 1)[1]
    return text.removesuffix(")").strip() or type(exc).__name__


class Decoder:
    """Turns per-frame scores ``(T, V)`` into text."""

    def __init__(self, tokenizer: CharTokenizer = CharTokenizer()):
        self.tokenizer = tokenizer

    def decode(self, logits: torch.Tensor, length: int | None = None) -> str:
        raise NotImplementedError

    def decode_batch(self, logits: torch.Tensor, lengths: torch.Tensor) -> list[str]:
        """``logits (N, T, V)``, ``lengths (N,)`` -> N strings, the texts :meth:`decode`
        gives each row within its length. This default decodes row by row; a decoder that
        can share work across rows overrides it (Whisper's steps all rows together), and
        ``Cloud.transcribe_batch`` calls it once per decoder of a batch."""
        return [self.decode(logits[i], int(lengths[i])) for i in range(logits.shape[0])]


class GreedyDecoder(Decoder):
    """Best path: argmax per frame, collapse repeats, drop blanks."""

    def decode(self, logits: torch.Tensor, length: int | None = None) -> str:
        ids = logits[:length].argmax(dim=-1).tolist()
        out, prev = [], None
        for i in ids:
            if i != prev and i != self.tokenizer.blank:
                out.append(i)
            prev = i
        return " ".join(self.tokenizer.decode(out).split())


class BeamSearchDecoder(Decoder):
    """pyctcdecode beam search; with ``arpa`` (a word n-gram LM) it rescoring words.

    Args:
        beam_width: hypotheses kept per frame.
        arpa: optional ARPA language model path (loaded by kenlm).
        unigrams: optional word list for the LM's vocabulary.
        alpha, beta: LM weight and word insertion bonus.
    """

    def __init__(
        self,
        tokenizer: CharTokenizer = CharTokenizer(),
        beam_width: int = 32,
        arpa: str | Path | None = None,
        unigrams: list[str] | None = None,
        alpha: float = 0.5,
        beta: float = 1.0,
    ):
        super().__init__(tokenizer)
        labels = ("", " ", "'", *"abcdefghijklmnopqrstuvwxyz")
        assert len(labels) == len(tokenizer)
        self.beam_width = beam_width
        if arpa and not Path(arpa).is_file():
            raise ConfigError(f"{arpa}: no such language model file")
        # The beam width is a decode-time argument: decoders that differ only in it share
        # one pyctcdecode decoder and its language model (loading one costs ~1 s and ~16 MB,
        # and a server builds a decoder per beam width its clients ask for).
        key = (str(Path(arpa).resolve()), Path(arpa).stat().st_mtime_ns) if arpa else None
        self._decoder = _ctc_decoder(labels, key, tuple(unigrams) if unigrams else None, alpha, beta)

    def decode(self, logits: torch.Tensor, length: int | None = None) -> str:
        log_probs = torch.log_softmax(logits[:length].float(), dim=-1).numpy().astype(np.float32)
        text = self._decoder.decode(log_probs, beam_width=self.beam_width)
        return " ".join(text.split())


@functools.lru_cache(maxsize=8)
def _ctc_decoder(
    labels: tuple[str, ...],
    arpa: tuple[str, int] | None,
    unigrams: tuple[str, ...] | None,
    alpha: float,
    beta: float,
):
    """One pyctcdecode decoder per (labels, LM file and its mtime, unigrams, alpha, beta),
    built once and shared (it is only read while decoding)."""
    try:
        from pyctcdecode import build_ctcdecoder
    except ImportError:  # pragma: no cover - a pinned dependency
        raise MissingDependencyError("beam search needs pyctcdecode: pip install pyctcdecode") from None
    path = arpa[0] if arpa else None
    try:
        with _quiet_stderr():  # kenlm prints loading progress bars on file descriptor 2
            return build_ctcdecoder(
                list(labels),
                kenlm_model_path=path,
                unigrams=list(unigrams) if unigrams else None,
                alpha=alpha,
                beta=beta,
            )
    except (OSError, ValueError) as exc:  # kenlm: OSError; UnicodeDecodeError on binary junk
        if not path:
            raise
        raise ConfigError(
            f"{path}: not a readable ARPA or kenlm binary language model ({_kenlm_reason(exc)})"
        ) from None
