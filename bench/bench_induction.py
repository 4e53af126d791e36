"""The induction scan (one batched forward pass) against TransformerLens's ``detect_head`` called
for every head type, on the same sequences, in one run. Target: >= 5x.

The scan scores previous-token, duplicate-token, induction (head_detector patterns), current-token
and first-token heads on B repeated random word sequences plus a prompt. The baseline calls
``detect_head`` once per head type: the three named types with the list of the B + 1 sequences (one
forward pass per sequence each), and the current/first-token types as custom pattern tensors (one
call per sequence). The script also checks that both give the same numbers.

    .venv/bin/python bench/bench_induction.py [--model bundled|PATH] [--seq-len 30] [--batch 10]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

PROMPT = ("When Mary and John went to the store, John gave a drink to Mary. When Mary and John "
          "went to the store, John gave a drink to Mary.")


def load(model: str):
    from engine.host import load_host
    from engine.model_sources import BUNDLED_DIR, ModelSpec

    if model == "bundled" and (BUNDLED_DIR / "config.json").is_file():
        return load_host(ModelSpec("bundled", device="cpu"))
    if model not in ("bundled", "tiny"):
        return load_host(ModelSpec("folder", model, "cpu"))
    from tests.model_fixtures import make_gpt2_folder

    folder = make_gpt2_folder(Path(tempfile.mkdtemp()) / "gpt2", n_layer=4, n_head=8, n_embd=256,
                              n_positions=256)
    return load_host(ModelSpec("folder", str(folder), "cpu"))


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--model", default="bundled", help="bundled, tiny, or a model folder")
    p.add_argument("--seq-len", type=int, default=30)
    p.add_argument("--batch", type=int, default=10)
    p.add_argument("--repeats", type=int, default=3, help="best-of runs of the scan")
    args = p.parse_args()

    import torch
    from transformer_lens.head_detector import detect_head

    from engine.head_scores import detection_pattern
    from engine.induction import InductionRequest, run_induction_scan
    from engine.jobs import Context

    torch.set_grad_enabled(False)
    host = load(args.model)
    model = host.model
    request = InductionRequest(seq_len=args.seq_len, batch=args.batch, seed=0,
                               token_pool="words", prompt=PROMPT)
    result = run_induction_scan(host, request, Context())  # warm-up (and the token pool cache)
    texts = [host.tokenizer.decode(row[1:].tolist()) for row in result.rep_tokens]
    for text, row in zip(texts, result.rep_tokens, strict=True):
        assert model.to_tokens(text)[0].tolist() == row.tolist(), "word tokens did not round-trip"
    seqs = texts + [PROMPT]

    def ours():
        return run_induction_scan(host, request, Context())

    def baseline():
        out = {}
        for kind, name in (("previous", "previous_token_head"),
                           ("duplicate", "duplicate_token_head"), ("induction", "induction_head")):
            out[kind] = [detect_head(model, texts, name), detect_head(model, PROMPT, name)]
        for kind in ("current", "first"):
            per_seq = []
            for s in seqs:
                pat = detection_pattern(model.to_tokens(s).cpu(), kind)[0]
                per_seq.append(detect_head(model, s, pat))
            out[kind] = [torch.stack(per_seq[:-1]).mean(0), per_seq[-1]]
        return out

    def best(fn, repeats):
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            value = fn()
            times.append(time.perf_counter() - t0)
        return min(times), value

    # The scan is timed before and after the (slow, single) baseline run, best of all, so a
    # burst of load from other processes on a shared machine does not decide the ratio.
    t_ours, res = best(ours, args.repeats)
    t_base, ref = best(baseline, 1)
    t_ours = min(t_ours, best(ours, args.repeats)[0])
    worst = 0.0
    for kind, (rep_ref, prompt_ref) in ref.items():
        key = "induction_detector" if kind == "induction" else kind
        worst = max(worst, float((torch.tensor(res.repeated[key]) - rep_ref).abs().max()),
                    float((torch.tensor(res.prompt_scores[kind]) - prompt_ref).abs().max()))
    n_calls = 3 * (len(seqs)) + 2 * len(seqs)
    info = host.info
    print(f"model: {info.name} {info.n_layers}L x {info.n_heads}H, n_ctx {info.n_ctx}, CPU "
          f"threads {torch.get_num_threads()}")
    print(f"sequences: {args.batch} x (BOS + {args.seq_len} + {args.seq_len}) word tokens + a "
          f"{len(res.prompt_token_ids)}-token prompt; 5 head types")
    print(f"scan (one batched forward pass, patterns only): {t_ours * 1000:9.1f} ms")
    print(f"detect_head for every head type ({n_calls} forward passes): {t_base * 1000:9.1f} ms")
    print(f"speed-up: {t_base / t_ours:.1f}x (target >= 5x)")
    print(f"max |scan - detect_head| over all scores: {worst:.2e} (must be <= 1e-5)")


if __name__ == "__main__":
    main()
