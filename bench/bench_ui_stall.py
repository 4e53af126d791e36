"""Longest main-thread event-loop stall while a long model job runs on the worker thread.

A 2 ms QTimer on the UI thread records the gaps between its ticks while the worker runs forward
passes of a 12-layer GPT-2 (random weights, d_model 768) on a long prompt. Target: < 50 ms.

    .venv/bin/python bench/bench_ui_stall.py [--seconds 8] [--tokens 512]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def long_job(host, request, ctx):
    import torch

    seconds, n_tokens = request
    tokens = torch.randint(1, host.info.d_vocab, (1, n_tokens))
    end, runs = time.perf_counter() + seconds, 0
    while time.perf_counter() < end:
        ctx.check_cancelled()
        host.model(tokens)
        runs += 1
        ctx.progress(min(1.0, 1 - (end - time.perf_counter()) / seconds), f"forward {runs}")
    return runs


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--seconds", type=float, default=8.0)
    p.add_argument("--tokens", type=int, default=512)
    args = p.parse_args()
    from PySide6.QtCore import QElapsedTimer, QTimer
    from PySide6.QtWidgets import QApplication

    from app.controller import Controller
    from engine.model_sources import ModelSpec
    from tests.model_fixtures import make_gpt2_folder

    app = QApplication.instance() or QApplication([])
    folder = make_gpt2_folder(Path(tempfile.mkdtemp()) / "gpt2-12l", n_layer=12, n_head=12,
                              n_embd=768, n_positions=1024)
    controller = Controller()
    gaps: list[float] = []
    clock = QElapsedTimer()
    state = {"measuring": False, "runs": 0}

    def tick() -> None:
        if state["measuring"]:
            gaps.append(clock.restart())
        else:
            clock.restart()

    timer = QTimer()
    timer.setInterval(2)
    timer.timeout.connect(tick)

    def loaded(info) -> None:
        print(f"model: {info.summary()} (loaded in {info.load_seconds:.1f} s)")
        state["measuring"] = True
        clock.restart()
        controller.submit("bench", long_job, (args.seconds, args.tokens), on_result=done)

    def done(runs) -> None:
        state["measuring"] = False
        state["runs"] = runs
        app.quit()

    controller.model_loaded.connect(loaded)
    controller.error.connect(lambda ch, info: (print(info.message, info.traceback), app.quit()))
    timer.start()
    controller.load_model(ModelSpec("folder", str(folder), "cpu"))
    app.exec()
    controller.shutdown()
    gaps.sort()
    print(f"worker ran {state['runs']} forward passes of {args.tokens} tokens in "
          f"{args.seconds:.0f} s")
    print(f"UI ticks: {len(gaps)}; longest main-thread stall: {gaps[-1]:.0f} ms; "
          f"p99: {gaps[int(len(gaps) * 0.99)]:.0f} ms; median: {gaps[len(gaps) // 2]:.0f} ms "
          f"(target: longest < 50 ms)")


if __name__ == "__main__":
    main()
