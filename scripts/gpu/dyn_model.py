"""Batched Whisper tiny.en for audio-context fine-tuning (issue 16); torch only.

Self-contained (torch + numpy), so it runs on the GPU machine without ``splitasr``'s
optional dependencies. Parameter names equal :class:`splitasr.model.whisper.WhisperModel`'s
(``stages.stem.*``, ``stages.block1..4.*``, ``text_decoder.*``), so its state dict loads
into that model and back; ``scripts/gpu/check_batched.py`` checks the numbers against it.

* ``stem``: the two convolutions over zero-padded mel (zeros = Whisper's padding value),
  batched; frame ``j`` of a trimmed item equals frame ``j`` of the padded one.
* ``encode``: positions + blocks 1-4 (+ ``ln_post``) with a key-padding mask, so each item
  attends only to its own ``L_i`` frames (the trimmed encoder) or to all 1500 (padded).
* ``TextDecoder.hidden``: teacher-forced decoder hidden states, cross-attention masked to
  each item's valid memory frames; ``greedy``: batched greedy with a KV cache over a
  restricted vocabulary (the token ids in ``vocab_ids``).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

N_MELS, N_FFT, HOP = 80, 400, 160
N_CTX, D_MODEL, N_HEADS = 1500, 384, 6
WINDOW_FRAMES = 3000
SOT, EOT, NO_TIMESTAMPS = 50257, 50256, 50362


def stem_frames(c: int) -> int:
    """Encoder frames of a trimmed window of ``c`` feature frames (WhisperStem.frames)."""
    return min(N_CTX, (c + 1) // 2 + 1)


def log_mel(wave: torch.Tensor, filters: torch.Tensor) -> torch.Tensor:
    """``splitasr.audio.whisper_log_mel`` with the filter bank given: ``(S,)`` -> ``(S//160, 80)``."""
    extra = max(HOP, N_FFT // 2 + 1 - wave.shape[-1])
    padded = F.pad(wave.float().reshape(1, -1), (0, extra))
    window = torch.hann_window(N_FFT, device=wave.device)
    spec = torch.stft(padded, N_FFT, HOP, window=window, center=True, pad_mode="reflect", return_complex=True)
    power = (spec.real.square() + spec.imag.square())[..., :-1]
    mel = torch.matmul(filters, power)[0]
    logs = torch.clamp(mel, min=1e-10).log10()
    logs = torch.maximum(logs, logs.max() - 8.0)
    return ((logs + 4.0) / 4.0)[:, : wave.shape[-1] // HOP].T.contiguous()


class Attention(nn.Module):
    def __init__(self):
        super().__init__()
        self.query = nn.Linear(D_MODEL, D_MODEL)
        self.key = nn.Linear(D_MODEL, D_MODEL)
        self.value = nn.Linear(D_MODEL, D_MODEL)
        self.out = nn.Linear(D_MODEL, D_MODEL)

    @staticmethod
    def split(x: torch.Tensor) -> torch.Tensor:
        n, t, c = x.shape
        return x.view(n, t, N_HEADS, c // N_HEADS).transpose(1, 2)

    def kv(self, x):
        return self.split(self.key(x)), self.split(self.value(x))

    def attend(self, x, k, v, mask=None, causal=False):
        """``mask``: bool ``(N, 1, 1|L, S)``, True = may attend."""
        q = self.split(self.query(x))
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal and mask is None)
        n, h, t, d = y.shape
        return self.out(y.transpose(1, 2).reshape(n, t, h * d))


def mlp() -> nn.Sequential:
    return nn.Sequential(nn.Linear(D_MODEL, 4 * D_MODEL), nn.GELU(), nn.Linear(4 * D_MODEL, D_MODEL))


class Stem(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv1d(N_MELS, D_MODEL, 3, padding=1)
        self.conv2 = nn.Conv1d(D_MODEL, D_MODEL, 3, stride=2, padding=1)

    def forward(self, mel: torch.Tensor, frames: int) -> torch.Tensor:
        """Zero-padded mel ``(B, T, 80)`` -> the first ``frames`` stem frames ``(B, frames, 384)``.

        Frame ``j`` reads feature frames ``2j-2 .. 2j+2``; frames past ``T`` are zeros, as
        Whisper's padding (and the convolutions' zero padding) gives them.
        """
        need = 2 * frames + 1
        x = mel[:, :need]
        if x.shape[1] < need:
            x = F.pad(x, (0, 0, 0, need - x.shape[1]))
        h = F.gelu(self.conv1(x.transpose(1, 2)))
        h = F.gelu(self.conv2(h))[..., :frames]
        return h.transpose(1, 2)


class EncoderBlock(nn.Module):
    def __init__(self, first=False, final=False):
        super().__init__()
        if first:
            self.register_buffer("positions", torch.zeros(N_CTX, D_MODEL))
        else:
            self.positions = None
        self.attn_ln = nn.LayerNorm(D_MODEL)
        self.attn = Attention()
        self.mlp_ln = nn.LayerNorm(D_MODEL)
        self.mlp = mlp()
        self.ln_post = nn.LayerNorm(D_MODEL) if final else None

    def forward(self, x, mask=None):
        if self.positions is not None:
            x = x + self.positions[: x.shape[1]]
        h = self.attn_ln(x)
        k, v = self.attn.kv(h)
        x = x + self.attn.attend(h, k, v, mask)
        x = x + self.mlp(self.mlp_ln(x))
        return self.ln_post(x) if self.ln_post is not None else x


class DecoderBlock(nn.Module):
    def __init__(self):
        super().__init__()
        self.attn_ln = nn.LayerNorm(D_MODEL)
        self.attn = Attention()
        self.cross_attn_ln = nn.LayerNorm(D_MODEL)
        self.cross_attn = Attention()
        self.mlp_ln = nn.LayerNorm(D_MODEL)
        self.mlp = mlp()


class TextDecoder(nn.Module):
    """Whisper's decoder over a restricted vocabulary: row ``r`` of the embedding is token
    ``vocab_ids[r]``; logits are tied to it."""

    def __init__(self, n_vocab: int):
        super().__init__()
        self.token_embedding = nn.Embedding(n_vocab, D_MODEL)
        self.register_buffer("positions", torch.zeros(448, D_MODEL))
        self.blocks = nn.ModuleList(DecoderBlock() for _ in range(4))
        self.ln = nn.LayerNorm(D_MODEL)

    def hidden(self, tokens, memory, mem_mask=None) -> list[torch.Tensor]:
        """Teacher-forced ``tokens (B, T)`` (sub-vocab rows) -> [block 1..4 outputs, ln(out)].

        ``mem_mask (B, S)`` bool: valid memory frames (None: all)."""
        x = self.token_embedding(tokens) + self.positions[: tokens.shape[1]]
        cmask = None if mem_mask is None else mem_mask[:, None, None, :]
        states = []
        for b in self.blocks:
            h = b.attn_ln(x)
            k, v = b.attn.kv(h)
            x = x + b.attn.attend(h, k, v, causal=True)
            h = b.cross_attn_ln(x)
            k, v = b.cross_attn.kv(memory)
            x = x + b.cross_attn.attend(h, k, v, cmask)
            x = x + b.mlp(b.mlp_ln(x))
            states.append(x)
        states.append(self.ln(x))
        return states

    def logits(self, final: torch.Tensor) -> torch.Tensor:
        return final @ self.token_embedding.weight.T

    @torch.no_grad()
    def greedy(self, memory, mem_mask, prompt, suppress, suppress_begin, eot_row, max_tokens=224):
        """Batched greedy decoding (no loop guard). Returns (list of row-id lists, hit_limit bool list)."""
        n = memory.shape[0]
        dev = memory.device
        cross = [b.cross_attn.kv(memory) for b in self.blocks]
        cmask = None if mem_mask is None else mem_mask[:, None, None, :]
        total = len(prompt) + max_tokens
        caches = [
            (memory.new_zeros(n, N_HEADS, total, D_MODEL // N_HEADS), memory.new_zeros(n, N_HEADS, total, D_MODEL // N_HEADS))
            for _ in self.blocks
        ]
        tokens = torch.tensor([prompt] * n, device=dev)
        pos = 0
        out = torch.full((n, max_tokens), eot_row, dtype=torch.long, device=dev)
        done = torch.zeros(n, dtype=torch.bool, device=dev)
        for step in range(max_tokens):
            t = tokens.shape[1]
            x = self.token_embedding(tokens) + self.positions[pos : pos + t]
            for b, (kc, vc), (ck, cv) in zip(self.blocks, caches, cross, strict=True):
                h = b.attn_ln(x)
                k, v = b.attn.kv(h)
                kc[:, :, pos : pos + t] = k
                vc[:, :, pos : pos + t] = v
                if t > 1:
                    y = b.attn.attend(h, kc[:, :, : pos + t], vc[:, :, : pos + t], causal=True)
                else:
                    y = b.attn.attend(h, kc[:, :, : pos + t], vc[:, :, : pos + t])
                x = x + y
                x = x + b.cross_attn.attend(b.cross_attn_ln(x), ck, cv, cmask)
                x = x + b.mlp(b.mlp_ln(x))
            logits = self.logits(self.ln(x[:, -1])).float()
            logits = logits.masked_fill(suppress_begin if step == 0 else suppress, float("-inf"))
            nxt = logits.argmax(-1)
            nxt = torch.where(done, torch.full_like(nxt, eot_row), nxt)
            out[:, step] = nxt
            done |= nxt == eot_row
            pos += t
            tokens = nxt[:, None]
            if step % 8 == 7 and bool(done.all()):
                break
        out = out.cpu().numpy()
        seqs, hit = [], []
        for row in out:
            end = np.nonzero(row == eot_row)[0]
            seqs.append(row[: end[0]].tolist() if len(end) else row.tolist())
            hit.append(not len(end))
        return seqs, hit


class DynWhisper(nn.Module):
    """Container with splitasr's parameter names: ``stages.{stem,block1..4}``, ``text_decoder``."""

    def __init__(self, n_vocab: int):
        super().__init__()
        self.stages = nn.ModuleDict(
            {"stem": Stem(), **{f"block{i + 1}": EncoderBlock(first=i == 0, final=i == 3) for i in range(4)}}
        )
        self.text_decoder = TextDecoder(n_vocab)

    @property
    def blocks(self) -> list[EncoderBlock]:
        return [self.stages[f"block{i + 1}"] for i in range(4)]

    def encode(self, stem: torch.Tensor, lens: torch.Tensor | None = None, blocks=None) -> torch.Tensor:
        """Stem frames ``(B, L, C)`` -> encoder output; ``lens (B,)``: each item's valid frames
        (attention masked to them; None: all ``L``, the padded model when ``L == 1500``)."""
        mask = None
        if lens is not None:
            valid = torch.arange(stem.shape[1], device=stem.device)[None, :] < lens[:, None]
            mask = valid[:, None, None, :]
        x = stem
        for b in blocks if blocks is not None else self.blocks:
            x = b(x, mask)
        return x


def block_state(model_blocks: list[nn.Module]) -> dict[str, torch.Tensor]:
    """Trainable encoder blocks as splitasr state-dict entries (``stages.blockN.*``, float16),
    the fixed positions buffer left out."""
    out = {}
    for i, b in enumerate(model_blocks):
        for k, v in b.state_dict().items():
            if k == "positions":
                continue
            out[f"stages.block{i + 1}.{k}"] = v.detach().to("cpu", torch.float16).contiguous()
    return out


def load_packed(folder, device="cpu") -> tuple[DynWhisper, dict]:
    """``DynWhisper`` from ``folder/whisper_fp16.safetensors`` (float32 on ``device``) and
    the vocabulary info: ``vocab_ids`` (row -> token id) and the masks."""
    import json
    from pathlib import Path

    from safetensors.torch import load_file

    folder = Path(folder)
    sd = load_file(str(folder / "whisper_fp16.safetensors"))
    vocab_ids = sd.pop("vocab_ids").long()
    meta = json.loads((folder / "meta.json").read_text())
    model = DynWhisper(len(vocab_ids))
    missing, unexpected = model.load_state_dict({k: v.float() for k, v in sd.items()}, strict=False)
    if missing or unexpected:
        raise RuntimeError(f"weights do not match: missing {missing[:5]}, unexpected {unexpected[:5]}")
    model.to(device).eval().requires_grad_(False)
    info = vocab_info(vocab_ids, meta["suppress_ids"], meta["suppress_ids_begin"], device)
    info["meta"] = meta
    return model, info


def vocab_info(vocab_ids: torch.Tensor, suppress_ids, suppress_begin_ids, device="cpu") -> dict:
    ids = vocab_ids.tolist()
    row = {t: r for r, t in enumerate(ids)}
    sup = torch.zeros(len(ids), dtype=torch.bool)
    for r, t in enumerate(ids):
        if t in set(suppress_ids) or (t > EOT):  # specials and timestamps are never generated
            sup[r] = True
    beg = sup.clone()
    for t in suppress_begin_ids:
        if t in row:
            beg[row[t]] = True
    return {
        "vocab_ids": vocab_ids.to(device),
        "row": row,
        "prompt": [row[SOT], row[NO_TIMESTAMPS]],
        "eot_row": row[EOT],
        "suppress": sup.to(device),
        "suppress_begin": beg.to(device),
    }
