"""Attention panel benchmark: engine time and memory vs TransformerLens, and draw times.

Builds a random 12-layer x 12-head GPT-2 (n_ctx 1024) in a temporary folder and, for 128, 256,
512 and 1024 tokens, prints:
- run_attention time vs TransformerLens run_with_cache with the same names filter, and vs a
  full run_with_cache (what a notebook does), with the bytes each keeps;
- grid draw time (cold: pooling + mosaic + render; warm: e.g. a colour-scale change), and
  focused-head draw time (full resolution + render). Target: grid < 150 ms at 256 tokens.

Run: QT_QPA_PLATFORM=offscreen python -m bench.bench_attention [--sizes 128 256 512 1024]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _timed(fn, repeat: int = 3) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def measure(n, host, panel, app, rng, full_cache_max) -> dict:
    import numpy as np
    import torch

    from engine.attention import AttentionRequest, run_attention
    from engine.jobs import Context

    info = host.info
    ids = (0,) + tuple(int(i) for i in rng.integers(1, info.d_vocab, size=n - 1))
    request = AttentionRequest(token_ids=(ids,), labels=(f"{n} random tokens",))
    tokens = torch.tensor([ids])
    out: dict = {}
    holder = {}

    def engine():
        holder["result"] = None  # free the previous arrays first
        holder["result"] = run_attention(host, request, Context())

    def tl_filtered():
        with torch.inference_mode():
            host.model.run_with_cache(tokens, names_filter=lambda name: name.endswith("pattern"))

    # Interleaved, best of 3: the machine is shared, the minimum is the least disturbed run.
    e_times, t_times = [], []
    for _ in range(3):
        e_times.append(_timed(engine, repeat=1))
        t_times.append(_timed(tl_filtered, repeat=1))
    out["engine"], out["tl"] = min(e_times), min(t_times)
    result = holder["result"]
    out["mib"] = result.nbytes / 2**20
    out["full_mib"] = float("nan")
    if n <= full_cache_max:
        with torch.inference_mode():
            _, cache = host.model.run_with_cache(tokens)
        out["full_mib"] = sum(v.numel() * v.element_size() for v in cache.values()
                              if v is not None) / 2**20
        del cache
    # Numbers check while we are here: equal to TransformerLens's pattern.
    with torch.inference_mode():
        _, cache = host.model.run_with_cache(
            tokens, names_filter=lambda name: name == "blocks.11.attn.hook_pattern")
    assert np.array_equal(result.items[0].patterns[11], cache["pattern", 11][0].numpy())
    del cache

    panel.set_result(result)
    app.processEvents()

    def grid_cold():
        panel._pool_cache.clear()
        panel._draw_grid()
        panel.grid.graphics.grab()

    def grid_warm():
        panel._draw_grid()
        panel.grid.graphics.grab()

    counter = iter(range(10**6))

    def focused():
        k = next(counter)
        panel.set_head(k % 12, (k * 5) % 12)
        panel.focused.graphics.grab()

    def one_layer():
        panel._pool_cache.clear()
        panel.layer_combo.setCurrentIndex(1 + next(counter) % 12)
        panel.grid.graphics.grab()

    out["cold"] = _timed(grid_cold)
    out["warm"] = _timed(grid_warm)
    out["focused"] = _timed(focused)
    out["layer"] = _timed(one_layer)
    panel.layer_combo.setCurrentIndex(0)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[128, 256, 512, 1024])
    parser.add_argument("--full-cache-max", type=int, default=512,
                        help="compare with a full run_with_cache up to this many tokens")
    args = parser.parse_args()

    import numpy as np
    import torch
    from PySide6.QtWidgets import QApplication

    from engine.host import load_host
    from engine.model_sources import ModelSpec
    from tests.model_fixtures import make_gpt2_folder
    from widgets.attention_panel import AttentionPanel

    torch.set_num_threads(max(1, min(4, os.cpu_count() or 1)))
    app = QApplication.instance() or QApplication([])
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        folder = make_gpt2_folder(Path(tmp) / "gpt2_12x12", n_layer=12, n_head=12, n_embd=384,
                                  n_positions=1024, seed=0)
        host = load_host(ModelSpec("folder", str(folder), "cpu"))
        info = host.info
        print(f"model: {info.summary()} (built in {time.perf_counter() - t:.1f} s)")
        print(f"torch threads: {torch.get_num_threads()}; CPU: {os.cpu_count()} cores\n")
        panel = AttentionPanel()
        panel.resize(1400, 800)
        panel.show()
        app.processEvents()
        rng = np.random.default_rng(0)
        header = (f"{'tokens':>6} | {'engine s':>8} {'TL filt s':>9} {'ratio':>5} | "
                  f"{'patterns MiB':>12} {'full cache MiB':>14} | {'grid cold ms':>12} "
                  f"{'grid warm ms':>12} {'focused ms':>10} {'1 layer ms':>10}")
        print(header)
        print("-" * len(header))
        for n in args.sizes:
            row = measure(n, host, panel, app, rng, args.full_cache_max)
            print(f"{n:>6} | {row['engine']:>8.3f} {row['tl']:>9.3f} "
                  f"{row['engine'] / row['tl']:>5.2f} | {row['mib']:>12.1f} "
                  f"{row['full_mib']:>14.1f} | {row['cold'] * 1e3:>12.1f} "
                  f"{row['warm'] * 1e3:>12.1f} {row['focused'] * 1e3:>10.1f} "
                  f"{row['layer'] * 1e3:>10.1f}")
        print("\nratio = run_attention / TransformerLens run_with_cache(names_filter=pattern); "
              "patterns MiB = float32 [12, 12, n, n] kept by the panel; full cache MiB = a "
              "notebook's run_with_cache() without a filter (not run above "
              f"{args.full_cache_max} tokens).")
        print("grid cold = max-pool + mosaic + render; grid warm = redraw from cached pooling "
              "(colour/scale change); focused = one head at full resolution + render; "
              "1 layer = one layer's heads larger (cold).")
        panel.close()


if __name__ == "__main__":
    main()
