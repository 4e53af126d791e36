"""Saving and opening a session that holds large results (app.session_results + app.session_io).

    python -m bench.bench_session [--tokens 512] [--layers 12] [--heads 12] [--repeats 5]

The results are what a 12-layer model at 512 tokens leaves in the panels after a study: the block
sweep (resid_pre / attn_out / mlp_out x layer x position), a head x position sweep and its
attribution-patching estimate, path patching, the predictions of the 512-token prompt (top 10 at
every position, with their token strings), the attribution of that prompt and an induction scan.
Shapes and strings are real sizes; values are random (the codec does not look at them). Saving is
what File > Save does after gathering the panels' results: encode to tagged JSON plus arrays, write
through QSaveFile; opening is what File > Open does before the panels draw: read and check the
file, decode the results into the engine's result classes. Best of ``--repeats``.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def results(n_layers: int, n_heads: int, t: int, seed: int = 0) -> dict:
    from engine.attribution import AttributionResult
    from engine.induction import InductionResult
    from engine.patching import SweepResult
    from engine.path_patching import PathPatchResult
    from engine.prompt_result import PromptResult

    rng = np.random.default_rng(seed)
    words = [f" w{i}" for i in range(50_000)]
    toks = tuple(words[i] for i in rng.integers(0, len(words), t))

    def f32(*shape):
        return rng.standard_normal(shape).astype(np.float32)

    def sweep(kind, axes, shape, estimate=False):
        return SweepResult(kind, "logit_diff_norm", "denoise", axes, f32(*shape),
                           int(np.prod(shape)), int(np.prod(shape)), 1.0, 0.0, toks, toks,
                           12.5, 64, True, {"estimate": estimate,
                                            "components": ("resid_pre", "attn_out", "mlp_out")},
                           "suffix 100%")

    k = 10
    prompt = PromptResult("x" * 3000, toks, rng.integers(0, 50_000, t),
                          rng.integers(0, 50_000, (t, k)),
                          tuple(tuple(words[i] for i in row)
                                for row in rng.integers(0, 50_000, (t, k))),
                          f32(t, k), f32(t - 1))
    e = 2 * n_layers + 1
    attribution = AttributionResult(
        ("x" * 3000,), (toks,), np.array([t - 1]), (" a",), (" b",), np.array([1]),
        np.array([2]), True, n_layers, n_heads,
        tuple(f"{i}_pre" for i in range(e)), f32(1, e), f32(1, e),
        rng.integers(0, 100, (1, e)), rng.integers(0, 100, (1, e)),
        rng.integers(0, 50_000, (1, e, 5)), ((tuple(words[:5]),) * e,), f32(1, e, 5),
        tuple(f"{i}_attn_out" for i in range(2 * n_layers + 2)), f32(1, 2 * n_layers + 2),
        f32(1, n_layers, n_heads), f32(1), f32(1), f32(1))
    scores = {name: f32(n_layers, n_heads) for name in
              ("previous", "duplicate", "induction", "induction_detector", "current", "first")}
    induction = InductionResult(n_layers, n_heads, 50, 10, 0, True, "all",
                                rng.integers(0, 50_000, (10, 101)), tuple(words[:101]), scores,
                                dict(scores), toks, rng.integers(0, 50_000, t), f32(100), f32(100),
                                7.0, 0.5)
    path = PathPatchResult(((0, 0),), "q", f32(n_layers, n_heads), 0.1, 1.0, 0.0,
                           "logit_diff_norm", 3.0)
    return {
        "predictionsDock": {"prompt": prompt},
        "attributionDock": {"attribution": attribution},
        "inductionDock": {"scan": induction},
        "patchingDock": {
            "exact": sweep("block", ("component", "layer", "pos"), (3, n_layers, t)),
            "by_pos": sweep("head_out_by_pos", ("layer", "head", "pos"), (n_layers, n_heads, t)),
            "estimate": sweep("head_out_by_pos", ("layer", "head", "pos"),
                              (n_layers, n_heads, t), estimate=True),
            "path": path, "view": "exact"},
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--tokens", type=int, default=512)
    p.add_argument("--layers", type=int, default=12)
    p.add_argument("--heads", type=int, default=12)
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args()
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    from PySide6.QtCore import QCoreApplication

    from app.session_io import load_session, save_session
    from app.session_results import decode, encode

    _app = QCoreApplication.instance() or QCoreApplication([])  # noqa: F841 (QSaveFile)
    panels = results(args.layers, args.heads, args.tokens)
    path = Path(tempfile.mkdtemp()) / "study.lensbench"
    save_times, open_times = [], []
    for _ in range(args.repeats):
        start = time.perf_counter()
        arrays: dict = {}
        encoded = {name: {k: encode(v, arrays, f"r{i}.") for k, v in res.items()}
                   for i, (name, res) in enumerate(panels.items())}
        save_session(path, {"prompt": "x", "results": {"format": 1, "panels": encoded}}, arrays)
        save_times.append(time.perf_counter() - start)
        start = time.perf_counter()
        manifest, loaded = load_session(path)
        back = {name: {k: decode(v, loaded) for k, v in res.items()}
                for name, res in manifest["results"]["panels"].items()}
        open_times.append(time.perf_counter() - start)
    assert back["patchingDock"]["exact"].values.tobytes() == \
        panels["patchingDock"]["exact"].values.tobytes()
    size = path.stat().st_size
    print(f"{args.layers}-layer model, {args.tokens} tokens: {len(arrays)} arrays, "
          f"file {size / 2**20:.1f} MiB")
    print(f"save (encode + write): best {min(save_times) * 1000:.0f} ms, "
          f"median {sorted(save_times)[len(save_times) // 2] * 1000:.0f} ms")
    print(f"open (read + check + decode): best {min(open_times) * 1000:.0f} ms, "
          f"median {sorted(open_times)[len(open_times) // 2] * 1000:.0f} ms")


if __name__ == "__main__":
    main()
