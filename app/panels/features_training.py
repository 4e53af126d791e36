"""Training an SAE from the Features panel: a run of ~1 s job slices on the worker thread.

Each slice is its own job (``engine.sae_train.run_train_slice``), so predictions, attention and
every other panel's jobs run in between and the app stays responsive for the whole run; the
next slice is queued when one finishes. Curves arrive as partial results. Cancel stops the
current slice (the run is dropped, nothing is written); a model switch stops the run. The engine
is imported inside the methods (torch: after the window is shown).
"""

from __future__ import annotations

import itertools
import re
from pathlib import Path
from typing import TYPE_CHECKING

from PySide6.QtCore import QObject, QStandardPaths
from PySide6.QtWidgets import QFileDialog

if TYPE_CHECKING:
    from engine.sae_train import TrainRequest

CHANNEL = "features.train"
SLICE_SECONDS = 1.0
_run_ids = itertools.count(1)


def default_output(model_name: str, hook: str, width: int) -> str:
    base = Path(QStandardPaths.writableLocation(
        QStandardPaths.StandardLocation.AppDataLocation)) / "saes"
    name = re.sub(r"[^A-Za-z0-9_.-]+", "-", f"{model_name}-{hook}-{width}").strip("-")
    return str(base / name)


class TrainingRunner(QObject):
    """Owns one training run at a time for the Features binding."""

    def __init__(self, binding) -> None:
        super().__init__(binding)
        self.binding = binding
        self.controller = binding.controller
        self.view = binding.widget.train
        self.run_id = 0
        self.request: TrainRequest | None = None
        self.view.sig_train.connect(self.start)
        self.view.sig_cancel.connect(self.cancel)
        self.view.sig_browse.connect(self.browse)
        self.view.hook.currentIndexChanged.connect(lambda _i: self.suggest_output())
        self.view.layer.valueChanged.connect(lambda _v: self.suggest_output())
        self.view.expansion.valueChanged.connect(lambda _v: self.suggest_output())
        self._suggested = ""

    @property
    def running(self) -> bool:
        return self.run_id != 0

    def on_model_loaded(self, info) -> None:
        if self.running:
            self.stop("Training stopped: the model changed.")
        d_z = info.n_heads * info.d_head
        self.view.set_model(info.n_layers, info.d_model, info.d_mlp, d_z)
        self.suggest_output(force=True)

    def suggest_output(self, force: bool = False) -> None:
        """Fill the output folder from the settings unless the user typed their own."""
        info = self.controller.model_info
        if info is None:
            return
        current = self.view.output.text().strip()
        if force or not current or current == self._suggested:
            width = round(self.view.expansion.value() * self.view.d_in())
            self._suggested = default_output(info.name, self.view.hook_name(), width)
            self.view.output.setText(self._suggested)

    def browse(self, what: str) -> None:
        if what == "source":
            path, _ = QFileDialog.getOpenFileName(self.view, "Text to train on", "",
                                                  "Text (*.txt *.txt.gz);;All files (*)")
            if path:
                self.view.source_path.setText(path)
        else:
            path = QFileDialog.getExistingDirectory(self.view, "Save the SAE in")
            if path:
                self.view.output.setText(path)

    def request_from(self, s: dict) -> TrainRequest:
        from engine.sae_train import TrainRequest
        from engine.text_source import TextSource

        info = self.controller.model_info
        source = TextSource(s["source_kind"], s["source_path"])
        return TrainRequest(hook_name=s["hook_name"], out_folder=s["out_folder"], source=source,
                            expansion=float(s["expansion"]), architecture=s["architecture"],
                            l1_coefficient=float(s["l1_coefficient"]), k=int(s["k"]),
                            n_tokens=int(s["n_tokens"]), batch_size=int(s["batch_size"]),
                            lr=float(s["lr"]), context_size=int(s["context_size"]),
                            eval_tokens=min(50_000, max(int(s["context_size"]),
                                                        int(s["n_tokens"]) // 10)),
                            model_name=info.name if info is not None else "")

    def start(self, settings: dict) -> None:
        if self.controller.model_info is None:
            self.view.set_status("Load a model first.", error=True)
            return
        if settings.get("source_kind") == "bundled" and not self.binding.is_bundled_model():
            self.view.set_status("The bundled corpus sample is text for the bundled model "
                                 "organism; for this model choose a text file or a cached "
                                 "dataset.", error=True)
            return
        self.request = self.request_from(settings)
        self.run_id = next(_run_ids)
        self.view.set_running(True)
        self.view.set_status("Starting: reading text, estimating the activations' scale…")
        self._submit()

    def _submit(self) -> None:
        from engine.sae_train import TrainSliceRequest, run_train_slice

        run_id = self.run_id
        self.controller.submit(CHANNEL, run_train_slice,
                               TrainSliceRequest(self.request, run_id, SLICE_SECONDS),
                               on_result=lambda r: self._slice_done(run_id, r),
                               on_partial=lambda p: self._partial(run_id, p),
                               on_error=lambda e: self._failed(run_id, e),
                               on_cancel=lambda: self._cancelled(run_id), grad=True)

    def _partial(self, run_id: int, progress) -> None:
        from engine.sae_train import TrainProgress

        if run_id == self.run_id and isinstance(progress, TrainProgress):
            self.view.set_progress(progress)

    def _slice_done(self, run_id: int, result) -> None:
        from engine.sae_train import TrainResult

        if run_id != self.run_id:
            return
        if isinstance(result, TrainResult):
            self.run_id = 0
            self.view.set_result(result)
            self.binding.remember_sae(result.folder)
            return
        if result.step:
            self.view.set_progress(result)
        self._submit()

    def _failed(self, run_id: int, info) -> bool:
        if run_id != self.run_id:
            return True
        self.run_id = 0
        self.view.set_running(False)
        text = f"{info.message} {info.hint}".strip()
        self.view.set_status(text if info.kind in ("input", "too_long", "oom")
                             else f"Training failed: {text}", error=True)
        return info.kind in ("input", "too_long", "oom")

    def _cancelled(self, run_id: int) -> None:
        if run_id == self.run_id:
            self.stop("Cancelled; nothing was saved.")

    def cancel(self) -> None:
        if self.running:
            self.controller.cancel(CHANNEL)
            self.stop("Cancelled; nothing was saved.")

    def stop(self, message: str) -> None:
        self.run_id = 0
        self.view.set_running(False)
        self.view.set_status(message)
