"""Whisper's text decoder as a :class:`~splitasr.decoding.Decoder`: greedy and beam search
over the encoder output, one 30-s window at a time, with a guard against decoding loops."""

from __future__ import annotations

import itertools
from pathlib import Path

import torch

from splitasr.decoding import Decoder
from splitasr.errors import MissingDependencyError
from splitasr.model.whisper.model import CrossGroup, TextDecoder, WhisperModel, _windows


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

    def decode_batch(self, logits: torch.Tensor, lengths: torch.Tensor) -> list[str]:
        """Encoder outputs ``(B, T, C)`` with valid lengths ``(B,)`` -> B texts, the text
        decoder steps of all their windows run as one batch (:meth:`tokens_batch`).

        Each item is cut into 30-s windows as :meth:`decode` does, and its texts are
        joined the same way. The token ids equal :meth:`decode`'s on real speech (tested
        for greedy and beam 5, padded and ``-dyn``): every window takes the same decisions,
        and the scores differ only in the last bits of float32 (a matrix product over
        several rows sums in another order than over one).
        """
        size = self.config.n_audio_ctx
        owner, memories = [], []
        for i in range(logits.shape[0]):
            memory = logits[i, : int(lengths[i])]
            for a, b in _windows(memory.shape[0], size):
                owner.append(i)
                memories.append(memory[a:b])
        with torch.inference_mode():
            ids = self.tokens_batch(memories)
        texts: list[list[str]] = [[] for _ in range(logits.shape[0])]
        for i, window_ids in zip(owner, ids, strict=True):
            texts[i].append(self.text_of(window_ids))
        return [" ".join(t for t in item if t) for item in texts]

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

    def tokens_batch(self, memories: list[torch.Tensor]) -> list[list[int]]:
        """Generated token ids of several windows ``memories[j] (T_j, C)`` decoded together.

        The rows of every window (1 in greedy decoding, its beams in beam search) step
        through the text decoder as one batch ``(R, 1)`` with their own self-attention
        caches; each window cross-attends to its own encoder frames (windows of one length
        share one attention call, :class:`~splitasr.model.whisper.model.CrossGroup`: no
        padding, no mask). A window that ends (end token, loop guard, ``max_new_tokens``,
        the text context) leaves the batch: its rows are dropped from the caches. Every
        decision per window is the one :meth:`tokens` takes.
        """
        if not memories:
            return []
        if self.beam <= 1:
            return self._greedy_batch(memories)
        return self._beam_search_batch(memories)

    def _start(self, memory: torch.Tensor, batch: int):
        cross = _expand(self.text.cross_kv(memory.unsqueeze(0).float()), batch)
        caches: list[dict] = [{} for _ in self.text.blocks]
        prompt = torch.tensor([self.prompt] * batch)
        logits = self.text(prompt, caches, cross, 0)[:, -1]
        return logits, caches, cross

    def _last_step(self, step: int) -> bool:
        """Whether the text context is full after the token of ``step``."""
        return len(self.prompt) + step + 1 > self.config.n_text_ctx - 1

    def _greedy_next(self, out: list[int], token: int, step: int) -> list[int] | None:
        """Take the greedy ``token`` of ``step`` into ``out``; the window's ids when it ends
        here (end token, a loop, the text context full), else None."""
        if token == self.config.eot:
            return out
        out.append(token)
        if self.max_repeats and _repeat(out, self.max_repeats):
            return _cut_repeat(out, self.max_repeats)
        if self._last_step(step):
            return out
        return None

    def _greedy(self, memory: torch.Tensor) -> list[int]:
        logits, caches, cross = self._start(memory, 1)
        out: list[int] = []
        offset = len(self.prompt)
        for step in range(self.config.max_new_tokens):
            done = self._greedy_next(out, int(self._mask(logits[0], step).argmax()), step)
            if done is not None:
                return done
            logits = self.text(torch.tensor([[out[-1]]]), caches, cross, offset + step)[:, -1]
        return out

    def _greedy_batch(self, memories: list[torch.Tensor]) -> list[list[int]]:
        rows = _Rows(self.text, memories, self.prompt)
        outs: list[list[int]] = [[] for _ in memories]
        result: list[list[int] | None] = [None] * len(memories)
        offset = len(self.prompt)
        for step in range(self.config.max_new_tokens):
            tokens = self._mask(rows.logits, step).argmax(dim=-1).tolist()
            kept = []
            for r, j in enumerate(rows.windows):
                result[j] = self._greedy_next(outs[j], tokens[r], step)
                if result[j] is None:
                    kept.append((j, [r]))
            if not kept:
                break
            rows.select(kept)
            rows.step([outs[j][-1] for j, _ in kept], offset + step)
        return [outs[j] if r is None else r for j, r in enumerate(result)]

    def _beam_search(self, memory: torch.Tensor) -> list[int]:
        """Beam search as Whisper's: each live beam proposes its best ``beam + 1`` tokens,
        the best ``beam`` non-final candidates live on, ended ones are collected until
        ``beam`` have ended; the winner has the best log-probability per token."""
        logits, caches, cross = self._start(memory, 1)
        beams = _Beams(self.beam, self.config.eot)
        offset = len(self.prompt)
        for step in range(self.config.max_new_tokens):
            logp = torch.log_softmax(self._mask(logits.float(), step), dim=-1)  # (B, V)
            if beams.advance(logp, last=self._last_step(step)):
                break
            index = torch.tensor(beams.sources)
            for cache in caches:
                cache["k"], cache["v"] = cache["k"][index], cache["v"][index]
            cross = _expand(cross, len(beams.sources))
            logits = self.text(torch.tensor(beams.tokens)[:, None], caches, cross, offset + step)[:, -1]
        return beams.best(self.max_repeats)

    def _beam_search_batch(self, memories: list[torch.Tensor]) -> list[list[int]]:
        rows = _Rows(self.text, memories, self.prompt)
        beams = [_Beams(self.beam, self.config.eot) for _ in memories]
        offset = len(self.prompt)
        for step in range(self.config.max_new_tokens):
            logp = torch.log_softmax(self._mask(rows.logits.float(), step), dim=-1)  # (R, V)
            kept, r = [], 0
            for j, n in zip(rows.windows, rows.counts, strict=True):
                if not beams[j].advance(logp[r : r + n], last=self._last_step(step)):
                    kept.append((j, [r + s for s in beams[j].sources]))
                r += n
            if not kept:
                break
            rows.select(kept)
            rows.step([t for j, _ in kept for t in beams[j].tokens], offset + step)
        return [b.best(self.max_repeats) for b in beams]


class _Beams:
    """One window's beam search state: the live sequences with their scores, and the
    ended ones (Whisper's rules; :meth:`WhisperDecoder._beam_search`)."""

    def __init__(self, size: int, eot: int):
        self.size, self.eot = size, eot
        self.seqs: list[list[int]] = [[]]
        self.scores = torch.zeros(1)
        self.finished: list[tuple[float, list[int]]] = []
        self.sources: list[int] = []  # after advance(): the live rows each new beam extends
        self.tokens: list[int] = []  # ... and the token it adds

    def advance(self, logp: torch.Tensor, last: bool = False) -> bool:
        """One step from the live beams' log-probabilities ``(n, V)``; True when the window
        ends here (``size`` beams ended, none lives on, or ``last``: the text context is
        full, the live beams stay as they were before this step, as Whisper's)."""
        size = self.size
        top_lp, top_id = logp.topk(size + 1, dim=-1)
        cand = (self.scores[:, None] + top_lp).flatten()
        order = torch.argsort(cand, descending=True, stable=True).tolist()
        keep_src, keep_tok, keep_score = [], [], []
        for idx in order:  # best first, until `size` beams live on
            src, k = divmod(idx, size + 1)
            token, score = int(top_id[src, k]), float(cand[idx])
            if token != self.eot:
                keep_src.append(src)
                keep_tok.append(token)
                keep_score.append(score)
                if len(keep_src) == size:
                    break
            elif len(self.finished) < size:
                self.finished.append((score, self.seqs[src]))
        if len(self.finished) >= size or not keep_src or last:
            return True
        self.sources, self.tokens = keep_src, keep_tok
        self.seqs = [self.seqs[s] + [t] for s, t in zip(keep_src, keep_tok, strict=True)]
        self.scores = torch.tensor(keep_score)
        return False

    def best(self, max_repeats: int) -> list[int]:
        """The winner: the best log-probability per token among the ended beams and, as
        Whisper, the best live ones up to ``size``; a decoding loop cut."""
        live = sorted(zip(self.scores.tolist(), self.seqs, strict=True), key=lambda f: -f[0])
        finished = self.finished + live[: max(self.size - len(self.finished), 0)]
        best = max(finished, key=lambda f: f[0] / max(len(f[1]), 1))[1]
        return _cut_repeat(best, max_repeats) if max_repeats else best


class _Rows:
    """Decoder rows of several windows stepping together through the text decoder.

    Rows are grouped by window, windows in order of length so that windows of one length
    are adjacent and share one cross-attention call (:class:`CrossGroup`). ``logits (R, V)``
    are the last step's; :meth:`select` keeps some windows' rows (and repeats or reorders
    rows within a window: beams), :meth:`step` feeds one token per row.
    """

    def __init__(self, text: TextDecoder, memories: list[torch.Tensor], prompt: list[int]):
        self.text = text
        order = sorted(range(len(memories)), key=lambda j: memories[j].shape[0])  # stable
        self.windows: list[int] = order  # window of each group of rows, in row order
        self.counts: list[int] = [1] * len(order)  # rows of each window
        self._groups: list[list[int]] = []  # windows sharing one length, in row order
        self._kv: list[list[tuple[torch.Tensor, torch.Tensor]]] = []  # per group, per layer (G, H, T, D)
        for _, group in itertools.groupby(order, key=lambda j: memories[j].shape[0]):
            group = list(group)
            self._groups.append(group)
            self._kv.append(text.cross_kv(torch.stack([memories[j] for j in group]).float()))
        self.caches: list[dict] = [{} for _ in text.blocks]
        tokens = torch.tensor([prompt] * len(order))
        self.logits = text(tokens, self.caches, self._cross(), 0)[:, -1]

    def _cross(self) -> list[list[CrossGroup]]:
        count = dict(zip(self.windows, self.counts, strict=True))
        return [
            [
                CrossGroup(kv[layer][0], kv[layer][1], tuple(count[j] for j in group))
                for group, kv in zip(self._groups, self._kv, strict=True)
            ]
            for layer in range(len(self.caches))
        ]

    def select(self, kept: list[tuple[int, list[int]]]) -> None:
        """Keep, in row order, each listed window with the given rows (indices of the
        current rows, all of that window's); the other windows leave the batch."""
        rows = [r for _, rs in kept for r in rs]
        if rows != list(range(sum(self.counts))):
            index = torch.tensor(rows)
            for cache in self.caches:
                cache["k"], cache["v"] = cache["k"].index_select(0, index), cache["v"].index_select(0, index)
        self.windows, self.counts = [j for j, _ in kept], [len(rs) for _, rs in kept]
        live = set(self.windows)
        groups, kvs = [], []
        for group, kv in zip(self._groups, self._kv, strict=True):
            keep = [g for g, j in enumerate(group) if j in live]
            if len(keep) < len(group) and keep:
                index = torch.tensor(keep)
                kv = [(k.index_select(0, index), v.index_select(0, index)) for k, v in kv]
            if keep:
                groups.append([group[g] for g in keep])
                kvs.append(kv)
        self._groups, self._kv = groups, kvs

    def step(self, tokens: list[int], offset: int) -> None:
        """Feed one token per row at position ``offset``; sets :attr:`logits` ``(R, V)``."""
        self.logits = self.text(torch.tensor(tokens)[:, None], self.caches, self._cross(), offset)[:, -1]


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
