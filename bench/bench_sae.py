"""SAE speed on the bundled model: training throughput and top-activating contexts over 1M tokens,
each against a plain PyTorch loop of the tutorial's SAE, in the same run.

    python -m bench.bench_sae [--train-tokens 400000] [--context-tokens 1000000] [--threads 2]

Training, both sides on the same text (the bundled corpus sample), hook, width (8x), batch size and
number of steps, from the same initial weights:

- *plain loop*: the tutorial's way: ``run_with_cache`` on a batch of rows (the whole model), then
  one step of the tutorial's SAE (ReLU, squared error + L1, Adam, decoder rows renormalised);
- *Lensbench*: ``engine.sae_train.run_train_sae`` (the Train tab's job): the model run only up to
  the hook's layer, activations shuffled in a buffer, progress and partial curves, and at the end
  the evaluation on held-out text (timed separately and left out of tokens/s).

The UI during training (``--ui``): the real window on the bundled model trains an SAE from the
Train tab while a 2 ms timer on the UI thread records the longest gap between its ticks, and a
prompt is run mid-training to time how long its predictions take to come back (training runs as
~1 s slices, so other jobs wait at most one slice).

Top-activating contexts over ``--context-tokens`` tokens:

- *plain loop*: ``run_with_cache`` per batch, encode, keep each feature's top 20 by
  ``torch.topk`` over the running top 20 and the batch;
- *Lensbench*: ``engine.sae_features.run_dashboards`` (no cache): the same top 20 per feature plus
  a 17-token window of text and activations around each, the activation histogram and density.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from engine.host import load_host
from engine.jobs import Context
from engine.model_sources import ModelSpec
from engine.sae_features import DashboardRequest, run_dashboards
from engine.sae_io import BUNDLED_SAE_DIR, get_sae
from engine.sae_train import TrainRequest, _init, run_train_sae
from engine.text_source import TextSource, token_rows


class TutorialSAE(torch.nn.Module):
    """The tutorial's SAE (Neel Nanda's 1L replication, as in ARENA): ReLU, L2 + L1."""

    def __init__(self, w: dict, l1_coeff: float) -> None:
        super().__init__()
        self.W_enc = torch.nn.Parameter(w["W_enc"].clone())
        self.b_enc = torch.nn.Parameter(w["b_enc"].clone())
        self.W_dec = torch.nn.Parameter(w["W_dec"].clone())
        self.b_dec = torch.nn.Parameter(w["b_dec"].clone())
        self.l1_coeff = l1_coeff

    def forward(self, x):
        acts = torch.relu((x - self.b_dec) @ self.W_enc + self.b_enc)
        x_hat = acts @ self.W_dec + self.b_dec
        l2 = (x_hat - x).pow(2).sum(-1).mean(0)
        l1 = self.l1_coeff * acts.abs().sum(-1).mean(0)
        return l2 + l1, acts

    @torch.no_grad()
    def make_decoder_weights_and_grad_unit_norm(self):
        w = self.W_dec / self.W_dec.norm(dim=-1, keepdim=True)
        if self.W_dec.grad is not None:
            self.W_dec.grad -= (self.W_dec.grad * w).sum(-1, keepdim=True) * w
        self.W_dec.data = w


def plain_training(host, hook, n_tokens, batch, context, w, l1, lr):
    model = host.model
    sae = TutorialSAE(w, l1)
    opt = torch.optim.Adam(sae.parameters(), lr=lr)
    rows_per_batch = batch // context
    steps, start = 0, time.perf_counter()
    for rows in token_rows(host, TextSource("bundled"), context, n_tokens, rows_per_batch,
                           Context()):
        with torch.no_grad():
            _, cache = model.run_with_cache(rows, names_filter=hook)
        x = cache[hook].reshape(-1, cache[hook].shape[-1]).float()
        loss, _ = sae(x)
        loss.backward()
        sae.make_decoder_weights_and_grad_unit_norm()
        opt.step()
        opt.zero_grad()
        steps += 1
    return steps * batch / (time.perf_counter() - start), steps


def plain_contexts(host, sae, n_tokens, context, k=20, rows_per_batch=64):
    model, hook = host.model, sae.cfg.hook_name
    top = None
    start = time.perf_counter()
    for rows in token_rows(host, TextSource("bundled"), context, n_tokens, rows_per_batch,
                           Context()):
        with torch.no_grad():
            _, cache = model.run_with_cache(rows, names_filter=hook)
            f = sae.encode(cache[hook].reshape(-1, cache[hook].shape[-1]))
            vals = f.topk(k, dim=0).values.T  # [F, k]
            top = vals if top is None else torch.cat([top, vals], 1).topk(k, dim=1).values
    return time.perf_counter() - start, top


def ui_during_training(n_tokens: int) -> None:
    import os
    import tempfile

    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    from PySide6.QtCore import QElapsedTimer, QTimer

    from tools.shots.common import open_window, wait

    app, win = open_window("", 1366, 768)
    panel = next(b for b in win.bindings if b.object_name == "featuresDock").widget
    wait(app, lambda: not win.controller.busy)
    view = panel.train
    view.layer.setValue(3)
    view.tokens.setValue(n_tokens)
    view.output.setText(str(Path(tempfile.mkdtemp()) / "bench-sae"))
    gaps: list[float] = []
    clock = QElapsedTimer()
    timer = QTimer()
    timer.setInterval(2)
    timer.timeout.connect(lambda: gaps.append(clock.restart()))
    clock.start()
    timer.start()
    started = time.perf_counter()
    view.train_button.click()
    wait(app, lambda: view.progress.value() > 200, 3600)
    preds = next(b for b in win.bindings if b.object_name == "predictionsDock").widget
    before = preds.summary.text()
    asked = time.perf_counter()
    win.controller.run_prompt("The Eiffel Tower is in")
    wait(app, lambda: preds.summary.text() != before, 600)
    latency = time.perf_counter() - asked
    wait(app, lambda: view.load_button.isEnabled() or view.train_button.isEnabled(), 3600)
    timer.stop()
    total = time.perf_counter() - started
    gaps.sort()
    print(f"UI during training ({n_tokens:,} tokens, {total:.0f} s, {len(gaps)} timer ticks):")
    print(f"  longest UI stall {gaps[-1]:.0f} ms, 99.9th percentile "
          f"{gaps[int(len(gaps) * 0.999)]:.0f} ms")
    print(f"  a prompt run mid-training showed its predictions after {latency:.2f} s")
    win.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hook", default="blocks.3.hook_resid_pre")
    ap.add_argument("--train-tokens", type=int, default=400_000)
    ap.add_argument("--batch", type=int, default=4096)
    ap.add_argument("--context-tokens", type=int, default=1_000_000)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--skip-contexts", action="store_true")
    ap.add_argument("--skip-training", action="store_true")
    ap.add_argument("--ui", type=int, default=0, metavar="TOKENS",
                    help="only measure the UI during a training run of TOKENS tokens")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.ui:
        ui_during_training(args.ui)
        return
    host = load_host(ModelSpec("bundled", device="cpu"))
    model = host.model
    print(f"bundled model, hook {args.hook}, torch threads {torch.get_num_threads()}")
    with torch.no_grad():  # warm up both paths
        model.run_with_cache(torch.zeros(4, 128, dtype=torch.long), names_filter=args.hook)
    context = 128
    d_in = int(model.cfg.d_model if "resid" in args.hook or "_out" in args.hook
               else model.cfg.d_mlp)
    width = 8 * d_in
    w = _init(d_in, width, torch.Generator().manual_seed(0))
    # -- training ------------------------------------------------------------------------------
    # the same number of steps on both sides: Lensbench holds its evaluation text out first
    eval_tokens = 16_384
    if not args.skip_training:
        train_both(host, args, context, width, w, eval_tokens)
    if not args.skip_contexts:
        contexts_both(host, args, context)


def train_both(host, args, context, width, w, eval_tokens) -> None:
    plain_tps, plain_steps = plain_training(host, args.hook, args.train_tokens, args.batch,
                                            context, w, 1e-3, 1e-3)
    ctx = Context()
    started = time.perf_counter()
    result = run_train_sae(host, TrainRequest(
        args.hook, "/tmp/lensbench-bench-sae", TextSource("bundled"), expansion=8,
        n_tokens=args.train_tokens, batch_size=args.batch, eval_tokens=eval_tokens,
        buffer_batches=8), ctx)
    total = time.perf_counter() - started
    p = result.progress
    print(f"training {args.train_tokens:,} tokens, batch {args.batch}, {width} features:")
    print(f"  plain loop (run_with_cache + tutorial SAE): {plain_tps:,.0f} tokens/s "
          f"({plain_steps} steps)")
    print(f"  Lensbench job: {p.tokens_per_second:,.0f} tokens/s through the model "
          f"({p.step} steps; {total:.1f} s with the held-out evaluation)")
    print(f"  ratio: {p.tokens_per_second / plain_tps:.2f}x")


def contexts_both(host, args, context) -> None:
    import shutil
    import tempfile

    # a copy of the bundled SAE without its shipped dashboards, so nothing comes from a cache
    folder = Path(tempfile.mkdtemp()) / "sae"
    shutil.copytree(BUNDLED_SAE_DIR, folder, ignore=shutil.ignore_patterns("dashboards"))
    sae = get_sae(host, folder).sae
    n = args.context_tokens
    t_plain, top_plain = plain_contexts(host, sae, n, context)
    started = time.perf_counter()
    stats = run_dashboards(host, DashboardRequest(
        str(folder), TextSource("bundled"), n_tokens=n, context_size=context), Context())
    assert not stats.from_cache
    t_lens = time.perf_counter() - started
    same = torch.allclose(torch.as_tensor(stats.top_acts), top_plain.float(), atol=1e-4)
    print(f"top-20 contexts over {stats.n_tokens:,} tokens, {sae.cfg.d_sae} features:")
    print(f"  plain loop (run_with_cache + topk): {t_plain:.1f} s "
          f"({stats.n_tokens / t_plain:,.0f} tokens/s)")
    print(f"  Lensbench dashboards (+ windows, histograms, density): {t_lens:.1f} s "
          f"({stats.n_tokens / t_lens:,.0f} tokens/s)")
    print(f"  ratio: {t_plain / t_lens:.2f}x; same top activations: {same}")


if __name__ == "__main__":
    main()
