"""Typed manifests: one JSON object per line, ``{audio, text, duration, speaker, source}``.

Audio paths are stored relative to the manifest's folder so a corpus can be moved.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from splitasr.errors import ManifestError

FIELDS = ("audio", "text", "duration", "speaker", "source")


@dataclass(frozen=True)
class Utterance:
    """One manifest line."""

    audio: str
    text: str
    duration: float
    speaker: str
    source: str

    def resolve(self, root: Path) -> Path:
        path = Path(self.audio)
        return path if path.is_absolute() else root / path


def write_manifest(path: str | Path, utterances: list[Utterance]) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as f:
        for utt in utterances:
            f.write(json.dumps(asdict(utt), ensure_ascii=False) + "\n")


def read_manifest(path: str | Path, limit: int = 0) -> list[Utterance]:
    """Read a JSONL manifest; audio paths stay as written (see :meth:`Utterance.resolve`).
    ``limit``: the first N utterances only (0: all).

    Raises:
        ManifestError: naming the file and line of the first malformed entry.
    """
    path = Path(path)
    if not path.is_file():
        raise ManifestError(f"{path}: no such manifest")
    out = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
            out.append(
                Utterance(
                    audio=str(obj["audio"]),
                    text=str(obj["text"]),
                    duration=float(obj.get("duration", 0.0)),
                    speaker=str(obj.get("speaker", "")),
                    source=str(obj.get("source", "")),
                )
            )
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            raise ManifestError(f"{path}:{n}: malformed manifest line ({exc})") from None
    return out[:limit] if limit else out
