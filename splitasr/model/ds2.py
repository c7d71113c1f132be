"""DeepSpeech2-style recogniser (paper 000): conv front end, residual CNN, projection,
bidirectional GRUs and a CTC character classifier, laid out as named stages.

Stages and what leaves each one (T = feature frames at 100/s, T' = ceil(T / 2)):

==========  ============================  ===========================
stage       does                          output
==========  ============================  ===========================
features    log-mel front end             (N, T, 80)
conv        norm + Conv2d stride (2, 2)   (N, T', C * 40)
res1..resK  residual 3x3 conv blocks      (N, T', C * 40)
proj        linear projection             (N, T', P)
gru1..gruL  bidirectional GRU             (N, T', 2H)
classifier  linear to characters          (N, T', V)
==========  ============================  ===========================

Convolutional activations travel flattened as ``(N, T', C * F)`` so every split point
carries a ``(N, T, D)`` tensor and a codec never needs to know the architecture.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from splitasr import audio
from splitasr.model.stages import SplitModel, Stage, length_mask
from splitasr.text import VOCAB


@dataclass(frozen=True)
class DS2Config:
    """Architecture of a DS2-style model; saved inside its checkpoint."""

    n_mels: int = audio.N_MELS
    conv_channels: int = 32
    res_blocks: int = 2
    proj_dim: int = 256
    gru_hidden: int = 192
    gru_layers: int = 3
    vocab_size: int = len(VOCAB)
    dropout: float = 0.1

    def to_dict(self) -> dict:
        return asdict(self)


class LogMelStage(Stage):
    """Waveform ``(N, S)`` at 16 kHz -> log-mel ``(N, T, n_mels)``; no parameters."""

    def __init__(self, n_mels: int):
        super().__init__()
        self.n_mels = n_mels
        self.out_dim = n_mels
        self.out_rate = float(audio.FRAMES_PER_SECOND)
        # frame t: the 400-sample window centred on sample 160 t
        self.stream_field = (audio.HOP_LENGTH, audio.N_FFT // 2)

    def forward(self, x, x_lens):
        feats = audio.log_mel(x, n_mels=self.n_mels)
        return feats, audio.num_frames(x_lens)


class ConvStage(Stage):
    """Global feature normalisation, then Conv2d with stride 2 in time and frequency.

    ``(N, T, F) -> (N, ceil(T/2), C * ceil(F/2))``. The per-bin mean and std are buffers
    set from training data, so the stage needs no look at the whole utterance and can run
    chunk by chunk.
    """

    def __init__(self, n_mels: int, channels: int):
        super().__init__()
        self.register_buffer("feat_mean", torch.zeros(n_mels))
        self.register_buffer("feat_std", torch.ones(n_mels))
        self.conv = nn.Conv2d(1, channels, kernel_size=3, stride=2, padding=1)
        self.norm = nn.BatchNorm2d(channels)
        self.channels = channels
        self.freq = (n_mels + 1) // 2
        self.out_dim = channels * self.freq
        self.out_rate = audio.FRAMES_PER_SECOND / 2
        self.stream_field = (2, 1)  # frame j: input frames 2j - 1 .. 2j + 1

    def forward(self, x, x_lens):
        x = (x - self.feat_mean) / self.feat_std
        x = x * length_mask(x_lens, x.shape[1]).unsqueeze(-1)
        y = torch.relu(self.norm(self.conv(x.unsqueeze(1))))  # (N, C, T', F')
        y_lens = (x_lens - 1) // 2 + 1
        y = y.permute(0, 2, 1, 3).flatten(2)  # (N, T', C*F')
        return y * length_mask(y_lens, y.shape[1]).unsqueeze(-1), y_lens


class ResBlockStage(Stage):
    """Residual block of two 3x3 convolutions over ``(time, frequency)``; shape kept."""

    def __init__(self, channels: int, freq: int, dropout: float):
        super().__init__()
        self.channels, self.freq = channels, freq
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.norm1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)
        self.norm2 = nn.BatchNorm2d(channels)
        self.dropout = nn.Dropout(dropout)
        self.out_dim = channels * freq
        self.out_rate = audio.FRAMES_PER_SECOND / 2
        self.stream_field = (1, 2)  # two 3-frame convolutions: frames j - 2 .. j + 2

    def forward(self, x, x_lens):
        n, t, _ = x.shape
        mask = length_mask(x_lens, t)
        h = x.view(n, t, self.channels, self.freq).permute(0, 2, 1, 3)  # (N, C, T, F)
        y = torch.relu(self.norm1(self.conv1(h)))
        y = y * mask[:, None, :, None]
        y = self.dropout(self.norm2(self.conv2(y)))
        y = torch.relu(y + h) * mask[:, None, :, None]
        return y.permute(0, 2, 1, 3).reshape(n, t, -1), x_lens


class ProjStage(Stage):
    """Linear projection of the flattened conv maps: ``(N, T, C*F) -> (N, T, P)``."""

    def __init__(self, in_dim: int, out_dim: int, dropout: float):
        super().__init__()
        self.linear = nn.Linear(in_dim, out_dim)
        self.norm = nn.LayerNorm(out_dim)
        self.dropout = nn.Dropout(dropout)
        self.out_dim = out_dim
        self.out_rate = audio.FRAMES_PER_SECOND / 2
        self.stream_field = (1, 0)  # frame by frame

    def forward(self, x, x_lens):
        y = self.dropout(nn.functional.gelu(self.norm(self.linear(x))))
        return y * length_mask(x_lens, y.shape[1]).unsqueeze(-1), x_lens


class BiGRUStage(Stage):
    """LayerNorm, then a bidirectional GRU: ``(N, T, D) -> (N, T, 2H)``."""

    def __init__(self, in_dim: int, hidden: int, dropout: float):
        super().__init__()
        self.norm = nn.LayerNorm(in_dim)
        self.gru = nn.GRU(in_dim, hidden, batch_first=True, bidirectional=True)
        self.dropout = nn.Dropout(dropout)
        self.out_dim = 2 * hidden
        self.out_rate = audio.FRAMES_PER_SECOND / 2

    def forward(self, x, x_lens):
        h = self.norm(x)
        packed = pack_padded_sequence(h, x_lens.cpu(), batch_first=True, enforce_sorted=False)
        y, _ = self.gru(packed)
        y, _ = pad_packed_sequence(y, batch_first=True, total_length=x.shape[1])
        return self.dropout(y), x_lens


class ClassifierStage(Stage):
    """Per-frame character scores: ``(N, T, D) -> (N, T, V)`` logits."""

    def __init__(self, in_dim: int, vocab_size: int):
        super().__init__()
        self.linear = nn.Linear(in_dim, vocab_size)
        self.out_dim = vocab_size
        self.out_rate = audio.FRAMES_PER_SECOND / 2

    def forward(self, x, x_lens):
        return self.linear(x), x_lens


class DS2Model(SplitModel):
    """The DeepSpeech2-style recogniser as a :class:`SplitModel`."""

    name = "ds2"
    default_beam = 32  # with the shipped word LM: the papers' decoder

    def __init__(self, config: DS2Config = DS2Config()):
        self.config = config
        conv = ConvStage(config.n_mels, config.conv_channels)
        stages: list[tuple[str, Stage]] = [("features", LogMelStage(config.n_mels)), ("conv", conv)]
        for i in range(config.res_blocks):
            stages.append((f"res{i + 1}", ResBlockStage(conv.channels, conv.freq, config.dropout)))
        stages.append(("proj", ProjStage(conv.out_dim, config.proj_dim, config.dropout)))
        dim = config.proj_dim
        for i in range(config.gru_layers):
            stages.append((f"gru{i + 1}", BiGRUStage(dim, config.gru_hidden, config.dropout)))
            dim = 2 * config.gru_hidden
        stages.append(("classifier", ClassifierStage(dim, config.vocab_size)))
        super().__init__(stages, sample_rate=audio.SAMPLE_RATE)

    def make_decoder(self, beam: int | None = None, lm: str | Path | bool = True):
        """pyctcdecode beam search with the shipped word LM (see lm.py), width
        :attr:`default_beam` unless ``beam`` says otherwise; ``beam <= 1`` is greedy CTC."""
        from splitasr.decoding import BeamSearchDecoder, GreedyDecoder

        beam = self.default_beam if beam is None else beam
        if beam <= 1:
            return GreedyDecoder()
        if lm is True:
            from splitasr.lm import DEFAULT_LM

            lm = DEFAULT_LM if DEFAULT_LM.is_file() else False
        return BeamSearchDecoder(beam_width=beam, arpa=lm or None)

    def set_feature_stats(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        """Set the global per-bin normalisation ``(n_mels,)`` from training features."""
        conv: ConvStage = self.stages["conv"]
        conv.feat_mean.copy_(mean)
        conv.feat_std.copy_(std.clamp_min(1e-3))
