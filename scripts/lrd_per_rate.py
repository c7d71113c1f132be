"""Per-rate training metrics of an lrd checkpoint: kbit/s, decoder KL (nats/token) and MSE
of each trained rate and the halfway rates between them, on N cached training utterances
(rounding noise as in training) or on the first N of a held-out manifest.

Why: the training log mixes the rates (one drawn per step); this says what each rate buys,
e.g. whether finer rates still lower the KL (docs/codecs.md, "Rate-distortion codecs"), and,
with ``--manifest``, whether a lower training KL carries over to utterances the codec never
saw (stage 5: it did not).

    python scripts/lrd_per_rate.py CONFIG.toml RUN_DIR [--n 24] [--manifest data/corpus/dev.jsonl]
prints one line per rate position (0, 0.5, 1, ...): step, position, {kbps, kl, mse}. Uses the
run's cache (train first); a held-out manifest's teacher outputs join the recipe's
``cache_dir`` on first use.
"""

import argparse
import random
from pathlib import Path

import numpy as np
import torch

from splitasr.codecs.rd import LrdNet
from splitasr.training.codec_train import frozen_model
from splitasr.training.rd_train import RdTrainConfig, _load_checkpoint, _spread, prepare_items, rd_loss


def main(config: str, run_dir: str, n: int = 24, manifest: str = "") -> None:
    torch.set_num_threads(1)
    cfg = RdTrainConfig.from_toml(config)
    full = frozen_model(cfg.model, cfg.seed, 1)
    model = full.distilling()
    items = prepare_items(model, cfg.codec.point, cfg.train, cfg.limit_per_manifest, cfg.cache_dir)
    fps = {p.name: p for p in full.point_info()}[cfg.codec.point].frames_per_second
    net = LrdNet(cfg.codec)
    spread = _spread(torch.cat([it.x.float() for it in items[:: max(len(items) // 200, 1)]]))
    step = _load_checkpoint(Path(run_dir), net, torch.optim.Adam(net.parameters()))
    if manifest:
        sample = prepare_items(model, cfg.codec.point, [manifest], n, cfg.cache_dir)
    else:
        sample = random.Random(123).sample(items, n)
    torch.manual_seed(0)
    with torch.no_grad():
        for r in [i / 2 for i in range(2 * cfg.codec.rates - 1)]:
            parts = [rd_loss(net, model, it, cfg.codec.point, fps, cfg, spread, r, 1.0)[1] for it in sample]
            print(step, r, {k: round(float(np.mean([p[k] for p in parts])), 3) for k in parts[0]}, flush=True)


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("config")
    p.add_argument("run_dir")
    p.add_argument("--n", type=int, default=24)
    p.add_argument("--manifest", default="", help="held-out utterances instead of training ones")
    a = p.parse_args()
    main(a.config, a.run_dir, a.n, a.manifest)
