"""The Layer attribution panel: logit lens, direct logit attribution per component and per head.

A pure view. It shows an attribution result (duck-typed numpy arrays, see
engine.attribution.AttributionResult) and emits intents: run a target, select a layer or head,
export the current view. Batch results show the mean over prompts with the min..max range as error
bars and each prompt as a dot; a combo box shows any single prompt instead.
"""

from __future__ import annotations

from html import escape

import numpy as np
from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtGui import QStandardItem, QStandardItemModel
from PySide6.QtWidgets import (
    QApplication,
    QCheckBox,
    QComboBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QPlainTextEdit,
    QPushButton,
    QSizePolicy,
    QSpinBox,
    QSplitter,
    QTableView,
    QTabWidget,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from widgets.attribution_labels import component_description, layer_of_label, lens_description
from widgets.bar_chart import BarChart
from widgets.head_heatmap import HeadHeatmap
from widgets.token_strip import visible

N_QUICK = 8
N_TOP_HEADS = 16
IOI_EXAMPLES = (
    "When John and Mary went to the store, John gave a drink to | Mary | John",
    "When Alice and Bob walked to the park, Alice gave a ball to | Bob | Alice",
    "When Tom and Anna went to the house, Tom gave a book to | Anna | Tom",
    "When Mary and John went to the school, Mary gave a bag to | John | Mary",
)
class _ResizeAware(QWidget):
    """A plain container that calls ``on_resize`` after every resize."""

    def __init__(self, on_resize) -> None:
        super().__init__()
        self._on_resize = on_resize

    def resizeEvent(self, event) -> None:  # noqa: N802 (Qt naming)
        super().resizeEvent(event)
        self._on_resize()


class AttributionPanel(QWidget):
    """Target inputs, three views, export buttons.

    ``sig_run(items)``: a list of ``(prompt, answer, counterfactual, position)``; an empty prompt
    means "the current prompt". ``sig_head_clicked(layer, head)``: head -1 is a whole layer.
    ``sig_export(kind)``: "png", "svg" or "csv" for the current view (the app writes the file).
    """

    sig_run = Signal(object)
    sig_head_clicked = Signal(int, int)
    sig_export = Signal(str)
    sig_spelling = Signal(str, str)  # answer, counterfactual as typed (debounced): check them

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.setObjectName("AttributionPanel")
        self.result = None
        self._selected = (-1, -1)
        self._build_inputs()
        self._build_views()
        lay = QVBoxLayout(self)
        lay.setContentsMargins(4, 4, 4, 4)
        lay.setSpacing(3)
        lay.addLayout(self._input_row)
        lay.addWidget(self.space_box)
        lay.addWidget(self.message)
        lay.addLayout(self._quick_row)
        lay.addWidget(self.batch_box)
        lay.addLayout(self._summary_row)
        lay.addWidget(self.tabs, 1)

    # -- construction -------------------------------------------------------------------------
    def _build_inputs(self) -> None:
        self.answer_edit = QLineEdit()
        self.answer_edit.setObjectName("attrAnswer")
        self.answer_edit.setPlaceholderText("answer, e.g. ' Paris'")
        self.answer_edit.setToolTip("The answer token whose logit is attributed. It must be one "
                                    "token; words after a space need their leading space "
                                    "(' Paris', not 'Paris').")
        self.cf_edit = QLineEdit()
        self.cf_edit.setObjectName("attrCounterfactual")
        self.cf_edit.setPlaceholderText("optional, e.g. ' John'")
        self.cf_edit.setToolTip("Optional counterfactual token: attribute the logit difference "
                                "answer − counterfactual (e.g. ' Mary' − ' John' for IOI).")
        self.position_spin = QSpinBox()
        self.position_spin.setObjectName("attrPosition")
        self.position_spin.setRange(-4096, 4096)
        self.position_spin.setValue(-1)
        self.position_spin.setToolTip("The position whose next-token prediction is explained; "
                                      "-1 is the last token, -2 the one before, 0 the first.")
        self.run_button = QPushButton("Attribute")
        self.run_button.setObjectName("attrRun")
        self.run_button.setToolTip("Compute the logit lens and direct logit attribution for "
                                   "this target")
        self.preview = QLabel()
        self.preview.setObjectName("attrPreview")
        self.preview.setStyleSheet("color: #555;")
        self.preview.setToolTip("The target as typed, spaces shown as ·")
        row = QHBoxLayout()
        row.addWidget(QLabel("Target"))
        row.addWidget(self.answer_edit, 2)
        row.addWidget(QLabel("minus"))
        row.addWidget(self.cf_edit, 2)
        row.addWidget(self.preview)
        row.addWidget(QLabel("at position"))
        row.addWidget(self.position_spin)
        row.addWidget(self.run_button)
        self._input_row = row
        self.space_note = QLabel()
        self.space_note.setObjectName("attrSpaceNote")
        self.space_note.setStyleSheet("color: #8a5a00;")
        self.space_note.setWordWrap(True)
        self.space_fix = QToolButton()
        self.space_fix.setObjectName("attrSpaceFix")
        self.space_fix.setText("Add the space")
        self.space_fix.setToolTip("Put a leading space in front of the flagged field(s)")
        self.space_fix.clicked.connect(self._add_spaces)
        self.space_box = QWidget()
        note_row = QHBoxLayout(self.space_box)
        note_row.setContentsMargins(0, 0, 0, 0)
        note_row.addWidget(self.space_note, 1)
        note_row.addWidget(self.space_fix, 0, Qt.AlignmentFlag.AlignTop)
        self.space_box.hide()
        self._flagged: list[QLineEdit] = []
        self._spelling_timer = QTimer(self)
        self._spelling_timer.setSingleShot(True)
        self._spelling_timer.setInterval(300)
        self._spelling_timer.timeout.connect(
            lambda: self.sig_spelling.emit(self.answer_edit.text(), self.cf_edit.text()))
        self.message = QLabel()
        self.message.setObjectName("attrMessage")
        self.message.setWordWrap(True)
        self.message.hide()
        self._quick_row = QHBoxLayout()
        self.quick_label = QLabel("Top predictions:")
        self.quick_label.setToolTip("The model's likeliest next tokens at the chosen position. "
                                    "Click one to attribute it; Ctrl+click to make it the "
                                    "counterfactual.")
        self._quick_row.addWidget(self.quick_label)
        self.quick_buttons: list[QToolButton] = []
        # The buttons take the row's room but never widen the panel: those that do not fit
        # (long tokens, a narrow dock) are left out, the likeliest first kept.
        self._quick_tokens: list[str] = []
        self.quick_box = _ResizeAware(self._fit_quick)
        self.quick_box.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        box_row = QHBoxLayout(self.quick_box)
        box_row.setContentsMargins(0, 0, 0, 0)
        box_row.setSpacing(4)
        for i in range(N_QUICK):
            b = QToolButton()
            b.setObjectName(f"attrQuick{i}")
            b.hide()
            b.clicked.connect(lambda _=False, i=i: self._quick_clicked(i))
            self.quick_buttons.append(b)
            box_row.addWidget(b)
        box_row.addStretch(1)
        self._quick_row.addWidget(self.quick_box, 1)
        self._quick_tokens: list[str] = []
        self.batch_check = QCheckBox("Batch of prompts")
        self.batch_check.setObjectName("attrBatchCheck")
        self.batch_check.setToolTip("Average the attribution over several prompts, one per line, "
                                    "and show the "
                                    "mean with the per-prompt spread.")
        self.batch_edit = QPlainTextEdit()
        self.batch_edit.setObjectName("attrBatch")
        self.batch_edit.setPlaceholderText("One per line:  prompt | answer | counterfactual\n"
                                           "(Mary means ' Mary'; quote a token to keep it exact; "
                                           "an empty answer uses the fields above)")
        self.batch_edit.setToolTip("Each line: prompt | answer | counterfactual. Prompts may "
                                   "differ in length; each uses the position above.")
        self.batch_edit.setMaximumHeight(90)
        self.ioi_button = QPushButton("IOI examples")
        self.ioi_button.setToolTip("Fill in a few indirect-object-identification prompts with "
                                   "their answer and counterfactual names")
        self.ioi_button.clicked.connect(
            lambda: self.batch_edit.setPlainText("\n".join(IOI_EXAMPLES)))
        self.batch_box = QWidget()
        bl = QHBoxLayout(self.batch_box)
        bl.setContentsMargins(0, 0, 0, 0)
        bl.addWidget(self.batch_edit, 1)
        bl.addWidget(self.ioi_button, 0, Qt.AlignmentFlag.AlignTop)
        self.batch_box.hide()
        self.batch_check.toggled.connect(self.batch_box.setVisible)
        self._quick_row.addWidget(self.batch_check)  # right end of the quick-targets row
        self.run_button.clicked.connect(self.request_run)
        self.answer_edit.returnPressed.connect(self.request_run)
        self.cf_edit.returnPressed.connect(self.request_run)
        for edit in (self.answer_edit, self.cf_edit):
            edit.textEdited.connect(lambda _t: self.clear_message())
            edit.textChanged.connect(lambda _t: self._update_preview())
            # Typed by the user (not set by a click on a model's token): check the spelling.
            edit.textEdited.connect(lambda _t: self._spelling_timer.start())

    def set_space_notes(self, notes) -> None:
        """Show leading-space notes for the fields (from the tokenizer), with a one-click fix."""
        notes = list(notes)
        self._flagged = [e for e, name in ((self.answer_edit, "Answer"),
                                           (self.cf_edit, "Counterfactual"))
                         if any(n.startswith(name + " ") for n in notes)]
        self.space_note.setText(" ".join(notes))
        self.space_box.setVisible(bool(notes))

    def _add_spaces(self) -> None:
        for edit in self._flagged:
            if edit.text() and not edit.text()[0].isspace():
                edit.setText(" " + edit.text())
        self.set_space_notes([])

    def _update_preview(self) -> None:
        a, c = self.answer_edit.text(), self.cf_edit.text()
        text = f"= {visible(a)}" if a else ""
        if a and c:
            text += f" − {visible(c)}"
        self.preview.setText(text)

    def _build_views(self) -> None:
        self.summary = QLabel("Run a prompt and pick a target to see which layers and heads "
                              "push the model toward it.")
        self.summary.setObjectName("attrSummary")
        self.summary.setWordWrap(True)
        self.summary.setTextFormat(Qt.TextFormat.RichText)
        self.prompt_combo = QComboBox()
        self.prompt_combo.setObjectName("attrPromptCombo")
        self.prompt_combo.setToolTip("Show the mean over all prompts (bars), their min..max "
                                     "(error bars) and each prompt (dots), or one prompt")
        self.prompt_combo.hide()
        self.prompt_combo.currentIndexChanged.connect(lambda _i: self._redraw())
        self._summary_row = QHBoxLayout()
        self._summary_row.addWidget(self.summary, 1)
        self._summary_row.addWidget(self.prompt_combo)

        self.lens_chart = BarChart("v")
        self.lens_chart.setObjectName("attrLensChart")
        self.lens_chart.setToolTip("Logit lens: the target read from the residual stream after "
                                   "each sublayer (final LayerNorm recomputed, W_U, b_U). Click "
                                   "a bar to select that layer.")
        self.overlay_check = QCheckBox("Overlay DLA of the accumulated stream (final-layer LN "
                                       "scale, no b_U)")
        self.overlay_check.setToolTip("TransformerLens's direct_logit_attribution(unit='layer'): "
                                      "the same stream scaled by the final LayerNorm's cached "
                                      "scale, as the components are — it ends at the sum of the "
                                      "components.")
        self.overlay_check.toggled.connect(lambda _b: self._redraw())
        self.lens_table = QTableView()
        self.lens_table.setObjectName("attrLensTable")
        self.lens_model = QStandardItemModel(0, 0)
        self.lens_table.setModel(self.lens_model)
        self.lens_table.setEditTriggers(QTableView.EditTrigger.NoEditTriggers)
        self.lens_table.setSelectionBehavior(QTableView.SelectionBehavior.SelectRows)
        self.lens_table.verticalHeader().setVisible(False)
        self.lens_table.horizontalHeader().setSectionResizeMode(
            QHeaderView.ResizeMode.ResizeToContents)
        self.lens_table.horizontalHeader().setStretchLastSection(True)
        self.lens_table.setToolTip("Per stream entry: the target's value, its rank among all "
                                   "tokens (0 = top), and the top tokens with their logits. "
                                   "Click a row to select that layer.")
        lens_top = QWidget()
        lt = QVBoxLayout(lens_top)
        lt.setContentsMargins(0, 0, 0, 0)
        lt.addWidget(self.lens_chart, 1)
        lt.addWidget(self.overlay_check)
        self.lens_chart.setMinimumHeight(160)
        self.lens_table.setMinimumHeight(60)
        lens_split = QSplitter(Qt.Orientation.Vertical)
        lens_split.addWidget(lens_top)
        lens_split.addWidget(self.lens_table)
        lens_split.setStretchFactor(0, 3)  # the chart gets most of the height, the table a
        lens_split.setStretchFactor(1, 1)  # few rows (it scrolls)

        self.comp_chart = BarChart("v")
        self.comp_chart.setObjectName("attrComponentChart")
        self.comp_chart.setToolTip("Direct logit attribution of each component's output "
                                   "(final-layer LN scale). Click a bar to select its layer.")

        self.heatmap = HeadHeatmap()
        self.heatmap.setToolTip("Direct logit attribution of each attention head "
                                "(layers × heads). Click a cell to select the head.")
        self.top_heads = BarChart("h")
        self.top_heads.setObjectName("attrTopHeads")
        self.top_heads.setToolTip("The heads with the largest |attribution|, sorted. Click one "
                                  "to select it.")
        heads_split = QSplitter(Qt.Orientation.Horizontal)
        heads_split.addWidget(self.heatmap)
        heads_split.addWidget(self.top_heads)
        heads_split.setSizes([400, 300])

        self.tabs = QTabWidget()
        self.tabs.setObjectName("attrTabs")
        self.tabs.addTab(lens_split, "Logit lens")
        self.tabs.addTab(self.comp_chart, "Components")
        self.tabs.addTab(heads_split, "Heads")
        self.tabs.setTabToolTip(0, "The target's logit after each layer, with rank and top tokens")
        self.tabs.setTabToolTip(1, "What each embedding, attention and MLP output adds directly")
        self.tabs.setTabToolTip(2, "What each attention head adds directly")

        self.lens_chart.sig_bar_clicked.connect(lambda i: self._bar_clicked(self.lens_chart, i))
        self.comp_chart.sig_bar_clicked.connect(lambda i: self._bar_clicked(self.comp_chart, i))
        self.top_heads.sig_bar_clicked.connect(lambda i: self._bar_clicked(self.top_heads, i))
        self.heatmap.sig_head_clicked.connect(self.sig_head_clicked)
        self.lens_table.clicked.connect(self._lens_row_clicked)

        # Export buttons sit in the tab bar's corner: no row of their own under the chart.
        self.export_buttons = {}
        corner = QWidget()
        export_row = QHBoxLayout(corner)
        export_row.setContentsMargins(0, 0, 2, 0)
        export_row.setSpacing(2)
        export_row.addWidget(QLabel("Export"))
        for kind, tip in (("png", "Save the current view as a PNG image"),
                          ("svg", "Save the current view as an SVG vector image"),
                          ("csv", "Save the current view's numbers (mean, min, max and every "
                                  "prompt) as CSV")):
            b = QToolButton()
            b.setText(f"{kind.upper()}…")
            b.setObjectName(f"attrExport{kind.upper()}")
            b.setToolTip(tip)
            b.setEnabled(False)
            b.clicked.connect(lambda _=False, k=kind: self.sig_export.emit(k))
            self.export_buttons[kind] = b
            export_row.addWidget(b)
        self.tabs.setCornerWidget(corner, Qt.Corner.TopRightCorner)

    # -- inputs -------------------------------------------------------------------------------
    def target(self) -> tuple[str, str, int]:
        return self.answer_edit.text(), self.cf_edit.text(), self.position_spin.value()

    def set_target(self, answer: str, counterfactual: str = "", position: int | None = None):
        self.answer_edit.setText(answer)
        self.cf_edit.setText(counterfactual)
        if position is not None:
            self.position_spin.setValue(position)

    def batch_items(self) -> list[tuple[str, str, str, int]]:
        """Parse the batch box; raise ValueError with a message for a malformed line."""
        answer, cf, pos = self.target()
        items = []
        for n, line in enumerate(self.batch_edit.toPlainText().splitlines(), 1):
            if not line.strip():
                continue
            parts = [p for p in line.split("|")]
            if len(parts) > 3:
                raise ValueError(f"Batch line {n} has {len(parts)} fields; use "
                                 "'prompt | answer | counterfactual'.")
            prompt = parts[0].rstrip()
            a = _token_field(parts[1]) if len(parts) > 1 and parts[1].strip() else answer
            c = _token_field(parts[2]) if len(parts) > 2 and parts[2].strip() else cf
            items.append((prompt, a, c, pos))
        if not items:
            raise ValueError("The batch is empty: add lines 'prompt | answer | counterfactual' "
                             "or untick the batch box.")
        return items

    def request_run(self) -> None:
        """Emit the run intent for the single target or the batch."""
        if self.batch_check.isChecked():
            try:
                items = self.batch_items()
            except ValueError as exc:
                self.show_message(str(exc))
                return
        else:
            answer, cf, pos = self.target()
            items = [("", answer, cf, pos)]
        self.clear_message()
        self.sig_run.emit(items)

    def show_message(self, text: str, error: bool = True) -> None:
        self.message.setStyleSheet("color: #b00020;" if error else "color: #555;")
        self.message.setText(text)
        self.message.setVisible(bool(text))

    def clear_message(self) -> None:
        self.message.clear()
        self.message.hide()

    def set_quick_targets(self, tokens, probs=None) -> None:
        """The model's top next tokens at the chosen position, as one-click targets."""
        self._quick_tokens = [str(t) for t in list(tokens)[:N_QUICK]]
        for i, b in enumerate(self.quick_buttons):
            if i < len(self._quick_tokens):
                tok = self._quick_tokens[i]
                text = visible(tok)
                text = text if len(text) <= 12 else text[:11] + "…"  # the row must fit
                if probs is not None and i < len(probs):
                    text += f" {float(probs[i]):.0%}"
                b.setText(text)
                b.setToolTip(f"Attribute {tok!r}. Ctrl+click: use it as the counterfactual.")
        self.quick_label.setVisible(bool(self._quick_tokens))
        self._fit_quick()

    def _fit_quick(self) -> None:
        room = self.quick_box.width()
        used = 0
        for i, b in enumerate(self.quick_buttons):
            used += b.sizeHint().width() + (4 if i else 0)
            b.setVisible(i < len(self._quick_tokens) and used <= room)

    def _quick_clicked(self, i: int) -> None:
        if i >= len(self._quick_tokens):
            return
        tok = self._quick_tokens[i]
        mods = QApplication.keyboardModifiers()
        if mods & Qt.KeyboardModifier.ControlModifier:
            self.cf_edit.setText(tok)
        else:
            self.answer_edit.setText(tok)
        if not self.batch_check.isChecked():
            self.request_run()

    # -- results ------------------------------------------------------------------------------
    def set_result(self, result) -> None:
        """Show an AttributionResult (duck-typed)."""
        self.result = result
        self.prompt_combo.blockSignals(True)
        self.prompt_combo.clear()
        if result.n_prompts > 1:
            self.prompt_combo.addItem(f"Mean of {result.n_prompts} prompts (min…max)")
            for i, p in enumerate(result.prompts):
                short = p if len(p) <= 40 else p[:37] + "…"
                self.prompt_combo.addItem(f"{i + 1}: {short}")
        self.prompt_combo.setVisible(result.n_prompts > 1)
        self.prompt_combo.blockSignals(False)
        for b in self.export_buttons.values():
            b.setEnabled(True)
        self._redraw()

    def clear_result(self) -> None:
        self.result = None
        self.lens_chart.clear()
        self.comp_chart.clear()
        self.top_heads.clear()
        self.heatmap.clear()
        self.lens_model.clear()
        self.prompt_combo.hide()
        self.set_quick_targets([])
        self.summary.setText("Run a prompt and pick a target.")
        for b in self.export_buttons.values():
            b.setEnabled(False)

    def shown_prompt(self) -> int:
        """-1 when the batch mean is shown, else the prompt index."""
        r = self.result
        if r is None or r.n_prompts == 1:
            return 0
        return self.prompt_combo.currentIndex() - 1

    def _stats(self, arr: np.ndarray):
        """(values, lower, upper, samples) for the prompt selection: mean/min/max over prompts."""
        i = self.shown_prompt()
        if i >= 0:
            return arr[i], None, None, None
        return arr.mean(0), arr.min(0), arr.max(0), arr

    def value_name(self) -> str:
        r = self.result
        return "logit difference" if r is not None and r.is_difference else "logit"

    def _redraw(self) -> None:
        r = self.result
        if r is None:
            return
        i = self.shown_prompt()
        name = self.value_name()
        target = self._target_text(i)
        # logit lens
        v, lo, hi, s = self._stats(r.lens_values)
        details = [lens_description(lab, r.n_layers) for lab in r.lens_labels]
        overlay = None
        if self.overlay_check.isChecked() and np.isfinite(r.lens_direct).all():
            overlay = r.lens_direct[i] if i >= 0 else r.lens_direct.mean(0)
        self.lens_chart.set_data(r.lens_labels, v, lo, hi, s, details, overlay,
                                 "DLA (final LN scale)")
        self.lens_chart.set_axis_titles("residual stream after", f"{name} (logit lens)")
        self.lens_chart.set_title(f"Logit lens: {escape(target)}")
        self._fill_lens_table(v)
        # components (not shown where the architecture's components do not add up)
        if np.isfinite(r.component_values).any():
            v, lo, hi, s = self._stats(r.component_values)
            self.comp_chart.set_data(r.component_labels, v, lo, hi, s,
                                     [component_description(lab) for lab in r.component_labels])
            self.comp_chart.set_axis_titles("component", f"direct attribution to the {name}")
            self.comp_chart.set_title(f"Direct logit attribution per component: "
                                      f"{escape(target)}")
        else:
            self.comp_chart.clear()
            self.comp_chart.set_title("Per-component attribution is not defined on this "
                                      "architecture (see the note below)")
        # heads (not shown where a head's write is not its own z·W_O)
        if not np.isfinite(r.head_values).any():
            self.heatmap.clear()
            self.heatmap.plot.setTitle("Per-head DLA is not defined on this architecture<br>"
                                       "<small>(see the note below)</small>", color="#222",
                                       size="10pt")
            self.top_heads.clear()
            self.top_heads.set_title("")
            order = np.zeros(0, dtype=int)
        else:
            hv, hlo, hhi, hs = self._stats(r.head_values)
            self.heatmap.set_data(hv, hlo, hhi)
            rem = float(r.head_remainder[i] if i >= 0 else r.head_remainder.mean())
            self.heatmap.plot.setTitle(f"Per-head DLA: {escape(target)}<br><small>everything "
                                       f"else (embeddings, MLPs, b_O): {rem:+.3f}</small>",
                                       color="#222", size="10pt")
            flat = hv.reshape(-1)
            order = np.argsort(-np.abs(flat), kind="stable")[:N_TOP_HEADS]
            labels = [f"L{k // r.n_heads}H{k % r.n_heads}" for k in order]
            self.top_heads.set_data(
                labels, flat[order],
                None if hlo is None else hlo.reshape(-1)[order],
                None if hhi is None else hhi.reshape(-1)[order],
                None if hs is None else hs.reshape(hs.shape[0], -1)[:, order])
            self.top_heads.set_axis_titles("head", f"direct attribution to the {name}")
            self.top_heads.set_title("Top heads by |attribution|")
        self._top_head_order = order
        self.set_selected_head(*self._selected)
        self._summarise()

    def _target_text(self, i: int, html: bool = False) -> str:
        """The target of prompt ``i`` (or of the batch, i = -1) in words."""
        r = self.result
        p = max(i, 0)
        same = len(set(zip(r.answers, r.counterfactuals, strict=True))) == 1
        if i < 0 and not same:
            return "answer − counterfactual (per prompt)" if r.is_difference else \
                "answer (per prompt)"
        a, c = repr(r.answers[p]), repr(r.counterfactuals[p])
        if html:
            a, c = f"<b>{escape(a)}</b>", f"<b>{escape(c)}</b>"
        return f"{a} − {c}" if r.is_difference else a

    def _fill_lens_table(self, values) -> None:
        r = self.result
        i = self.shown_prompt()
        p = max(i, 0)
        self.lens_model.clear()
        single = r.n_prompts == 1
        if i < 0:
            headers = ["after", f"{self.value_name()} (mean)", "rank of the answer (median)"]
            if r.is_difference:
                headers.append("rank of the counterfactual (median)")
        else:
            headers = ["after", self.value_name(), f"rank of {r.answers[p]!r}"]
            if r.is_difference:
                headers.append(f"rank of {r.counterfactuals[p]!r}")
        k = r.lens_top_ids.shape[-1]
        headers.append(f"top-{k} tokens (logit)" + ("" if single else f", prompt {p + 1}"))
        self.lens_model.setHorizontalHeaderLabels(headers)
        for e, label in enumerate(r.lens_labels):
            if i < 0:
                rank = f"{float(np.median(r.lens_ranks[:, e])):g}"
                cf_rank = f"{float(np.median(r.lens_cf_ranks[:, e])):g}"
            else:
                rank, cf_rank = str(int(r.lens_ranks[i, e])), str(int(r.lens_cf_ranks[i, e]))
            row = [QStandardItem(label), QStandardItem(f"{float(values[e]):+.3f}"),
                   QStandardItem(rank)]
            row[0].setToolTip(lens_description(label, r.n_layers))
            if r.is_difference:
                row.append(QStandardItem(cf_rank))
            tops = "  ".join(f"{visible(t)} ({float(lg):.2f})" for t, lg in
                             zip(r.lens_top_tokens[p][e], r.lens_top_logits[p, e], strict=True))
            row.append(QStandardItem(tops))
            self.lens_model.appendRow(row)

    def _summarise(self) -> None:
        r = self.result
        i = self.shown_prompt()
        p = max(i, 0)
        kind = "logit difference" if r.is_difference else "logit"
        what = f"{self._target_text(i, html=True)} {kind}"
        pos = int(r.positions[p])
        tok = visible(r.str_tokens[p][pos])
        sel = (slice(None) if i < 0 else slice(i, i + 1))
        final = float(r.final_values[sel].mean())
        comps = float(r.component_values[sel].sum(-1).mean())
        bias = float(r.bias_values[sel].mean())
        where = (f"over {r.n_prompts} prompts (mean)" if i < 0
                 else f"after pos {pos} <code>{escape(tok)}</code>")
        direct = float(np.asarray(r.lens_direct)[sel, -1].mean())
        notes = "".join(f"<br><small style='color:#8a5a00'>{escape(n)}</small>"
                        for n in getattr(r, "notes", ()))
        if not np.isfinite(comps):
            body = (f"model {final:+.3f}; direct attribution of the final residual stream "
                    f"{direct:+.3f} + b<sub>U</sub> {bias:+.3f}" if np.isfinite(direct)
                    else f"model {final:+.3f}")
        elif abs(direct + bias - final) > 1e-3 * max(1.0, abs(final)):
            # the readout is not linear (soft-capped logits): the identity holds before it
            body = (f"model {final:+.3f}; before the model's final transform: components "
                    f"{comps:+.3f} + b<sub>U</sub> {bias:+.3f} = {comps + bias:+.3f}")
        else:
            body = (f"model {final:+.3f} = components {comps:+.3f} + b<sub>U</sub> "
                    f"{bias:+.3f}")
        self.summary.setText(f"{what} {where}: {body}{notes}")

    # -- selection ----------------------------------------------------------------------------
    def _bar_clicked(self, chart: BarChart, index: int) -> None:
        label = chart.labels[index]
        lh = layer_of_label(label)
        if lh is None and label == "final_post" and self.result is not None:
            lh = (self.result.n_layers - 1, -1)
        if lh is not None:
            self.sig_head_clicked.emit(*lh)

    def _lens_row_clicked(self, index) -> None:
        if self.result is not None and 0 <= index.row() < len(self.lens_chart.labels):
            self._bar_clicked(self.lens_chart, index.row())

    def set_selected_head(self, layer: int, head: int) -> None:
        """Outline the selected head (or layer, head -1) in the heat map and the top-head list."""
        self._selected = (layer, head)
        self.heatmap.set_highlight(layer, head)
        idx = -1
        if self.result is not None and head >= 0:
            labels = self.top_heads.labels
            name = f"L{layer}H{head}"
            idx = labels.index(name) if name in labels else -1
        self.top_heads.set_highlight(idx)
        comp = -1
        if self.result is not None:
            labels = list(self.comp_chart.labels)
            name = f"{layer}_attn_out"
            comp = labels.index(name) if name in labels else -1
        self.comp_chart.set_highlight(comp)

    # -- export -------------------------------------------------------------------------------
    def export_item(self):
        """The pyqtgraph item to export for the current tab."""
        return {0: self.lens_chart.plot, 1: self.comp_chart.plot,
                2: self.heatmap.view.ci}[self.tabs.currentIndex()]

    def export_view(self):
        """The view of the current tab (it prepares itself for export: title, no outlines)."""
        return {0: self.lens_chart, 1: self.comp_chart, 2: self.heatmap}[self.tabs.currentIndex()]

    def export_table(self) -> tuple[list[str], list[list]]:
        """(header, rows) of the current tab's numbers: mean, min, max and every prompt."""
        r = self.result
        if r is None:
            return [], []
        tab = self.tabs.currentIndex()
        if tab == 0:
            labels, arr = list(r.lens_labels), r.lens_values
        elif tab == 1:
            labels, arr = list(r.component_labels), r.component_values
        else:
            labels = [f"L{k // r.n_heads}H{k % r.n_heads}"
                      for k in range(r.n_layers * r.n_heads)]
            arr = r.head_values.reshape(r.n_prompts, -1)
        header = ["label", "mean", "min", "max"] + [f"prompt_{j + 1}"
                                                    for j in range(r.n_prompts)]
        if tab == 0:
            header += [f"rank_prompt_{j + 1}" for j in range(r.n_prompts)]
        rows = []
        for c, label in enumerate(labels):
            col = arr[:, c]
            row = [label, float(col.mean()), float(col.min()), float(col.max())]
            row += [float(x) for x in col]
            if tab == 0:
                row += [int(x) for x in r.lens_ranks[:, c]]
            rows.append(row)
        return header, rows

    def export_name(self) -> str:
        return ["logit_lens", "components", "heads"][self.tabs.currentIndex()]


def _token_field(text: str) -> str:
    """A batch-line answer. Names in IOI lines are written without their leading space, so
    ``Mary`` means " Mary"; a quoted field (``'Mary'`` or ``"-"``) is taken exactly."""
    text = text.strip()
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
        return text[1:-1]
    return " " + text if text else text
