"""Whisper's text decoder as a :class:`~splitasr.decoding.Decoder`: greedy and beam search
over the encoder output, one 30-s window at a time, with a guard against decoding loops."""

from __future__ import annotations

from pathlib import Path

import torch

from splitasr.decoding import Decoder
from splitasr.errors import MissingDependencyError
from splitasr.model.whisper.model import WhisperModel, _windows


class WhisperDecoder(Decoder):
    """Encoder output ``(T, C)`` -> text, one 30-s window (1500 frames) at a time.

    Greedy or beam search (``beam`` > 1), prompt ``<|startoftranscript|><|notimestamps|>``,
    the ``suppress_ids`` of config.json at every step and ``suppress_ids_begin`` at the
    first; at most ``max_new_tokens`` per window. Text comes from ``tokenizer.json``
    through the ``tokenizers`` library. Windows are decoded independently (no previous
    text as prompt), and their texts joined with spaces.
    """

    max_repeats = 4  # a unit of up to LOOP_UNIT tokens repeated this often in a row ends decoding (0: never)

    def __init__(self, model: WhisperModel, beam: int = 1):
        try:
            from tokenizers import Tokenizer
        except ImportError:  # pragma: no cover - a pinned dependency
            raise MissingDependencyError("whisper-tiny.en needs tokenizers: pip install tokenizers") from None
        self.text = model.text_decoder
        self.config = model.config
        self.beam = beam
        self.tokenizer = Tokenizer.from_file(str(Path(model.config.assets) / "tokenizer.json"))
        vocab = model.config.n_vocab
        self._suppress = torch.zeros(vocab, dtype=torch.bool)
        self._suppress[list(model.config.suppress_ids)] = True
        self._suppress_begin = self._suppress.clone()
        self._suppress_begin[list(model.config.suppress_ids_begin)] = True
        self.prompt = [model.config.sot, model.config.no_timestamps]

    def decode(self, logits: torch.Tensor, length: int | None = None) -> str:
        """``logits`` is the encoder output ``(T, C)``; ``length`` its valid frames."""
        memory = logits[:length]
        size = self.config.n_audio_ctx
        texts = []
        with torch.inference_mode():
            for a, b in _windows(memory.shape[0], size):
                ids = self.tokens(memory[a:b])
                texts.append(self.text_of(ids))
        return " ".join(t for t in texts if t)

    def text_of(self, ids: list[int]) -> str:
        """Text of generated token ids (special and timestamp tokens dropped)."""
        return self.tokenizer.decode([i for i in ids if i < self.config.eot]).strip()

    def _mask(self, logits: torch.Tensor, step: int) -> torch.Tensor:
        return logits.masked_fill(self._suppress_begin if step == 0 else self._suppress, float("-inf"))

    def tokens(self, memory: torch.Tensor) -> list[int]:
        """Generated token ids for one window ``memory (T, C)`` (the end token excluded)."""
        if self.beam <= 1:
            return self._greedy(memory)
        return self._beam_search(memory)

    def _start(self, memory: torch.Tensor, batch: int):
        cross = _expand(self.text.cross_kv(memory.unsqueeze(0).float()), batch)
        caches: list[dict] = [{} for _ in self.text.blocks]
        prompt = torch.tensor([self.prompt] * batch)
        logits = self.text(prompt, caches, cross, 0)[:, -1]
        return logits, caches, cross

    def _greedy(self, memory: torch.Tensor) -> list[int]:
        logits, caches, cross = self._start(memory, 1)
        out: list[int] = []
        offset = len(self.prompt)
        for step in range(self.config.max_new_tokens):
            token = int(self._mask(logits[0], step).argmax())
            if token == self.config.eot:
                break
            out.append(token)
            if self.max_repeats and _repeat(out, self.max_repeats):
                return _cut_repeat(out, self.max_repeats)
            if offset + step + 1 > self.config.n_text_ctx - 1:
                break
            logits = self.text(torch.tensor([[token]]), caches, cross, offset + step)[:, -1]
        return out

    def _beam_search(self, memory: torch.Tensor) -> list[int]:
        """Beam search as Whisper's: each live beam proposes its best ``beam + 1`` tokens,
        the best ``beam`` non-final candidates live on, ended ones are collected until
        ``beam`` have ended; the winner has the best log-probability per token."""
        size = self.beam
        logits, caches, cross = self._start(memory, 1)
        seqs: list[list[int]] = [[]]
        scores = torch.zeros(1)
        finished: list[tuple[float, list[int]]] = []
        offset = len(self.prompt)
        for step in range(self.config.max_new_tokens):
            logp = torch.log_softmax(self._mask(logits.float(), step), dim=-1)  # (B, V)
            top_lp, top_id = logp.topk(size + 1, dim=-1)
            cand = (scores[:, None] + top_lp).flatten()
            order = torch.argsort(cand, descending=True, stable=True).tolist()
            keep_src, keep_tok, keep_score = [], [], []
            for idx in order:  # best first, until `size` beams live on
                src, k = divmod(idx, size + 1)
                token, score = int(top_id[src, k]), float(cand[idx])
                if token != self.config.eot:
                    keep_src.append(src)
                    keep_tok.append(token)
                    keep_score.append(score)
                    if len(keep_src) == size:
                        break
                elif len(finished) < size:
                    finished.append((score, seqs[src]))
            if len(finished) >= size or not keep_src or offset + step + 1 > self.config.n_text_ctx - 1:
                break
            index = torch.tensor(keep_src)
            for cache in caches:
                cache["k"], cache["v"] = cache["k"][index], cache["v"][index]
            cross = _expand(cross, len(keep_src))
            seqs = [seqs[s] + [t] for s, t in zip(keep_src, keep_tok, strict=True)]
            scores = torch.tensor(keep_score)
            logits = self.text(torch.tensor(keep_tok)[:, None], caches, cross, offset + step)[:, -1]
        live = sorted(zip(scores.tolist(), seqs, strict=True), key=lambda f: -f[0])
        finished += live[: max(size - len(finished), 0)]  # as Whisper: unfinished beams count too
        best = max(finished, key=lambda f: f[0] / max(len(f[1]), 1))[1]
        return _cut_repeat(best, self.max_repeats) if self.max_repeats else best


LOOP_UNIT = 10  # longest repeated token sequence the loop guard looks for


def _repeat(ids: list[int], times: int) -> int:
    """Length of the shortest unit (1..LOOP_UNIT tokens) that ``ids`` ends with ``times``
    times in a row, or 0."""
    for n in range(1, LOOP_UNIT + 1):
        if len(ids) < n * times:
            break
        unit = ids[-n:]
        if all(ids[len(ids) - n * (k + 1) : len(ids) - n * k] == unit for k in range(1, times)):
            return n
    return 0


def _cut_repeat(ids: list[int], times: int) -> list[int]:
    """Drop a decoding loop: where ``ids`` ends with a unit repeated ``times`` times or more,
    keep two copies of a unit of one or two tokens (a digit said twice, "5, 5") and one of
    a longer one (a phrase)."""
    n = _repeat(ids, times)
    if not n:
        return ids
    end = len(ids)
    while end - 2 * n >= 0 and ids[end - 2 * n : end - n] == ids[end - n : end]:
        end -= n
    keep = 2 if n <= 2 else 1
    return ids[: end + n * (keep - 1)]


def _expand(cross: list[tuple[torch.Tensor, torch.Tensor]], batch: int) -> list:
    """Encoder keys/values ``(B, H, T, D)`` of one window, viewed ``batch`` times."""
    return [(k[:1].expand(batch, -1, -1, -1), v[:1].expand(batch, -1, -1, -1)) for k, v in cross]
