"""Build the bundled SAE's dashboards into its folder, so the Features panel has them at once.

    python -m tools.sae.ship_dashboards [--threads 1]

The same request the Features panel makes for the bundled model (the bundled corpus sample,
1,000,000 tokens, 128-token rows, top 20 contexts); the engine looks in the SAE folder's
``dashboards/`` after the user's cache (``engine.sae_features.run_dashboards``).
"""

from __future__ import annotations

import argparse
import time

import torch

from engine.host import load_host
from engine.jobs import Context
from engine.model_sources import ModelSpec
from engine.sae_features import DashboardRequest, run_dashboards
from engine.sae_io import BUNDLED_SAE_DIR
from engine.text_source import TextSource


def ship(host, folder=BUNDLED_SAE_DIR) -> None:
    started = time.perf_counter()
    out = folder / "dashboards"
    for old in out.glob("*.safetensors"):
        old.unlink()
    stats = run_dashboards(host, DashboardRequest(str(folder), TextSource("bundled"),
                                                  n_tokens=1_000_000, cache_dir=str(out)),
                           Context())
    size = sum(p.stat().st_size for p in out.iterdir()) / 2**20
    print(f"dashboards over {stats.n_tokens:,} tokens in {time.perf_counter() - started:.0f} s, "
          f"{size:.1f} MiB in {out}", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    ship(load_host(ModelSpec("bundled", device="cpu")))


if __name__ == "__main__":
    main()
