"""Extra English sentences from installed packages, for more words in the training audio.

WordNet's example sentences (Debian package ``wordnet-base``) are short, everyday English:
quoted strings in ``/usr/share/wordnet/data.*``.
"""

from __future__ import annotations

import random
import re
from pathlib import Path

WORDNET_DIR = Path("/usr/share/wordnet")
_QUOTED = re.compile(r'"([^"]{10,200})"')


def wordnet_sentences(n: int, seed: int = 0, root: Path = WORDNET_DIR) -> list[str]:
    """Up to ``n`` distinct example sentences of 4-20 words, letters and light punctuation.

    Returns an empty list when WordNet is not installed.
    """
    found: set[str] = set()
    for path in sorted(root.glob("data.*")):
        for m in _QUOTED.finditer(path.read_text(encoding="latin-1")):
            s = m.group(1).strip()
            if re.fullmatch(r"[A-Za-z][A-Za-z ,.;:'?!-]*", s) and 4 <= len(s.split()) <= 20:
                found.add(s)
    pool = sorted(found)
    random.Random(seed).shuffle(pool)
    return pool[:n]
