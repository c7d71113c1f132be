"""Evaluate a model on a manifest: WER, CER and edit counts (``splitasr eval``)."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from splitasr.audio import load_audio
from splitasr.decoding import Decoder
from splitasr.errors import ManifestError, SplitASRError
from splitasr.manifest import read_manifest
from splitasr.model.stages import SplitModel
from splitasr.pipeline import recognise
from splitasr.wer import error_rates


@dataclass
class EvalReport:
    """Corpus-level scores of one model on one manifest."""

    manifest: str
    utterances: int
    words: int
    wer: float
    cer: float
    substitutions: int
    deletions: int
    insertions: int
    audio_seconds: float
    compute_seconds: float
    decoder: str
    errors: list[dict] = field(default_factory=list)  # worst utterances, for a look

    @property
    def rtf(self) -> float:
        return self.compute_seconds / max(self.audio_seconds, 1e-9)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["rtf"] = self.rtf
        return d

    def summary(self) -> str:
        return (
            f"{self.manifest}: {self.utterances} utterances, {self.words} words, decoder {self.decoder}\n"
            f"WER {self.wer:.2%}  CER {self.cer:.2%}  "
            f"(S {self.substitutions}, D {self.deletions}, I {self.insertions})  RTF {self.rtf:.4f}"
        )


def evaluate_manifest(
    model: SplitModel,
    manifest: str | Path,
    decoder: Decoder | None = None,
    limit: int | None = None,
    progress: bool = True,
) -> EvalReport:
    """Transcribe every utterance of ``manifest`` and score it against its text."""
    from tqdm import tqdm

    decoder = decoder or model.make_decoder()
    root = Path(manifest).parent
    utts = read_manifest(manifest)[:limit]
    if not utts:
        raise ManifestError(f"{manifest}: manifest has no utterances")
    refs, hyps, audio_s, compute_s = [], [], 0.0, 0.0
    for utt in tqdm(utts, desc="eval", unit="utt", disable=not progress):
        try:
            wave = torch.from_numpy(load_audio(utt.resolve(root)))
        except SplitASRError as exc:
            raise ManifestError(f"{manifest}: {exc}") from None
        t0 = time.perf_counter()
        hyps.append(recognise(model, wave, decoder))
        compute_s += time.perf_counter() - t0
        refs.append(utt.text)
        audio_s += len(wave) / model.sample_rate
    rates = error_rates(refs, hyps)
    per_utt = [
        {"audio": u.audio, "ref": r, "hyp": h, "wer": error_rates([r], [h])["wer"]}
        for u, r, h in zip(utts, refs, hyps, strict=False)
    ]
    worst = sorted(per_utt, key=lambda d: -d["wer"])[:10]
    return EvalReport(
        manifest=str(manifest),
        utterances=rates["utterances"],
        words=rates["words"],
        wer=rates["wer"],
        cer=rates["cer"],
        substitutions=rates["substitutions"],
        deletions=rates["deletions"],
        insertions=rates["insertions"],
        audio_seconds=round(audio_s, 3),
        compute_seconds=round(compute_s, 3),
        decoder=type(decoder).__name__,
        errors=worst,
    )
