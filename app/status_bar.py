"""Status bar: the loaded model, device and memory; progress of the running job; Cancel."""

from __future__ import annotations

from PySide6.QtWidgets import QLabel, QProgressBar, QPushButton, QStatusBar


class JobStatusBar(QStatusBar):
    def __init__(self, controller, parent=None) -> None:
        super().__init__(parent)
        self.controller = controller
        self.model_label = QLabel("No model loaded")
        self.model_label.setObjectName("modelLabel")
        self.model_label.setToolTip("The loaded model, its device, dtype and memory")
        self.message = QLabel()
        self.message.setObjectName("jobMessage")
        self.progress = QProgressBar()
        self.progress.setObjectName("jobProgress")
        self.progress.setRange(0, 1000)
        self.progress.setMaximumWidth(220)
        self.progress.setTextVisible(False)
        self.progress.hide()
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setObjectName("cancelButton")
        self.cancel_button.setToolTip("Cancel the running job (Esc). Results so far are kept.")
        self.cancel_button.hide()
        self.addWidget(self.model_label, 1)
        self.addPermanentWidget(self.message)
        self.addPermanentWidget(self.progress)
        self.addPermanentWidget(self.cancel_button)
        self.cancel_button.clicked.connect(self._cancel)
        controller.busy_changed.connect(self._busy)
        controller.job_progress.connect(self._progress)
        controller.job_started.connect(lambda ch: self.message.setText(f"{ch}…"))
        controller.model_loaded.connect(self.show_model)
        controller.job_done.connect(self._job_done)
        controller.model_loading.connect(
            lambda spec: self.model_label.setText(f"Loading {spec.display_name}…"))

    def show_model(self, info) -> None:
        self.model_label.setText(info.summary())
        self.model_label.setToolTip(
            f"{info.name} ({info.architecture}) from {info.folder}\n"
            f"{info.n_params:,} parameters (as in the checkpoint; tied weights counted once)\n"
            f"{info.n_layers} layers, {info.n_heads} heads, d_model {info.d_model}, "
            f"context {info.n_ctx}, vocab {info.d_vocab}\n"
            f"Loaded in {info.load_seconds:.1f} s on {info.device} ({info.dtype})")

    def _job_done(self, channel: str) -> None:
        """A load that failed or was cancelled leaves the previous model: say so again."""
        if channel == "model":
            info = self.controller.model_info
            if info is not None:
                self.show_model(info)
            else:
                self.model_label.setText("No model loaded")

    def _busy(self, busy: bool) -> None:
        self.progress.setVisible(busy)
        self.cancel_button.setVisible(busy)
        self.cancel_button.setEnabled(True)
        if busy:
            self.progress.setValue(0)
        else:
            self.message.setText("Ready")

    def _progress(self, channel: str, fraction: float, message: str) -> None:
        self.progress.setValue(int(fraction * 1000))
        self.message.setText(message or channel)

    def _cancel(self) -> None:
        self.controller.cancel_all()
        self.cancel_button.setEnabled(False)
        self.message.setText("Cancelling…")
