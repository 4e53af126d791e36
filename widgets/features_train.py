"""Training an SAE: the settings, Train/Cancel, progress and live curves, the evaluation.

A pure view. ``settings()`` is a plain dict the binding turns into a training request;
``set_progress`` draws the curves of reconstruction MSE, L0 and dead-feature fraction against
training tokens as partial results arrive; ``set_result`` shows the evaluation on held-out text.
File and folder choices are asked of the binding (``sig_browse``), which owns the dialogs.
"""

from __future__ import annotations

from html import escape

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QComboBox,
    QDoubleSpinBox,
    QGridLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QProgressBar,
    QPushButton,
    QSpinBox,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

HOOKS = (("hook_resid_pre", "residual stream, before the block"),
         ("hook_resid_mid", "residual stream, between attention and MLP"),
         ("hook_resid_post", "residual stream, after the block"),
         ("hook_mlp_out", "MLP output"), ("hook_attn_out", "attention output"),
         ("mlp.hook_post", "MLP neurons (the tutorial's choice)"),
         ("attn.hook_z", "attention heads' z"))
SOURCES = (("bundled", "bundled corpus sample"), ("file", "text file…"),
           ("hf", "Hugging Face dataset (from the local cache)"))


class _CountAxis(pg.AxisItem):
    """Token counts as 200k, 1.5M."""

    def tickStrings(self, values, scale, spacing):  # noqa: N802 (pyqtgraph API)
        def fmt(v):
            v = float(v) * scale
            return f"{v / 1e6:g}M" if abs(v) >= 1e6 else f"{v / 1e3:g}k" if abs(v) >= 1e3 \
                else f"{v:g}"

        return [fmt(v) for v in values]


class FeatureTrainView(QWidget):
    sig_train = Signal(object)  # settings dict
    sig_cancel = Signal()
    sig_load = Signal(str)  # folder of the trained SAE
    sig_browse = Signal(str)  # "source" or "output"

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.widths = {"d_model": 0, "d_mlp": 0, "z": 0}
        self.trained_folder = ""
        self.layer = QSpinBox()
        self.layer.setObjectName("trainLayer")
        self.layer.setToolTip("The layer whose activations the SAE learns")
        self.hook = QComboBox()
        self.hook.setObjectName("trainHook")
        for key, label in HOOKS:
            self.hook.addItem(f"{key} ({label})", key)
        self.arch = QComboBox()
        self.arch.setObjectName("trainArch")
        self.arch.addItem("TopK", "topk")
        self.arch.addItem("ReLU + L1 (the tutorial's)", "standard")
        self.arch.setToolTip("TopK SAEs keep exactly k features per token (no coefficient to "
                             "tune) and train dead ones with an auxiliary loss; ReLU SAEs, the "
                             "tutorial's, trade reconstruction against an L1 penalty and "
                             "resample dead features")
        self.expansion = QDoubleSpinBox()
        self.expansion.setObjectName("trainExpansion")
        self.expansion.setRange(0.25, 256)
        self.expansion.setValue(8.0)
        self.expansion.setSuffix(" × d_in")
        self.expansion.setToolTip("Number of features as a multiple of the activation's width")
        self.width_label = QLabel()
        self.width_label.setObjectName("trainWidthLabel")
        self.l1 = QDoubleSpinBox()
        self.l1.setObjectName("trainL1")
        self.l1.setDecimals(4)
        self.l1.setRange(0.0, 1e4)
        self.l1.setSingleStep(0.1)
        self.l1.setValue(1.0)
        self.l1.setToolTip("L1 coefficient (SAELens's convention: on activations scaled to mean "
                           "norm √d_in, against the squared error summed over dimensions). "
                           "Higher = sparser, worse reconstruction.")
        self.k = QSpinBox()
        self.k.setObjectName("trainK")
        self.k.setRange(1, 4096)
        self.k.setValue(32)
        self.k.setToolTip("Features kept active per token")
        self.tokens = QSpinBox()
        self.tokens.setObjectName("trainTokens")
        self.tokens.setRange(10_000, 2_000_000_000)
        self.tokens.setSingleStep(500_000)
        self.tokens.setValue(2_000_000)
        self.tokens.setGroupSeparatorShown(True)
        self.tokens.setToolTip("Training tokens (activations) to stream from the text")
        self.batch = QSpinBox()
        self.batch.setObjectName("trainBatch")
        self.batch.setRange(16, 131072)
        self.batch.setValue(4096)
        self.batch.setToolTip("Activations per optimiser step")
        self.lr = QDoubleSpinBox()
        self.lr.setObjectName("trainLR")
        self.lr.setDecimals(6)
        self.lr.setRange(1e-6, 1000.0)
        self.lr.setSingleStep(1e-4)
        self.lr.setValue(1e-3)
        self.lr.setToolTip("Adam learning rate (warm-up over the first 5% of steps, linear decay "
                           "over the last 20%)")
        self.context = QSpinBox()
        self.context.setObjectName("trainContext")
        self.context.setRange(2, 8192)
        self.context.setValue(128)
        self.context.setToolTip("Tokens per text row (each starts with BOS)")
        self.source = QComboBox()
        self.source.setObjectName("trainSource")
        for key, label in SOURCES:
            self.source.addItem(label, key)
        self.source.setToolTip("The text whose activations the SAE learns; a Hugging Face "
                               "dataset is read only from the local cache, never downloaded")
        self.source_path = QLineEdit()
        self.source_path.setObjectName("trainSourcePath")
        self.source.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToContents)
        self.source_browse = QToolButton()
        self.source_browse.setText("…")
        self.source_browse.setToolTip("Choose a text file")
        self.output = QLineEdit()
        self.output.setObjectName("trainOutput")
        self.output.setToolTip("Where the SAE is saved (SAELens layout: cfg.json + "
                               "sae_weights.safetensors)")
        self.output_browse = QToolButton()
        self.output_browse.setText("…")
        self.output_browse.setToolTip("Choose the output folder")
        self.train_button = QPushButton("Train")
        self.train_button.setObjectName("trainButton")
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setObjectName("trainCancel")
        self.cancel_button.setEnabled(False)
        self.cancel_button.setToolTip("Stop training; nothing is saved")
        self.load_button = QPushButton("Load the trained SAE")
        self.load_button.setObjectName("trainLoad")
        self.load_button.setEnabled(False)
        self.progress = QProgressBar()
        self.progress.setObjectName("trainProgress")
        self.progress.setRange(0, 1000)
        self.status = QLabel("")
        self.status.setObjectName("trainStatus")
        self.status.setWordWrap(True)
        self.status.setTextFormat(Qt.TextFormat.RichText)
        self.status.setMinimumHeight(4 * self.fontMetrics().lineSpacing())
        self.curves = pg.GraphicsLayoutWidget()
        self.curves.setObjectName("trainCurves")
        self.curves.setBackground("w")
        self.curves.setMinimumSize(200, 120)
        self.plots = {}
        self.lines = {}
        for key, title in (("mse", "reconstruction MSE"), ("l0", "L0"), ("dead", "dead fraction")):
            axis = _CountAxis("bottom")
            axis.enableAutoSIPrefix(False)
            plot = self.curves.addPlot(title=title, axisItems={"bottom": axis})
            plot.setMenuEnabled(False)
            plot.hideButtons()
            plot.showGrid(x=True, y=True, alpha=0.2)
            plot.setLabel("bottom", "tokens")
            self.plots[key] = plot
            self.lines[key] = plot.plot([], [], pen=pg.mkPen((40, 90, 170), width=2))
        self.plots["dead"].setYRange(0, 1)
        self._layout()
        self.arch.currentIndexChanged.connect(self._arch_changed)
        self.source.currentIndexChanged.connect(self._source_changed)
        for w in (self.expansion, self.hook):
            (w.valueChanged if hasattr(w, "valueChanged") else w.currentIndexChanged).connect(
                lambda *_: self._update_width())
        self.source_browse.clicked.connect(lambda: self.sig_browse.emit("source"))
        self.output_browse.clicked.connect(lambda: self.sig_browse.emit("output"))
        self.train_button.clicked.connect(lambda: self.sig_train.emit(self.settings()))
        self.cancel_button.clicked.connect(self.sig_cancel)
        self.load_button.clicked.connect(lambda: self.sig_load.emit(self.trained_folder))
        self._arch_changed()
        self._source_changed()

    def _layout(self) -> None:
        grid = QGridLayout()
        grid.setHorizontalSpacing(6)
        grid.setVerticalSpacing(3)
        hook_row = QHBoxLayout()
        hook_row.addWidget(self.layer)
        hook_row.addWidget(self.hook, 1)
        self.sparsity_label = QLabel("L1 coefficient")
        fields = [("Layer and hook", hook_row), ("Architecture", self.arch),
                  ("Width", self._pair(self.expansion, self.width_label)),
                  (self.sparsity_label, self._pair(self.l1, self.k)),
                  ("Tokens", self.tokens), ("Batch / lr", self._pair(self.batch, self.lr)),
                  ("Context", self.context),
                  ("Text", self._triple(self.source, self.source_path, self.source_browse)),
                  ("Save to", self._pair(self.output, self.output_browse, 1))]
        for row, (label, field) in enumerate(fields):
            grid.addWidget(label if isinstance(label, QLabel) else QLabel(label), row, 0)
            if isinstance(field, QWidget):
                grid.addWidget(field, row, 1)
            else:
                grid.addLayout(field, row, 1)
        buttons = QHBoxLayout()
        for w in (self.train_button, self.cancel_button, self.load_button):
            buttons.addWidget(w)
        left = QVBoxLayout()
        left.addLayout(grid)
        left.addLayout(buttons)
        left.addWidget(self.progress)
        left.addWidget(self.status)
        left.addStretch(1)
        lay = QHBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.addLayout(left, 2)
        lay.addWidget(self.curves, 3)

    @staticmethod
    def _pair(a, b, stretch_first: int = 0) -> QHBoxLayout:
        row = QHBoxLayout()
        row.addWidget(a, stretch_first)
        row.addWidget(b, 0 if stretch_first else 1)
        return row

    @staticmethod
    def _triple(a, b, c) -> QHBoxLayout:
        row = QHBoxLayout()
        row.addWidget(a)
        row.addWidget(b, 1)
        row.addWidget(c)
        return row

    # -- state --------------------------------------------------------------------------------
    def set_model(self, n_layers: int, d_model: int, d_mlp: int, d_z: int) -> None:
        self.layer.setRange(0, max(0, n_layers - 1))
        self.widths = {"d_model": d_model, "d_mlp": d_mlp, "z": d_z}
        self._update_width()

    def hook_name(self) -> str:
        return f"blocks.{self.layer.value()}.{self.hook.currentData()}"

    def d_in(self) -> int:
        key = self.hook.currentData()
        kind = "d_mlp" if key == "mlp.hook_post" else "z" if key == "attn.hook_z" else "d_model"
        return self.widths[kind]

    def _update_width(self) -> None:
        d_in = self.d_in()
        self.width_label.setText(f"= {round(self.expansion.value() * d_in):,} features "
                                 f"(d_in {d_in})" if d_in else "")

    def _arch_changed(self) -> None:
        topk = self.arch.currentData() == "topk"
        self.l1.setVisible(not topk)
        self.k.setVisible(topk)
        self.sparsity_label.setText("k (features per token)" if topk else "L1 coefficient")

    def _source_changed(self) -> None:
        kind = self.source.currentData()
        self.source_path.setEnabled(kind != "bundled")
        self.source_browse.setEnabled(kind == "file")
        self.source_path.setPlaceholderText({"bundled": "", "file": "path to a UTF-8 text file",
                                             "hf": "dataset name (train split, 'text' column), e.g. "
                                             "NeelNanda/pile-10k"}[kind])

    def settings(self) -> dict:
        return {"hook_name": self.hook_name(), "architecture": self.arch.currentData(),
                "expansion": self.expansion.value(), "l1_coefficient": self.l1.value(),
                "k": self.k.value(), "n_tokens": self.tokens.value(),
                "batch_size": self.batch.value(), "lr": self.lr.value(),
                "context_size": self.context.value(), "source_kind": self.source.currentData(),
                "source_path": self.source_path.text().strip(),
                "out_folder": self.output.text().strip()}

    def set_settings(self, s: dict) -> None:
        """Restore settings (values of the wrong type or range are ignored)."""
        def num(key, widget, kind):
            v = s.get(key)
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                widget.setValue(kind(v))

        hook = s.get("hook_name")
        if isinstance(hook, str) and hook.startswith("blocks."):
            parts = hook.split(".", 2)
            if len(parts) == 3 and parts[1].isdigit():
                self.layer.setValue(int(parts[1]))
                i = self.hook.findData(parts[2])
                if i >= 0:
                    self.hook.setCurrentIndex(i)
        for key, combo in (("architecture", self.arch), ("source_kind", self.source)):
            i = combo.findData(s.get(key))
            if i >= 0:
                combo.setCurrentIndex(i)
        num("expansion", self.expansion, float)
        num("l1_coefficient", self.l1, float)
        num("k", self.k, int)
        num("n_tokens", self.tokens, int)
        num("batch_size", self.batch, int)
        num("lr", self.lr, float)
        num("context_size", self.context, int)
        for key, edit in (("source_path", self.source_path), ("out_folder", self.output)):
            if isinstance(s.get(key), str):
                edit.setText(s[key][:4096])

    # -- running ------------------------------------------------------------------------------
    def set_running(self, running: bool) -> None:
        self.train_button.setEnabled(not running)
        self.cancel_button.setEnabled(running)
        if running:
            self.load_button.setEnabled(False)
            self.progress.setValue(0)
            for line in self.lines.values():
                line.setData([], [])

    def set_status(self, text: str, error: bool = False) -> None:
        colour = "#b00020" if error else "#333"
        self.status.setText(f"<span style='color:{colour}'>{escape(text)}</span>")

    def set_progress(self, p) -> None:
        """A TrainProgress: redraw the curves."""
        x = np.asarray(p.tokens, dtype=np.float64)
        for key, values in (("mse", p.mse), ("l0", p.l0), ("dead", p.dead_fraction)):
            self.lines[key].setData(x, np.asarray(values, dtype=np.float64))
        self.progress.setValue(int(1000 * p.step / max(p.n_steps, 1)))
        self.set_status(f"step {p.step:,} of {p.n_steps:,} · {int(x[-1]) if len(x) else 0:,} "
                        f"tokens · {p.tokens_per_second:,.0f} tokens/s · "
                        f"{p.resampled} features resampled")

    def set_result(self, r) -> None:
        self.set_progress(r.progress)
        self.set_running(False)
        self.trained_folder = r.folder
        self.load_button.setEnabled(True)
        e = r.evaluation
        self.status.setText(
            f"<b>Trained</b> in {r.seconds:.0f} s and saved to <code>{escape(r.folder)}</code>."
            f"<br>On {e.n_tokens:,} held-out tokens: explained variance "
            f"<b>{e.explained_variance:.3f}</b> · L0 <b>{e.l0:.1f}</b> · dead "
            f"<b>{e.dead_fraction:.1%}</b> · CE loss recovered <b>{e.ce_recovered:.1%}</b> "
            f"(clean {e.ce_clean:.3f}, with SAE {e.ce_sae:.3f}, zero-ablated {e.ce_zero:.3f})")
