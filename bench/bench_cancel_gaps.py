"""Where each job goes longest without checking for Cancel: the audit behind bench_cancel.py.

    python bench/bench_cancel_gaps.py [--tokens 512] [--jobs predictions,sae] [--cap 6]

Runs every kind of job the app submits, as app/worker.py runs it (``engine.jobs.run_job``), on a
random-init 12-layer d768 GPT-2 (built in a temporary folder, no download) with a context that
records the time and place of each ``check_cancelled()``. Prints, per job, the longest stretch
between two checks (job start and end count as checks) and the code at both ends of it: a Cancel
waits at most that long. A job still running after ``--cap`` seconds is stopped there (the
stretches up to then are what is measured). SAE jobs use a random SAE (16x, d 768, ~2% density) at layer 6.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from engine.jobs import Cancelled, Context, run_job  # noqa: E402


def _place() -> str:
    """The innermost engine frame that checked (not engine/jobs.py itself)."""
    for frame in reversed(traceback.extract_stack()[:-2]):
        path = Path(frame.filename)
        if path.parent.name == "engine" and path.name != "jobs.py":
            return f"{path.name}:{frame.lineno}"
    return "?"


class GapContext(Context):
    """Records (time, place) at every check; stops the job ``cap`` seconds in."""

    def __init__(self, cap: float) -> None:
        super().__init__()
        self.cap = cap
        self.marks: list[tuple[float, str]] = [(time.perf_counter(), "start")]

    def check_cancelled(self) -> None:
        now = time.perf_counter()
        self.marks.append((now, _place()))
        if now - self.marks[0][0] > self.cap:
            raise Cancelled()


def longest_gap(fn, host, request, grad: bool, cap: float) -> tuple[float, str, float, int]:
    ctx = GapContext(cap)
    try:
        run_job(fn, host, request, ctx, grad)
        how = "done"
    except Cancelled:
        how = "capped"
    ctx.marks.append((time.perf_counter(), how))
    gaps = [(b[0] - a[0], f"{a[1]} -> {b[1]}") for a, b in zip(ctx.marks[:-1], ctx.marks[1:], strict=True)]
    gap, where = max(gaps)
    return gap, where, ctx.marks[-1][0] - ctx.marks[0][0], len(ctx.marks) - 2


def sae_folder(host, tmp: Path, hook: str, expansion: int = 16) -> Path:
    """A random SAE at ``hook`` whose features fire on ~2% of tokens, as trained ones do (each
    encoder bias is minus its feature's 98th percentile on a sample of text)."""
    import torch

    from engine.sae import SAEConfig, SparseAutoencoder
    from engine.sae_io import save_sae
    from engine.sae_splice import activations

    d_in = host.info.d_model
    gen = torch.Generator().manual_seed(0)
    d_sae = d_in * expansion
    w_dec = torch.randn(d_sae, d_in, generator=gen)
    w_dec = w_dec / w_dec.norm(dim=-1, keepdim=True)
    tokens = torch.randint(0, host.info.d_vocab, (4, 128), generator=gen)
    with torch.inference_mode():
        pre = activations(host.model, tokens, hook).reshape(-1, d_in).float() @ w_dec.T
    weights = {"W_enc": w_dec.T.clone(), "b_enc": -pre.quantile(0.98, dim=0),
               "W_dec": w_dec, "b_dec": torch.zeros(d_in)}
    return save_sae(SparseAutoencoder(SAEConfig(d_in, d_sae, hook), weights),
                    tmp / f"sae{expansion}x")


def jobs(host, pair, prompt: str, tmp: Path):
    from bench_cancel import jobs as analysis_jobs

    from engine.patch_pairs import PairCheckRequest, check_pairs
    from engine.patch_plan import PlanItem, PlanRequest, run_plan
    from engine.sae_attribution import FeatureAttributionRequest, run_feature_attribution
    from engine.sae_features import DashboardRequest, run_dashboards
    from engine.sae_prompt import (
        InterventionRequest,
        PromptFeaturesRequest,
        SAELoadRequest,
        run_intervention,
        run_load_sae,
        run_prompt_features,
    )
    from engine.sae_splice import FeatureEdit
    from engine.sae_train import TrainRequest, TrainSliceRequest, run_train_slice
    from engine.targets import Target

    out = list(analysis_jobs(host, pair, prompt))
    out.insert(0, ("pair check", check_pairs, PairCheckRequest((pair,)), False))
    sae = str(sae_folder(host, tmp, "blocks.6.hook_resid_pre"))
    train = TrainRequest(hook_name="blocks.6.hook_resid_pre", out_folder=str(tmp / "trained"),
                         n_tokens=200_000)
    out += [
        ("sae: load", run_load_sae, SAELoadRequest(sae), False),
        ("sae: prompt features", run_prompt_features, PromptFeaturesRequest(prompt, sae), False),
        ("sae: feature attribution", run_feature_attribution,
         FeatureAttributionRequest(prompt, sae, Target(" the")), False),
        ("sae: intervention", run_intervention,
         InterventionRequest(prompt, sae, (FeatureEdit(3, "clamp", 10.0),)), False),
        ("sae: feature plan", run_plan,
         PlanRequest((pair,), (PlanItem("feature", 6, 3, sae=sae),), "logit_diff"), False),
        ("sae: dashboards", run_dashboards, DashboardRequest(sae, n_tokens=100_000), False),
        ("sae: training slice (first)", run_train_slice, TrainSliceRequest(train, 1, 3.0),
         False),
        ("sae: training slice (next)", run_train_slice, TrainSliceRequest(train, 1, 3.0),
         False),
    ]
    return out


def main() -> None:
    import torch
    from bench_patching import pair_of_length

    from engine.host import load_host
    from engine.model_sources import ModelSpec
    from tests.model_fixtures import make_gpt2_folder

    ap = argparse.ArgumentParser()
    ap.add_argument("--tokens", type=int, default=512)
    ap.add_argument("--jobs", default="", help="comma-separated name prefixes (default: all)")
    ap.add_argument("--cap", type=float, default=6.0)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench_cancel_gaps_"))
    folder = make_gpt2_folder(tmp / "gpt2", 12, 12, 768, max(1024, args.tokens), 0)
    host = load_host(ModelSpec("folder", str(folder), args.device))
    pair = pair_of_length(host, args.tokens, "first")
    wanted = [w for w in args.jobs.split(",") if w]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; 12L d768 GPT-2; "
          f"{args.tokens} tokens; capped at {args.cap:g} s")
    print(f"{'job':30s} {'longest':>8s} {'run':>7s} {'checks':>7s}  between")
    for name, fn, request, grad in jobs(host, pair, pair.clean, tmp):
        if wanted and not any(name.startswith(w) for w in wanted):
            continue
        gap, where, ran, n = longest_gap(fn, host, request, grad, args.cap)
        print(f"{name:30s} {gap * 1000:6.0f}ms {ran:6.2f}s {n:7d}  {where}"
              + ("  OVER 1 s" if gap > 1.0 else ""), flush=True)


if __name__ == "__main__":
    main()
