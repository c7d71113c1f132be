"""Text: normalisation shared by every model, and the character tokenizer for CTC.

``normalize`` is the one function that turns any transcript (reference or hypothesis,
any backbone) into the form WER is computed on: lowercase, numerals spelled out,
punctuation dropped, apostrophes kept inside words, single spaces.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

BLANK = "<blank>"
VOCAB = ("<blank>", " ", "'") + tuple("abcdefghijklmnopqrstuvwxyz")

_ONES = (
    "zero one two three four five six seven eight nine ten eleven twelve thirteen "
    "fourteen fifteen sixteen seventeen eighteen nineteen"
).split()
_TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()
_ORDINAL_SUFFIX = {
    "one": "first",
    "two": "second",
    "three": "third",
    "five": "fifth",
    "eight": "eighth",
    "nine": "ninth",
    "twelve": "twelfth",
}
_ABBREVIATIONS = {
    "mr.": "mister",
    "mrs.": "missus",
    "dr.": "doctor",
    "st.": "saint",
    "etc.": "et cetera",
    "vs.": "versus",
    "mt.": "mount",
    "capt.": "captain",
    "col.": "colonel",
    "gen.": "general",
    "lt.": "lieutenant",
    "jr.": "junior",
    "sr.": "senior",
    "no.": "number",
}


def number_to_words(n: int) -> str:
    """Spell a non-negative integer in English words, e.g. ``1908 -> "nineteen oh eight"``.

    Four-digit numbers from 1100 to 1999 that look like years are read as years, the way
    speakers (and most TTS engines) say them.
    """
    if n < 0:
        return "minus " + number_to_words(-n)
    if 1100 <= n <= 1999 or 2010 <= n <= 2099:
        hi, lo = divmod(n, 100)
        tail = "hundred" if lo == 0 else number_to_words(lo) if lo >= 10 else "oh " + _ONES[lo]
        return number_to_words(hi) + " " + tail
    if n < 20:
        return _ONES[n]
    if n < 100:
        tens, ones = divmod(n, 10)
        return _TENS[tens] + ("" if ones == 0 else " " + _ONES[ones])
    for unit, name in ((10**9, "billion"), (10**6, "million"), (1000, "thousand"), (100, "hundred")):
        if n >= unit:
            hi, lo = divmod(n, unit)
            rest = "" if lo == 0 else " " + number_to_words(lo)
            return number_to_words(hi) + " " + name + rest
    raise AssertionError("unreachable")


def ordinal_to_words(n: int) -> str:
    """Spell an ordinal, e.g. ``29 -> "twenty ninth"``."""
    words = number_to_words(n).split()
    last = words[-1]
    if last in _ORDINAL_SUFFIX:
        last = _ORDINAL_SUFFIX[last]
    elif last.endswith("y"):
        last = last[:-1] + "ieth"
    else:
        last = last + "th"
    return " ".join(words[:-1] + [last])


def _numeral_words(digits: str) -> str:
    """Words for a run of digits: as a number ("1908", "42"), or digit by digit when
    nobody would say it as one: five digits or more, or a leading zero ("0139", "6880197"),
    the way phone numbers, codes and connected digits are read."""
    if len(digits) >= 5 or (len(digits) > 1 and digits[0] == "0"):
        return " ".join(_ONES[int(d)] for d in digits)
    return number_to_words(int(digits))


def spoken_form(text: str) -> str:
    """Rewrite digits and common abbreviations as the words a speaker says.

    Punctuation is kept, so the result is still good input for a TTS engine; the CTC
    label is ``normalize(spoken_form(text))`` so audio and label agree.
    """
    grouped = r"\b\d{1,3}(?:,\d{3})+\b"  # 12,000
    text = re.sub(grouped, lambda m: number_to_words(int(m.group(0).replace(",", ""))), text)
    text = re.sub(r"\b(\d+)(st|nd|rd|th)\b", lambda m: ordinal_to_words(int(m.group(1))), text)
    text = re.sub(r"(\d+)\.(\d+)", lambda m: f"{m.group(1)} point {' '.join(m.group(2))}", text)
    text = re.sub(r"%", " percent ", text)
    text = re.sub(r"\d+", lambda m: " " + _numeral_words(m.group(0)) + " ", text)
    words = []
    for word in text.split():
        key = word.lower()
        words.append(_ABBREVIATIONS.get(key, word))
    return " ".join(words)


def normalize(text: str) -> str:
    """Normalise a transcript for CTC labels and WER (the same for every model)."""
    text = spoken_form(text).lower()
    text = text.replace("\u2019", "'").replace("-", " ")
    text = re.sub(r"[^a-z' ]+", " ", text)
    text = re.sub(r"(?<![a-z])'|'(?![a-z])", " ", text)  # quotes, not apostrophes
    return " ".join(text.split())


@dataclass(frozen=True)
class CharTokenizer:
    """Characters a-z, apostrophe and space, with the CTC blank at index 0."""

    vocab: tuple[str, ...] = VOCAB

    @property
    def blank(self) -> int:
        return 0

    def __len__(self) -> int:
        return len(self.vocab)

    def encode(self, text: str) -> list[int]:
        """Token ids for ``normalize(text)``; every normalised character is in the vocab."""
        index = {c: i for i, c in enumerate(self.vocab)}
        return [index[c] for c in normalize(text)]

    def decode(self, ids) -> str:
        """Text for a sequence of token ids (blanks dropped, nothing collapsed)."""
        return "".join(self.vocab[i] for i in ids if i != self.blank)
