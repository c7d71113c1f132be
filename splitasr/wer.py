"""Word and character error rates (jiwer) on normalised text, the same for every model."""

from __future__ import annotations

from splitasr.text import normalize


def error_rates(refs: list[str], hyps: list[str]) -> dict:
    """Corpus-level WER and CER with edit counts.

    Both sides go through :func:`splitasr.text.normalize` first. References that normalise
    to nothing are skipped (they have no words to get wrong).

    Returns:
        ``{wer, cer, substitutions, deletions, insertions, hits, words, utterances}``.
    """
    import jiwer

    pairs = [(normalize(r), normalize(h)) for r, h in zip(refs, hyps, strict=True)]
    pairs = [(r, h) for r, h in pairs if r]
    if not pairs:
        return {
            "wer": float("nan"),
            "cer": float("nan"),
            "substitutions": 0,
            "deletions": 0,
            "insertions": 0,
            "hits": 0,
            "words": 0,
            "utterances": 0,
        }
    r, h = [p[0] for p in pairs], [p[1] for p in pairs]
    words = jiwer.process_words(r, h)
    chars = jiwer.process_characters(r, h)
    return {
        "wer": words.wer,
        "cer": chars.cer,
        "substitutions": words.substitutions,
        "deletions": words.deletions,
        "insertions": words.insertions,
        "hits": words.hits,
        "words": words.hits + words.substitutions + words.deletions,
        "utterances": len(pairs),
    }
