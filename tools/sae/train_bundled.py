"""Train the bundled SAE of the model organism (resources/saes/), then write its card.

    python -m tools.sae.train_bundled --threads 1 2>&1 | tee tools/sae/train.log

Training text: fresh organism documents (``tools.organism.corpus``, seed 2), written to a
temporary file and streamed through the app's own training job (``engine.sae_train``), exactly
as the Features panel's Train tab runs it. The evaluation's held-out text is the first
``--eval-tokens`` of that stream; the card's numbers are measured again on the bundled corpus
sample (seed 1), which the SAE never saw. ``tools.sae.card`` then finds the features the card
describes and writes README.md and features.json next to the weights.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import tempfile
import time
from pathlib import Path

import torch

from engine.host import load_host
from engine.jobs import Context
from engine.model_sources import ModelSpec
from engine.sae_io import BUNDLED_SAE_DIR
from engine.sae_train import TrainProgress, TrainRequest, run_train_sae
from engine.text_source import TextSource
from tools.organism.corpus import generate_documents


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=BUNDLED_SAE_DIR)
    ap.add_argument("--hook", default="blocks.3.hook_resid_pre")
    ap.add_argument("--expansion", type=float, default=16.0)
    ap.add_argument("--arch", choices=("standard", "topk"), default="topk")
    ap.add_argument("--k", type=int, default=16)
    ap.add_argument("--l1", type=float, default=1.0)
    ap.add_argument("--tokens", type=int, default=4_000_000)
    ap.add_argument("--batch", type=int, default=2048)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--eval-tokens", type=int, default=100_000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--corpus-seed", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    print("command: python -m tools.sae.train_bundled " + " ".join(
        shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:])), flush=True)
    started = time.perf_counter()
    host = load_host(ModelSpec("bundled", device="cpu"))
    # ~46 tokens per document: enough documents for the training and evaluation tokens
    n_docs = int((args.tokens + args.eval_tokens) / 44) + 1000
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "train.txt"
        path.write_text("\n".join(generate_documents(args.corpus_seed, n_docs)),
                        encoding="utf-8")
        print(f"training text: {n_docs} organism documents (seed {args.corpus_seed}), "
              f"{path.stat().st_size / 1e6:.1f} MB, written in "
              f"{time.perf_counter() - started:.0f} s", flush=True)
        last = [0.0]

        def progress(p):
            if isinstance(p, TrainProgress) and time.perf_counter() - last[0] > 30:
                last[0] = time.perf_counter()
                print(f"step {p.step}/{p.n_steps} tokens {int(p.tokens[-1]):,} "
                      f"mse {float(p.mse[-1]):.4f} l0 {float(p.l0[-1]):.1f} "
                      f"dead {float(p.dead_fraction[-1]):.3f} "
                      f"{p.tokens_per_second:,.0f} tok/s resampled {p.resampled}", flush=True)

        request = TrainRequest(
            hook_name=args.hook, out_folder=str(args.out),
            source=TextSource("file", str(path)), expansion=args.expansion,
            architecture=args.arch, k=args.k, l1_coefficient=args.l1, n_tokens=args.tokens, batch_size=args.batch, lr=args.lr,
            eval_tokens=args.eval_tokens, seed=args.seed, model_name="lensbench-organism")
        result = run_train_sae(host, request, Context(on_partial=progress))
    e = result.evaluation
    print(f"trained {result.progress.step} steps, {int(result.progress.tokens[-1]):,} tokens in "
          f"{result.seconds:.0f} s ({result.progress.tokens_per_second:,.0f} tokens/s through "
          f"the model), {result.progress.resampled} features resampled", flush=True)
    print("evaluation on held-out training-distribution text:", json.dumps(e.as_dict()),
          flush=True)
    # the card's dataset label is the generator, not the temporary file's name
    cfg_path = args.out / "cfg.json"
    cfg = json.loads(cfg_path.read_text())
    label = f"lensbench-organism corpus (tools/organism/corpus.py, seed {args.corpus_seed})"
    cfg["metadata"]["dataset_path"] = label
    cfg["metadata"]["lensbench_training"]["source"] = label
    cfg_path.write_text(json.dumps(cfg, indent=2))
    from tools.sae.card import write_card
    from tools.sae.ship_dashboards import ship

    ship(host, args.out)  # first: the card quotes the features' top contexts from them
    write_card(host, args.out, train_seconds=time.perf_counter() - started,
               command="python -m tools.sae.train_bundled " + " ".join(
                   shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:])))
    print(f"total {time.perf_counter() - started:.0f} s", flush=True)


if __name__ == "__main__":
    main()
