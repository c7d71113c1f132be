"""Per-rate training metrics of an lrd checkpoint: kbit/s, decoder KL (nats/token) and MSE
of each trained rate on N cached training utterances (rounding noise as in training).

Why: the training log mixes the rates (one drawn per step); this says what each rate buys,
e.g. whether finer rates still lower the KL (docs/codecs.md, "Rate-distortion codecs").

    python scripts/lrd_per_rate.py CONFIG.toml RUN_DIR [N=24]
prints one line per rate: step, rate index, {kbps, kl, mse}. Uses the run's cache (train first).
"""

import random
import sys
from pathlib import Path

import numpy as np
import torch

from splitasr.codecs.rd import LrdNet
from splitasr.training.codec_train import frozen_model
from splitasr.training.rd_train import RdTrainConfig, _load_checkpoint, _spread, prepare_items, rd_loss


def main(config: str, run_dir: str, n: int = 24) -> None:
    torch.set_num_threads(1)
    cfg = RdTrainConfig.from_toml(config)
    full = frozen_model(cfg.model, cfg.seed, 1)
    model = full.distilling()
    items = prepare_items(model, cfg.codec.point, cfg.train, cfg.limit_per_manifest, cfg.cache_dir)
    fps = {p.name: p for p in full.point_info()}[cfg.codec.point].frames_per_second
    net = LrdNet(cfg.codec)
    spread = _spread(torch.cat([it.x.float() for it in items[:: max(len(items) // 200, 1)]]))
    step = _load_checkpoint(Path(run_dir), net, torch.optim.Adam(net.parameters()))
    sample = random.Random(123).sample(items, n)
    torch.manual_seed(0)
    with torch.no_grad():
        for r in range(cfg.codec.rates):
            parts = [rd_loss(net, model, it, cfg.codec.point, fps, cfg, spread, r, 1.0)[1] for it in sample]
            print(step, r, {k: round(float(np.mean([p[k] for p in parts])), 3) for k in parts[0]}, flush=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]) if len(sys.argv) > 3 else 24)
