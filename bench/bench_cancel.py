"""How long Cancel takes to stop each kind of job, as the app's worker runs it.

    python bench/bench_cancel.py [--tokens 512] [--arch gpt2,gpt_neox,llama] [--delays 0.3,1.5]

On a random-init 12-layer d768 model (built in a temporary folder, no download), each job runs in
a thread through ``engine.jobs.run_job`` (what app/worker.py calls: every block of every forward
checks for cancel); after each delay the context is cancelled and the time until the job raises
``Cancelled`` is printed, the largest over the delays, against the 1 s target. A job that ends
before the delay says so (it is shorter than the delay: nothing to cancel).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from engine.jobs import Cancelled, Context, run_job  # noqa: E402


def jobs(host, pair, prompt: str):
    from engine.attention import AttentionRequest, run_attention
    from engine.attribution import AttributionRequest, run_attribution
    from engine.attribution_patching import AttributionPatchRequest, run_attribution_patching
    from engine.induction import (
        AblationRequest,
        InductionRequest,
        run_induction_ablation,
        run_induction_scan,
    )
    from engine.patch_plan import PlanItem, PlanRequest, run_plan
    from engine.patching import SweepRequest, run_sweep
    from engine.path_patching import PathPatchRequest, run_path_patching
    from engine.prompt import PromptRequest, run_prompt

    pairs = (pair,)
    seq = host.info.n_ctx // 2 - 1
    return [
        ("predictions", run_prompt, PromptRequest(prompt=prompt), False),
        ("attention (every head)", run_attention, AttentionRequest(prompts=(prompt,)), False),
        ("attribution (logit lens, DLA)", run_attribution,
         AttributionRequest.single(prompt, " the"), False),
        ("head sweep", run_sweep, SweepRequest(pairs, "head_out"), False),
        ("block sweep", run_sweep, SweepRequest(pairs, "block"), False),
        ("head x position sweep", run_sweep, SweepRequest(pairs, "head_out_by_pos"), False),
        ("attribution patching", run_attribution_patching,
         AttributionPatchRequest(pairs, "head_out", "logit_diff"), True),
        ("path patching", run_path_patching, PathPatchRequest(pairs, ((0, 0),), "q"), False),
        ("patch plan", run_plan, PlanRequest(pairs, (PlanItem("z", 3, 1), PlanItem("mlp_out", 5)),
                                             "logit_diff"), False),
        ("induction scan", run_induction_scan,
         InductionRequest(seq_len=min(seq, 200), batch=10, prompt=prompt), False),
        ("induction ablation", run_induction_ablation,
         AblationRequest(heads=((1, 1),), seq_len=min(seq, 200), batch=10), False),
    ]


def latency(host, fn, request, grad: bool, delay: float) -> float | None:
    """Seconds from cancel() to Cancelled; None when the job ended before ``delay``."""
    ctx = Context()
    out: dict = {}

    def target():
        try:
            run_job(fn, host, request, ctx, grad)
            out["end"] = time.perf_counter()
        except Cancelled:
            out["cancelled"] = time.perf_counter()
        except BaseException as exc:  # noqa: BLE001 - reported
            out["error"] = exc

    thread = threading.Thread(target=target)
    thread.start()
    thread.join(delay)
    if not thread.is_alive():
        if "error" in out:
            raise out["error"]
        return None
    t0 = time.perf_counter()
    ctx.cancel()
    thread.join()
    if "error" in out:
        raise out["error"]
    return out.get("cancelled", out.get("end", t0)) - t0


def sae_jobs(tmp: Path, delays: list[float], device: str) -> float:
    """Feature dashboards over the bundled corpus and one training slice, bundled model."""
    from engine.host import load_host
    from engine.model_sources import ModelSpec
    from engine.sae_features import DashboardRequest, run_dashboards
    from engine.sae_train import TrainRequest, TrainSliceRequest, run_train_slice

    host = load_host(ModelSpec("bundled", device=device))
    sae = next((ROOT / "resources" / "saes").iterdir())
    print(f"\n== SAE jobs: bundled model, {sae.name} ==")
    worst_all = 0.0
    train = TrainRequest(hook_name="blocks.3.hook_resid_pre", out_folder=str(tmp / "sae"))
    for name, fn, request in (
            ("feature dashboards, 200k tokens", run_dashboards,
             DashboardRequest(str(sae), n_tokens=200_000)),
            ("SAE training slice (1 s)", run_train_slice,
             TrainSliceRequest(train, run_id=1, seconds=1.0))):
        times = [t for t in (latency(host, fn, request, False, d) for d in delays)
                 if t is not None]
        if not times:
            print(f"{name:32s} ended before {delays[0]:g} s: nothing to cancel")
            continue
        worst_all = max(worst_all, max(times))
        print(f"{name:32s} {max(times) * 1000:7.0f} ms  "
              f"{'PASS' if max(times) <= 1.0 else 'FAIL'}")
    return worst_all


def main() -> None:
    import torch
    from bench_patching import pair_of_length

    from engine.host import load_host
    from engine.model_sources import ModelSpec
    from tests.model_fixtures import make_gpt2_folder
    from tests.model_matrix import BENCH_SHAPES, make_family_folder

    ap = argparse.ArgumentParser()
    ap.add_argument("--tokens", type=int, default=512)
    ap.add_argument("--arch", default="gpt2")
    ap.add_argument("--delays", default="0.3,1.5")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--sae", action="store_true",
                    help="also the SAE jobs, on the bundled model and its SAE")
    args = ap.parse_args()
    delays = [float(d) for d in args.delays.split(",")]
    tmp = Path(tempfile.mkdtemp(prefix="bench_cancel_"))
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; {args.tokens} tokens; "
          f"cancel after {', '.join(f'{d:g}' for d in delays)} s; worst latency per job")
    worst_all = 0.0
    for arch in [a for a in args.arch.split(",") if a]:
        if arch == "gpt2":
            folder = make_gpt2_folder(tmp / "gpt2", 12, 12, 768, max(1024, args.tokens), 0)
        else:
            folder = make_family_folder(arch, tmp / arch, config=BENCH_SHAPES[arch], scale=1.0)
        host = load_host(ModelSpec("folder", str(folder), args.device))
        pair = pair_of_length(host, args.tokens, "first")
        prompt = pair.clean
        print(f"\n== {arch}: {host.info.n_layers}L x {host.info.n_heads}H, d_model "
              f"{host.info.d_model} ==")
        for name, fn, request, grad in jobs(host, pair, prompt):
            times = [latency(host, fn, request, grad, d) for d in delays]
            measured = [t for t in times if t is not None]
            if not measured:
                print(f"{name:32s} ended before {delays[0]:g} s: nothing to cancel")
                continue
            worst = max(measured)
            worst_all = max(worst_all, worst)
            print(f"{name:32s} {worst * 1000:7.0f} ms  {'PASS' if worst <= 1.0 else 'FAIL'}"
                  + ("" if len(measured) == len(times) else
                     f"  (ended before {delays[len(measured)]:g} s once)"))
    if args.sae:
        worst_all = max(worst_all, sae_jobs(tmp, delays, args.device))
    print(f"\nworst: {worst_all * 1000:.0f} ms ({'within' if worst_all <= 1 else 'over'} 1 s)")


if __name__ == "__main__":
    main()
