"""Attribution panel job vs calling TransformerLens's functions one by one (each runs the model).

    python -m bench.bench_attribution [--model FOLDER] [--repeats N] [--device cpu|cuda]

run_attribution runs the model once per prompt with a names-filtered cache and hands that cache to
direct_logit_attribution (component, head, layer) and logit_lens (targets, top-k). The baseline
is the notebook way: the same five calls, each given the prompt so each runs the model and caches
everything. Prints seconds per prompt and the ratio; the numbers are checked equal first.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402

PROMPT = "When John and Mary went to the store, John gave a drink to"


def baseline(model, tokens, a, c):
    from transformer_lens.tools.analysis import direct_logit_attribution, logit_lens

    with torch.inference_mode():
        comp = direct_logit_attribution(model, tokens, a, c, unit="component")
        direct_logit_attribution(model, tokens, a, c, unit="head")
        direct_logit_attribution(model, tokens, a, c, unit="layer")
        logit_lens(model, tokens, incl_mid=True, targets=[a, c])
        logit_lens(model, tokens, incl_mid=True, top_k=5)
    return comp.attribution[:, 0].float().cpu().numpy()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--model", default="", help="model folder (default: bundled organism)")
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args(argv)
    from engine.attribution import AttributionRequest, run_attribution
    from engine.host import load_host
    from engine.jobs import Context
    from engine.model_sources import ModelSpec

    host = load_host(ModelSpec.parse(args.model or None, device=args.device))
    model = host.model
    tokens = model.to_tokens(PROMPT).to(host.device)
    a, c = model.to_single_token(" Mary"), model.to_single_token(" John")
    request = AttributionRequest.single(PROMPT, " Mary", " John")
    ours = run_attribution(host, request, Context())
    ref = baseline(model, tokens, a, c)
    np.testing.assert_allclose(ours.component_values[0], ref, rtol=1e-4, atol=1e-4)

    def timed(fn) -> float:
        fn()  # warm up
        if host.device.type == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        for _ in range(args.repeats):
            fn()
        if host.device.type == "cuda":
            torch.cuda.synchronize()
        return (time.perf_counter() - t) / args.repeats

    t_ours = timed(lambda: run_attribution(host, request, Context()))
    t_tl = timed(lambda: baseline(model, tokens, a, c))
    print(f"model {host.info.summary()}")
    print(f"prompt of {tokens.shape[1]} tokens, {args.repeats} repeats")
    print(f"run_attribution (one names-filtered run): {t_ours * 1e3:8.1f} ms/prompt")
    print(f"TransformerLens calls, one run each     : {t_tl * 1e3:8.1f} ms/prompt")
    print(f"ratio TL / ours: {t_tl / t_ours:.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
