"""Start-up time: launch -> window shown, -> first prediction, -> TransformerLens's prediction.

    .venv/bin/python bench/bench_startup.py [--warm 5] [--cold 3] [--previous DIR]

Each run starts ``python -m app`` offscreen with ``LENSBENCH_STARTUP_TRACE=1``
(app/startup_trace.py prints when the window is first painted, the first prediction shown
(computed from the checkpoint in numpy, engine/early_prediction.py), the model loaded and
TransformerLens's own prediction shown, then quits) and subtracts the launch time. ``--previous``
runs an earlier checkout the same way, alternating with these warm runs. *Cold* runs first drop
the page cache of the Python packages and of the repo (``posix_fadvise(DONTNEED)``, no root
needed; pages other running processes have mapped stay cached, so on a shared machine "cold" is
partly warm). Printed in the same run, as
baselines:

- the launcher's dependency check: ``find_spec`` (now) against importing torch and TransformerLens
  (before);
- the previous order, where the window waited for torch and TransformerLens: the same app with
  both imported before it starts.

The load average is printed too: on a 2-core machine shared with other jobs every wall-clock
number scales with it; the CPU seconds (of the process when the event happened) much less.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PROMPT = "When John and Mary went to the store, John gave a drink to"
PACKAGES = ("torch", "transformers", "transformer_lens", "PySide6", "shiboken6", "pyqtgraph",
            "numpy", "datasets", "pandas", "pyarrow", "tokenizers", "safetensors",
            "huggingface_hub", "sympy", "scipy")
CHECK_NEW = ("import importlib.util as u, sys; sys.exit(any(u.find_spec(m) is None for m in "
             "('torch', 'transformer_lens', 'PySide6', 'pyqtgraph', 'pytest', 'pytestqt')))")
CHECK_OLD = "import torch, transformer_lens, PySide6, pyqtgraph, pytest, pytestqt"
PREIMPORT = ("import sys, torch, transformer_lens.model_bridge\n"
             "from app.main import main\n"
             "sys.exit(main(sys.argv[1:]))\n")


def evict(paths) -> int:
    """Drop these files from the page cache; returns the bytes asked to drop."""
    total = 0
    for root in paths:
        for dirpath, _dirs, files in os.walk(root):
            for name in files:
                path = os.path.join(dirpath, name)
                try:
                    fd = os.open(path, os.O_RDONLY)
                except OSError:
                    continue
                try:
                    total += os.fstat(fd).st_size
                    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
                except OSError:
                    pass
                finally:
                    os.close(fd)
    return total


def cache_paths() -> list[Path]:
    import importlib.util

    out = [ROOT / "app", ROOT / "engine", ROOT / "widgets", ROOT / "resources"]
    for name in PACKAGES:
        spec = importlib.util.find_spec(name)
        if spec is not None and spec.submodule_search_locations:
            out += [Path(p) for p in spec.submodule_search_locations]
    return out


PROFILE = tempfile.mkdtemp(prefix="lensbench-bench-")  # never the user's settings or autosave


def env() -> dict:
    e = dict(os.environ, QT_QPA_PLATFORM="offscreen", LENSBENCH_STARTUP_TRACE="1",
             HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
             XDG_CONFIG_HOME=os.path.join(PROFILE, "config"),
             XDG_DATA_HOME=os.path.join(PROFILE, "data"))
    e.pop("PYTHONDONTWRITEBYTECODE", None)
    return e


def launch(preimport: bool = False, root: Path = ROOT) -> dict[str, float]:
    cmd = ([sys.executable, "-c", PREIMPORT] if preimport else [sys.executable, "-m", "app"])
    cmd += ["--prompt", PROMPT]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.time()
    out = subprocess.run(cmd, cwd=root, env=env(), capture_output=True, text=True, timeout=600)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    # CPU seconds of the whole run (it quits at TransformerLens's prediction); the trace also
    # gives the process's CPU seconds at each milestone. On a shared machine the wall-clock times
    # scale with the load, CPU seconds much less.
    times = {"cpu": (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)}
    for line in out.stdout.splitlines():
        parts = line.split()
        if len(parts) == 4 and parts[0] == "startup":
            times[parts[1]] = float(parts[2]) - t0
            times[parts[1] + "_cpu"] = float(parts[3])
    if "tl_prediction" not in times and "early" not in times and "prediction" in times:
        # A version without the early prediction: its first prediction is TransformerLens's.
        times["tl_prediction"], times["tl_prediction_cpu"] = times["prediction"], \
            times["prediction_cpu"]
    if "tl_prediction" not in times:
        raise RuntimeError(f"no prediction traced:\n{out.stdout}\n{out.stderr[-2000:]}")
    return times


def timed(code: str) -> float:
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env(), check=True,
                   capture_output=True, timeout=300)
    return time.perf_counter() - t0


def summary(name: str, runs: list[dict[str, float]]) -> None:
    cells = []
    for event in ("window", "prediction", "tl_prediction"):
        values = [r[event] for r in runs if event in r]
        cpu = statistics.median(r[event + "_cpu"] for r in runs if event in r)
        cells.append(f"{LABELS[event]} {statistics.median(values):5.2f} s "
                     f"({min(values):.2f}-{max(values):.2f}; cpu {cpu:.2f})")
    print(f"  {name:<34} " + " | ".join(cells))


LABELS = {"window": "window", "prediction": "first prediction",
          "tl_prediction": "TransformerLens's"}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--warm", type=int, default=5, help="warm runs (page cache kept)")
    p.add_argument("--cold", type=int, default=3, help="runs after dropping the page cache")
    p.add_argument("--baseline", type=int, default=3, help="runs of each baseline")
    p.add_argument("--previous", type=Path, help="a checkout of an earlier version (e.g. `git "
                   "archive main | tar -x -C DIR`): as many warm runs, alternating with these")
    args = p.parse_args()
    print(f"{os.cpu_count()} CPUs; load average {os.getloadavg()[0]:.2f} at the start")
    launch()  # compile bytecode, fill the cache once
    cold, warm = [], []
    paths = cache_paths()
    for _ in range(args.cold):
        mb = evict(paths) / 2**20
        cold.append(launch())
    previous = []
    if args.previous:
        launch(root=args.previous)  # its bytecode
    for _ in range(args.warm):
        warm.append(launch())
        if args.previous:
            previous.append(launch(root=args.previous))
    before = [launch(preimport=True) for _ in range(args.baseline)]
    new_check = statistics.median(timed(CHECK_NEW) for _ in range(args.baseline))
    old_check = statistics.median(timed(CHECK_OLD) for _ in range(args.baseline))
    print("Launch -> event, median (min-max) over the runs:")
    if cold:
        summary(f"cold ({len(cold)} runs, {mb:.0f} MiB evicted)", cold)
    summary(f"warm ({len(warm)} runs)", warm)
    if previous:
        summary(f"previous version ({len(previous)} runs)", previous)
    summary(f"before: torch+TL first ({len(before)} runs)", before)
    w_new = statistics.median(r["window"] for r in warm)
    w_old = statistics.median(r["window"] for r in before)
    print(f"Launcher dependency check: find_spec {new_check:.2f} s, importing them (before) "
          f"{old_check:.2f} s ({old_check / new_check:.0f}x).")
    print(f"Window: {w_new:.2f} s now vs {w_old + old_check:.2f} s before (check + imports + "
          f"window): {(w_old + old_check) / w_new:.1f}x sooner.")
    p_new = statistics.median(r["prediction"] for r in warm)
    p_tl = statistics.median(r["tl_prediction"] for r in warm)
    p_old = statistics.median(r["tl_prediction"] for r in before) + old_check
    print(f"First prediction: {p_new:.2f} s now (TransformerLens's {p_tl:.2f} s); imports "
          f"first: TransformerLens's {p_old:.2f} s.")
    if previous:
        p_prev = statistics.median(r["tl_prediction"] for r in previous)
        print(f"Previous version: first prediction (TransformerLens's) {p_prev:.2f} s: now "
              f"{p_prev / p_new:.1f}x sooner.")
    print(f"Load average {os.getloadavg()[0]:.2f} at the end.")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
