"""The dense layers of patched sweeps: PyTorch's ``addmm`` against ``engine.dense.linear``.

    python bench/bench_gemm.py [--rows 228,2508] [--repeats 30]

For GPT-2-small shapes (d_model 768, d_mlp 3072) and the row counts a 20-token head sweep runs
(12 variants x 19 positions up to 132 x 19), prints GFLOP/s of: ``addmm`` then the activation in
place (what the sweeps did before), ``linear`` on the weight as it is (a transposed view), and
``linear`` on the weight ``pack`` reordered, with the largest difference from ``addmm``. CPU only;
elsewhere ``linear`` is ``F.linear``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from engine.dense import ACTS, linear, pack  # noqa: E402


def gflops(fn, flop: int, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    times.sort()
    return flop / times[len(times) // 4] / 1e9  # lower quartile: the machine may be shared


def row(m: int, k: int, n: int, act: str | None, repeats: int, g, owner) -> str:
    x = torch.randn(m, k, generator=g)
    w = torch.randn(k, n, generator=g) / k ** 0.5  # TransformerLens layout [in, out]
    b = torch.randn(n, generator=g)
    in_place = ACTS[act][1] if act else (lambda t: t)
    packed = pack(owner, (k, n), (w,), lambda: w.t())
    ref = in_place(torch.addmm(b, x, w))
    diff = max(float((linear(x, wt, b, act) - ref).abs().max()) for wt in (w.t(), packed))
    flop = 2 * m * k * n
    speeds = [gflops(fn, flop, repeats) for fn in (lambda: in_place(torch.addmm(b, x, w)),
                                                    lambda: linear(x, w.t(), b, act),
                                                    lambda: linear(x, packed, b, act))]
    return (f"{m:>6} {k:>5} {n:>5} {act or '-':>9} "
            + " ".join(f"{s:>7.0f}" for s in speeds) + f" {diff:>9.1e}")


@torch.inference_mode()
def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", default="12,228,1140,2508")
    ap.add_argument("--repeats", type=int, default=30)
    args = ap.parse_args()
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, GFLOP/s "
          f"(lower quartile of {args.repeats})")
    print(f"{'rows':>6} {'in':>5} {'out':>5} {'act':>9} {'addmm':>7} {'linear':>7} "
          f"{'packed':>7} {'max|diff|':>9}")
    g = torch.Generator().manual_seed(0)
    owner = type("Owner", (), {})()
    for m in (int(r) for r in args.rows.split(",")):
        for k, n, act in ((768, 3072, "gelu_new"), (3072, 768, None), (768, 2304, None)):
            print(row(m, k, n, act, args.repeats, g, owner))


if __name__ == "__main__":
    main()
