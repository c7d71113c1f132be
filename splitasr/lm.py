"""A word bigram language model for beam search, written as an ARPA file.

Unigram probabilities mix counts from the training transcripts with wordfreq's frequencies
of the most common English words, so words never said in training still get a fair
prior. Bigrams come from the training transcripts with Witten-Bell smoothing and back off
to the unigrams. kenlm reads the ARPA file (it needs order 2 or more); pyctcdecode uses it
to score words during the search.
"""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path

from splitasr.errors import MissingDependencyError
from splitasr.text import normalize

DEFAULT_LM = Path(__file__).resolve().parent / "assets" / "lm-words.arpa"
TRAIN_TEXT_WEIGHT = 0.3  # share of probability mass from training transcripts


def build_arpa(out: str | Path, manifests: list[Path], top_words: int = 40000) -> int:
    """Write a bigram ARPA LM; returns the number of words in it."""
    try:
        from wordfreq import top_n_list, word_frequency
    except ImportError:
        raise MissingDependencyError("building the LM needs wordfreq: pip install wordfreq") from None
    from splitasr.manifest import read_manifest

    counts: Counter[str] = Counter()
    pairs: Counter[tuple[str, str]] = Counter()
    for m in manifests:
        for utt in read_manifest(m):
            words = ["<s>", *normalize(utt.text).split(), "</s>"]
            counts.update(words[1:-1])
            pairs.update(zip(words[:-1], words[1:], strict=False))
    total = sum(counts.values()) or 1
    uni: dict[str, float] = {}
    for w in top_n_list("en", top_words):
        w = normalize(w)
        if w and " " not in w:
            uni[w] = (1 - TRAIN_TEXT_WEIGHT) * word_frequency(w, "en")
    for w, c in counts.items():
        uni[w] = uni.get(w, 0.0) + TRAIN_TEXT_WEIGHT * c / total
    uni["</s>"] = TRAIN_TEXT_WEIGHT * sum(c for (_, b), c in pairs.items() if b == "</s>") / total
    z = sum(uni.values())
    uni = {w: p / z for w, p in uni.items()}

    history: Counter[str] = Counter()
    followers: dict[str, set[str]] = {}
    for (a, b), c in pairs.items():
        history[a] += c
        followers.setdefault(a, set()).add(b)
    bigram: dict[tuple[str, str], float] = {}
    backoff: dict[str, float] = {}
    for a, n in history.items():
        t = len(followers[a])
        seen_uni = sum(uni.get(b, 0.0) for b in followers[a])
        for b in followers[a]:
            bigram[(a, b)] = pairs[(a, b)] / (n + t)
        backoff[a] = (t / (n + t)) / max(1.0 - seen_uni, 1e-6)

    def lg(p: float) -> str:
        return f"{math.log10(max(p, 1e-99)):.6f}"

    words = sorted(uni)
    lines = ["\\data\\", f"ngram 1={len(words) + 2}", f"ngram 2={len(bigram)}", "", "\\1-grams:"]
    lines.append(f"-99.0\t<s>\t{lg(backoff.get('<s>', 1.0))}")
    lines.append(f"{lg(1e-7)}\t<unk>\t0.0")
    for w in words:
        lines.append(f"{lg(uni[w])}\t{w}\t{lg(backoff.get(w, 1.0))}")
    lines += ["", "\\2-grams:"]
    for a, b in sorted(bigram):
        lines.append(f"{lg(bigram[(a, b)])}\t{a} {b}")
    lines += ["", "\\end\\", ""]
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text("\n".join(lines), encoding="utf-8")
    return len(words)
