"""Batched activation patching vs TransformerLens's own patching functions, in one process.

    python bench/bench_patching.py [--device cpu|cuda] [--skip-long] [--memory]

Prints, per model: path patching from one sender head against ``get_act_patch_direct_path``, the
head sweep (layer x head, all positions) against
``get_act_patch_attn_head_out_all_pos`` and the block sweep (resid_pre / attn_out / mlp_out by
layer x position) against ``get_act_patch_block_every``, their ratios, and the largest difference
between the two (they must agree within 1e-4). ``--memory`` runs a 1024-token prompt on a 12-layer
model in a child process and reports its peak memory with the default 512 MiB chunk budget.
"""

from __future__ import annotations

import argparse
import atexit
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import torch  # noqa: E402

from engine.host import load_host  # noqa: E402
from engine.jobs import Context  # noqa: E402
from engine.model_sources import BUNDLED_DIR, ModelSpec  # noqa: E402
from engine.patching import Metric, PromptPair, SweepRequest, prepare_pairs, run_sweep  # noqa: E402
from engine.path_patching import PathPatchRequest, run_path_patching  # noqa: E402

WORDS = " the cat sat on a mat and then the dog ran to the park with John and Mary".split()


def pair_of_length(host, n_tokens: int, where: str = "last") -> PromptPair:
    """A clean/corrupted pair of exactly ``n_tokens`` tokens (BOS included) for any tokenizer,
    differing in one name (" John" / " Mary") placed ``where``: "first" (right after BOS),
    "middle" or "last". Patched runs only need recomputing from the differing position on, so the
    three regimes bracket what the batched sweeps gain."""
    def count(text: str) -> int:
        return int(host.model.to_tokens(text, truncate=False).shape[-1])

    def build(n_words: int, name: str) -> str:
        words = [WORDS[i % len(WORDS)] for i in range(n_words)]
        k = {"first": 0, "middle": n_words // 2, "last": n_words}[where]
        return " " + " ".join(words[:k] + [name.strip()] + words[k:])

    lo, hi = 0, 4 * n_tokens  # most words are at least one token: bisect the word count
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if count(build(mid, " John")) <= n_tokens:
            lo = mid
        else:
            hi = mid - 1
    clean, corrupted = build(lo, " John"), build(lo, " Mary")
    while count(clean) < n_tokens:
        clean, corrupted = clean + ".", corrupted + "."
    if count(clean) != count(corrupted) or count(clean) != n_tokens:
        raise SystemExit(f"could not build a {n_tokens}-token pair ({where}) for this tokenizer")
    answers = [t for t in (" Mary", " John", " the", " a") if
               host.model.to_tokens(t, prepend_bos=False).shape[-1] == 1]
    return PromptPair(clean, corrupted, answers[0], answers[1])


REPEATS = [1]  # set from --repeats: the best of N runs, for both sides alike
WHERE = ["last", "middle", "first"]


def timed(fn, repeats: int | None = None):
    """(result, best wall time of ``repeats`` runs): the machine may be shared and noisy."""
    best, out = float("inf"), None
    for _ in range(repeats or REPEATS[0]):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        out = fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t0)
    return out, best


@torch.inference_mode()
def bench_model(host, label: str, n_tokens: int, skip_long: bool,
                max_tl_forwards: int = 300) -> None:
    for where in WHERE:
        bench_pair(host, label, pair_of_length(host, n_tokens, where), where, skip_long,
                   max_tl_forwards)


@torch.inference_mode()
def bench_pair(host, label: str, pair: PromptPair, where: str, skip_long: bool,
               max_tl_forwards: int) -> None:
    from transformer_lens import patching as tlp

    pb = prepare_pairs(host, (pair,))
    metric = Metric("logit_diff_norm", pb)
    rows = torch.arange(1, device=host.device)
    model = host.model
    clean_logits, clean_cache = model.run_with_cache(pb.clean)
    corr_logits = model(pb.corrupted)
    metric.set_baselines(clean_logits[rows, pb.positions], corr_logits[rows, pb.positions])
    fn = metric.full_logits_fn()
    n = int(pb.clean.shape[-1])
    first = int((pb.clean != pb.corrupted).nonzero()[0, 1])
    print(f"\n== {label}: {host.info.n_layers}L x {host.info.n_heads}H, d_model "
          f"{host.info.d_model}, {n} tokens, {host.device}; the prompts differ at position "
          f"{first} ({where}) ==")
    # Warm up both paths once (allocator, lazy init).
    run_sweep(host, SweepRequest((pair,), "head_out"), Context())

    ours, t_ours = timed(lambda: run_sweep(host, SweepRequest((pair,), "head_out"), Context()))
    ref, t_tl = timed(lambda: tlp.get_act_patch_attn_head_out_all_pos(model, pb.corrupted,
                                                                       clean_cache, fn))
    diff = float((torch.as_tensor(ours.values) - ref.cpu()).abs().max())
    print(f"head sweep (layer x head, all pos): ours {t_ours:.2f}s ({ours.chunk_size} variants "
          f"per forward)  TL {t_tl:.2f}s  ratio {t_tl / t_ours:.1f}x  max|diff| {diff:.1e}")
    rate = gemm_rate(host.info.d_model, host.info.d_mlp) if str(host.device) == "cpu" else 0.0
    print_bound("head sweep", lambda: run_sweep(host, SweepRequest((pair,), "head_out"),
                                                Context()), t_ours, t_tl, rate)

    # Path patching from L0H0 into every later head's q: batched vs one forward per receiver.
    corr_cache = model.run_with_cache(pb.corrupted)[1]
    path, t_path = timed(lambda: run_path_patching(
        host, PathPatchRequest((pair,), ((0, 0),), "q"), Context()))
    ref_p, t_tl_p = timed(lambda: tlp.get_act_patch_direct_path(
        model, pb.corrupted, clean_cache, corr_cache, fn, 0, 0, component="q", verbose=False))
    diff_p = float((torch.as_tensor(path.receivers[1:]) - ref_p[1:].cpu()).abs().max())
    print(f"path patching L0H0 -> later heads' q: ours {t_path:.2f}s ({path.forwards} forwards)  "
          f"TL get_act_patch_direct_path {t_tl_p:.2f}s  ratio {t_tl_p / t_path:.1f}x  "
          f"max|diff| {diff_p:.1e}")

    def block():
        return run_sweep(host, SweepRequest((pair,), "block"), Context()).values

    ours_b, t_ours_b = timed(block)
    n_tl_forwards = 3 * host.info.n_layers * n
    if skip_long or n_tl_forwards > max_tl_forwards:
        per = t_tl / (host.info.n_layers * host.info.n_heads)
        est = per * 3 * host.info.n_layers * n
        print(f"block sweep (3 x layer x pos): ours {t_ours_b:.2f}s  TL not run ({n_tl_forwards} forwards > "
              f"--tl-block-max-forwards), "
              f"estimated {est:.1f}s from TL's per-forward time  ratio ~{est / t_ours_b:.1f}x")
        print_bound("block sweep", block, t_ours_b, est, rate)
        return
    ref_b, t_tl_b = timed(lambda: tlp.get_act_patch_block_every(model, pb.corrupted,
                                                                clean_cache, fn))
    diff_b = float((torch.as_tensor(ours_b) - ref_b.cpu()).abs().max())
    print(f"block sweep (3 x layer x pos): ours {t_ours_b:.2f}s  TL {t_tl_b:.2f}s  ratio "
          f"{t_tl_b / t_ours_b:.1f}x  max|diff| {diff_b:.1e}")


def print_bound(label: str, run, t_ours: float, t_tl: float, rate: float) -> None:
    """The sweep's matrix-product FLOPs (counted in one more run) and their time at this
    machine's GEMM rate: no exact computation of these cells by this algorithm beats that bound,
    so TransformerLens's time over it is the highest ratio this machine allows."""
    if not rate:
        return
    from engine.dense import counting

    with counting() as flops:
        run()
    bound = flops.total / rate / 1e9
    if bound < 0.05:  # a few milliseconds: overhead, not matrix products, sets the time
        return
    print(f"  {label} bound: {flops.dense / 1e9:.0f} GFLOP dense + {flops.attention / 1e9:.0f} "
          f"attention at {rate:.0f} GFLOP/s = {bound:.2f}s; ours / bound {t_ours / bound:.2f}x; "
          f"TL / bound (the highest ratio possible here) {t_tl / bound:.1f}x")


def memory_child(folder: str, device: str) -> None:
    """Run in a fresh process: sweeps on a 1024-token prompt; print peak memory as JSON."""
    host = load_host(ModelSpec("folder", folder, device))
    pair = pair_of_length(host, 1024, "first")  # the worst case: every position recomputed
    out = {}
    rss = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # noqa: E731 (MiB)
    out["rss_after_load_mib"] = round(rss(), 1)
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    with torch.inference_mode():  # the yardstick: one plain forward of the 1024-token prompt
        host.model(host.model.to_tokens(pair.clean))
    out["peak_after_one_plain_forward_mib"] = round(rss(), 1)
    if device == "cuda":
        out["cuda_peak_one_forward_mib"] = torch.cuda.max_memory_allocated() / 2**20
        torch.cuda.reset_peak_memory_stats()

    class StopAfter(Context):  # full sweeps at 1024 tokens take long on a CPU: sample 3 chunks
        def __init__(self) -> None:
            super().__init__()
            self.n = 0

        def progress(self, fraction, message=""):
            if message.startswith("Patched"):
                self.n += 1
                if self.n >= 3:
                    self.cancel()

    for kind in ("head_out", "resid_pre"):
        t0 = time.perf_counter()
        ctx = StopAfter()
        try:
            r = run_sweep(host, SweepRequest((pair,), kind), ctx)
            out[kind] = f"complete, {r.chunk_size} variants per chunk"
        except Exception as exc:  # noqa: BLE001 - the planned cancel
            out[kind] = f"stopped after 3 chunks ({type(exc).__name__}: {exc})"
        out[kind + "_s"] = round(time.perf_counter() - t0, 2)
    out["peak_after_sweeps_mib"] = round(rss(), 1)
    if device == "cuda":
        out["cuda_peak_mib"] = torch.cuda.max_memory_allocated() / 2**20
    print("MEMORY " + json.dumps(out))


def gemm_rate(d_model: int, d_mlp: int, rows: int = 4096, repeats: int = 15) -> float:
    """GFLOP/s of the engine's dense layers on a sweep's shapes on this machine (lower quartile
    of ``repeats``): the MLP's two products with ``rows`` variant-positions, packed weights."""
    from engine.dense import linear, pack

    g = torch.Generator().manual_seed(0)
    x = torch.randn(rows, d_model, generator=g)
    w_in = torch.randn(d_model, d_mlp, generator=g) / d_model ** 0.5
    w_out = torch.randn(d_mlp, d_model, generator=g) / d_mlp ** 0.5
    owner = torch.nn.Module()
    a, b = pack(owner, "in", (w_in,), lambda: w_in.t()), pack(owner, "out", (w_out,),
                                                            lambda: w_out.t())
    times = []
    with torch.inference_mode():
        for _ in range(repeats + 1):
            t0 = time.perf_counter()
            linear(linear(x, a, None, "gelu_new"), b, None)
            times.append(time.perf_counter() - t0)
    times = sorted(times[1:])
    return 2 * 2 * rows * d_model * d_mlp / times[len(times) // 4] / 1e9


def long_child(folder: str, n_tokens: int, device: str, tl_forwards: int) -> None:
    """In a fresh process (its peak memory is this row's): the head sweep at ``n_tokens`` with
    prompts that differ at their first token, its matrix-product FLOPs and their time at this
    machine's GEMM rate (the bound), peak memory over one plain forward, and TransformerLens's
    per-forward time. Prints one JSON line."""
    from transformer_lens import patching as tlp

    from engine.dense import counting

    host = load_host(ModelSpec("folder", folder, device))
    pair = pair_of_length(host, n_tokens, "first")
    rss = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # noqa: E731 (MiB)
    pb = prepare_pairs(host, (pair,))
    model = host.model
    with torch.inference_mode():
        model(pb.corrupted)
    plain_peak = rss()
    request = SweepRequest((pair,), "head_out")
    run_sweep(host, SweepRequest((pair,), "head_out", only=(0,)), Context())  # checks, packing
    with counting() as flops:
        t0 = time.perf_counter()
        ours = run_sweep(host, request, Context())
        t_ours = time.perf_counter() - t0
    peak = rss()
    from engine.dense import _packs

    packed = sum(t.numel() * t.element_size() for _sig, t in _packs.get(model, {}).values())
    info = host.info
    rate = gemm_rate(info.d_model, info.d_mlp)
    out = {"tokens": n_tokens, "ours_s": round(t_ours, 2), "chunk": ours.chunk_size,
           "gflop_dense": round(flops.dense / 1e9, 1),
           "gflop_attention": round(flops.attention / 1e9, 1), "gemm_gflops": round(rate, 1),
           "bound_s": round(flops.total / rate / 1e9, 2),
           "peak_over_plain_forward_mib": round(peak - plain_peak, 1),
           "packed_weights_mib": round(packed / 2**20, 1), "path": ours.path}
    metric = Metric("logit_diff_norm", pb)
    rows = torch.arange(1)
    with torch.inference_mode():
        clean_logits, clean_cache = model.run_with_cache(pb.clean)
        corr_logits = model(pb.corrupted)
        metric.set_baselines(clean_logits[rows, pb.positions], corr_logits[rows, pb.positions])
        hook = ("blocks.6.attn.hook_z", lambda z, hook: z)
        model.run_with_hooks(pb.corrupted, fwd_hooks=[hook])
        times = []
        for _ in range(3):
            t0 = time.perf_counter()
            model.run_with_hooks(pb.corrupted, fwd_hooks=[hook])
            times.append(time.perf_counter() - t0)
        per = sorted(times)[1]
        cells = info.n_layers * info.n_heads
        out["tl_per_forward_s"] = round(per, 3)
        if tl_forwards >= cells:  # TransformerLens's own sweep, in full
            t0 = time.perf_counter()
            ref = tlp.get_act_patch_attn_head_out_all_pos(model, pb.corrupted, clean_cache,
                                                          metric.full_logits_fn())
            out["tl_s"] = round(time.perf_counter() - t0, 2)
            out["max_diff"] = float((torch.as_tensor(ours.values) - ref).abs().max())
        else:
            out["tl_s_estimated"] = round(per * cells, 1)
    print("LONG " + json.dumps(out))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--skip-long", action="store_true", help="don't run TL's block sweep")
    ap.add_argument("--memory", action="store_true")
    ap.add_argument("--repeats", type=int, default=3, help="best of N, both sides (bundled)")
    ap.add_argument("--repeats-big", type=int, default=1, help="best of N on the 12-layer model")
    ap.add_argument("--only", choices=["bundled", "big"], default=None)
    ap.add_argument("--tl-block-max-forwards", type=int, default=1000,
                    help="estimate TL's block sweep from its per-forward time above this")
    ap.add_argument("--arch", default="gpt2",
                    help="comma-separated 12-layer shapes: gpt2, gpt_neox (Pythia), llama (GQA "
                         "12/4, SwiGLU)")
    ap.add_argument("--where", default="last,middle,first",
                    help="where the prompts differ: any of last, middle, first")
    ap.add_argument("--tokens", type=int, default=20)
    ap.add_argument("--long", default="",
                    help="comma-separated prompt lengths (e.g. 128,512,1024): the 12-layer GPT-2 "
                         "head sweep there, prompts differing at the first token, with its FLOP "
                         "bound and peak memory (one child process each)")
    ap.add_argument("--long-tl-forwards", type=int, default=144,
                    help="run TransformerLens's sweep in full up to this many forwards, else "
                         "estimate it from its per-forward time")
    ap.add_argument("--long-child", default="")
    ap.add_argument("--memory-child", default="")
    args = ap.parse_args()
    if args.memory_child:
        memory_child(args.memory_child, args.device)
        return
    if args.long_child:
        long_child(args.long_child, args.tokens, args.device, args.long_tl_forwards)
        return
    from tests.model_fixtures import make_gpt2_folder

    tmp = Path(tempfile.mkdtemp(prefix="bench_patching_"))
    atexit.register(shutil.rmtree, tmp, True)  # its 12-layer model folders take about 1 GB
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}; times are the best of "
          f"{args.repeats} runs (bundled) / {args.repeats_big} (12-layer), for both sides")
    REPEATS[0] = args.repeats
    if args.only == "big":
        pass
    elif (BUNDLED_DIR / "config.json").is_file():
        bench_model(load_host(ModelSpec("bundled", device=args.device)), "bundled model", 20,
                    args.skip_long, args.tl_block_max_forwards)
    else:
        print(f"\n(bundled model not built at {BUNDLED_DIR}: skipped)")
    if args.only == "bundled":
        return
    REPEATS[0] = args.repeats_big
    WHERE[:] = args.where.split(",")
    from tests.model_matrix import BENCH_SHAPES, make_family_folder

    names = {"gpt2": "random GPT-2 12L", "gpt_neox": "random Pythia-shaped 12L",
             "llama": "random Llama-shaped 12L (GQA 12/4, SwiGLU)"}
    big = None
    for arch in [a for a in args.arch.split(",") if a]:  # --arch "" with --long: long rows only
        if arch == "gpt2":
            folder = big = make_gpt2_folder(tmp / "gpt2_12L", 12, 12, 768, 1024, 0)
        else:
            folder = make_family_folder(arch, tmp / arch, config=BENCH_SHAPES[arch], scale=1.0)
        bench_model(load_host(ModelSpec("folder", str(folder), args.device)),
                    names[arch], args.tokens, args.skip_long, args.tl_block_max_forwards)
    if args.long:
        folder = big or make_gpt2_folder(tmp / "gpt2_12L", 12, 12, 768, 1024, 0)
        print("\n== long prompts: 12-layer GPT-2 head sweep, prompts differing at the first "
              "token; bound = matrix-product FLOPs / this machine's GEMM rate ==")
        for n in [int(x) for x in args.long.split(",")]:
            res = subprocess.run([sys.executable, __file__, "--long-child", str(folder),
                                  "--tokens", str(n), "--device", args.device,
                                  "--long-tl-forwards", str(args.long_tl_forwards)],
                                 capture_output=True, text=True)
            line = [x for x in res.stdout.splitlines() if x.startswith("LONG ")]
            if not line:
                print(res.stdout[-2000:] + res.stderr[-3000:])
                continue
            row = json.loads(line[0][5:])
            tl = row.get("tl_s", row.get("tl_s_estimated"))
            est = "" if "tl_s" in row else " (estimated from its per-forward time)"
            print(f"{n:>5} tokens: ours {row['ours_s']:.1f}s, bound {row['bound_s']:.1f}s "
                  f"({row['gflop_dense']:.0f} GFLOP dense + {row['gflop_attention']:.0f} attention "
                  f"at {row['gemm_gflops']:.0f} GFLOP/s) = {row['ours_s'] / row['bound_s']:.2f}x "
                  f"the bound; TL {tl:.1f}s{est} = {tl / row['ours_s']:.1f}x; "
                  f"{row['chunk']} variants per forward; peak +{row['peak_over_plain_forward_mib']:.0f} "
                  f"MiB over a plain forward, of which {row['packed_weights_mib']:.0f} MiB packed "
                  f"weights" + (f"; max|diff| {row['max_diff']:.1e}"
                                                 if "max_diff" in row else ""))
    if args.memory and big is not None:
        res = subprocess.run([sys.executable, __file__, "--memory-child", str(big),
                              "--device", args.device], capture_output=True, text=True)
        line = [x for x in res.stdout.splitlines() if x.startswith("MEMORY ")]
        print("\n== 1024-token prompt, 12 layers, 512 MiB chunk budget ==")
        print(line[0][7:] if line else res.stdout[-2000:] + res.stderr[-2000:])


if __name__ == "__main__":
    main()
