"""Binding for the Layer attribution panel: runs ``engine.attribution.run_attribution``.

The target (answer, optional counterfactual, position) comes from the panel; the prompt is the
current one unless the panel's batch box gives its own. Input errors go next to the panel's
inputs and the previous result stays on screen. Clicking a layer or head sets the shared
selection. Export writes the current view as PNG/SVG (pyqtgraph exporters) or CSV.
"""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import Qt, QTimer
from PySide6.QtWidgets import QFileDialog

from app.exports import export_figure, figure_title, write_csv
from app.panels.base import PanelBinding
from app.session_schema import MAX_TEXT, Bool, Int, Obj, Str
from widgets.attribution_panel import AttributionPanel

PICK_HINT = ("Type an answer token (e.g. ' Paris', with its leading space) or click one of the "
             "model's top predictions.")


class AttributionBinding(PanelBinding):
    title = "Layer attribution"
    object_name = "attributionDock"
    state_schema = Obj({"answer": Str(1000), "counterfactual": Str(1000), "position": Int(),
                        "batch": Bool(), "batch_text": Str(MAX_TEXT), "tab": Int()})
    area = Qt.DockWidgetArea.BottomDockWidgetArea
    tooltip = "Logit lens and direct logit attribution: which layers and heads push the model " \
              "toward an answer"
    channel = "attribution"

    def create_widget(self):
        panel = AttributionPanel()
        sel = self.controller.selection
        panel.sig_run.connect(self.run_items)
        panel.sig_head_clicked.connect(sel.set_head)
        panel.sig_export.connect(self.export_dialog)
        panel.sig_spelling.connect(self.check_spelling)
        sel.head_selected.connect(panel.set_selected_head)
        sel.position_changed.connect(self._position_changed)
        panel.position_spin.valueChanged.connect(lambda _v: self.refresh_quick_targets())
        self.controller.job_done.connect(self._job_done)
        self._truncate = False
        return panel

    # -- running ------------------------------------------------------------------------------
    def on_prompt_run(self, prompt: str, truncate: bool) -> None:
        self._truncate = truncate
        panel = self.widget
        if panel.batch_check.isChecked():
            return  # a batch has its own prompts; the user reruns it explicitly
        if panel.answer_edit.text():
            panel.request_run()
        else:
            panel.show_message(PICK_HINT, error=False)

    def run_items(self, items) -> int:
        """Submit ``[(prompt, answer, counterfactual, position)]``; "" = the current prompt."""
        if self.controller.model_info is None:
            self.widget.show_message(self.no_model_text())
            return -1
        from engine.attribution import AttributionItem, AttributionRequest, run_attribution
        from engine.targets import Target

        current = self.controller.selection.prompt
        if any(not p for p, *_ in items) and not current.strip():
            self.widget.show_message("Run a prompt first (or use the batch box).")
            return -1
        if any(not a for _p, a, _c, _pos in items):
            self.widget.show_message("The answer is empty. " + PICK_HINT)
            return -1
        request = AttributionRequest(
            tuple(AttributionItem(p or current, Target(a, c, int(pos))) for p, a, c, pos in items),
            truncate=self._truncate)
        return self.controller.submit(self.channel, run_attribution, request,
                                      on_result=self._show, on_error=self._on_error)

    def check_spelling(self, answer: str, counterfactual: str) -> None:
        """Warn, as the user types, when a field lacks the leading space its word needs."""
        if self.controller.model_info is None or not (answer or counterfactual):
            self.widget.set_space_notes([])
            return
        from engine.targets import SpellingRequest, spelling_notes

        request = SpellingRequest((("Answer", answer), ("Counterfactual", counterfactual)))
        self.controller.submit(self.channel + ".spelling", spelling_notes, request,
                               on_result=self.widget.set_space_notes)

    def session_results(self) -> dict:
        return {"attribution": self.widget.result}

    def restore_results(self, results: dict) -> None:
        from app.session_results import expect

        result = expect(results, "attribution", "AttributionResult")
        if result is not None:
            self._show(result)

    def _show(self, result) -> None:
        self.widget.clear_message()
        self.widget.set_result(result)
        sel = self.controller.selection
        self.widget.set_selected_head(sel.layer, sel.head)
        last = self.controller.last_prompt_result
        if last is not None and last.prompt == result.prompts[0]:
            self.refresh_quick_targets()
        elif result.n_prompts == 1:
            # the final stream entry's top tokens are the model's own top predictions
            self.widget.set_quick_targets(
                [t for t in result.lens_top_tokens[0][-1] if t and "\ufffd" not in t])

    def _on_error(self, info) -> bool:
        """Input problems go next to the panel's inputs; the previous result stays."""
        if info.kind in ("input", "too_long"):
            self.widget.show_message(f"{info.message} {info.hint}".strip())
            return True
        return False

    def on_model_loaded(self, info) -> None:
        self.widget.clear_result()

    def on_no_model(self, text: str) -> None:
        self.widget.clear_result()
        self.widget.show_message(text)

    # -- quick targets and selection ----------------------------------------------------------
    def _job_done(self, channel: str) -> None:
        if channel == "predictions":
            # job_done comes just before the predictions binding stores its result: look after
            QTimer.singleShot(0, self.refresh_quick_targets)

    def _position_changed(self, position: int) -> None:
        self.widget.position_spin.setValue(position)

    def refresh_quick_targets(self) -> None:
        """One-click targets: the predictions panel's top-k at the chosen position."""
        result = self.controller.last_prompt_result
        if result is None:
            return
        n = len(result.top_tokens)
        pos = self.widget.position_spin.value()
        if not -n <= pos < n:
            self.widget.set_quick_targets([])
            return
        # byte fragments of a multi-byte character ("\ufffd") cannot be typed back as one token
        keep = [j for j, t in enumerate(result.top_tokens[pos]) if "\ufffd" not in t and t]
        self.widget.set_quick_targets([result.top_tokens[pos][j] for j in keep],
                                      [float(result.top_probs[pos, j]) for j in keep])

    # -- export -------------------------------------------------------------------------------
    def export_dialog(self, kind: str) -> None:
        filters = {"png": "PNG image (*.png)", "svg": "SVG image (*.svg)",
                   "csv": "CSV table (*.csv)"}
        path, _ = QFileDialog.getSaveFileName(self.widget, f"Export {kind.upper()}",
                                              f"{self.widget.export_name()}.{kind}",
                                              filters[kind])
        if path:
            self.export(kind, path)

    def export(self, kind: str, path: str) -> None:
        """Write the panel's current view to ``path`` as ``kind`` (png, svg or csv)."""
        panel = self.widget
        if panel.result is None:
            panel.show_message("Nothing to export yet.")
            return
        try:
            if kind == "csv":
                header, rows = panel.export_table()
                info = self.controller.model_info
                r = panel.result
                write_csv(path, [("model", info.name if info is not None else ""),
                                 *[(f"prompt {i + 1}", p) for i, p in enumerate(r.prompts)],
                                 ("view", self.figure_title().split("\n")[0]),
                                 ("units", "logits (direct contribution to the answer's logit "
                                           "minus the counterfactual's, or to the answer's)")],
                          header, rows)
                return
            export_figure(panel.export_view(), panel.export_item(), str(Path(path)), kind,
                          self.figure_title(), min_width=1200)
        except OSError as exc:
            panel.show_message(f"Could not write {path}: {exc.strerror or exc}")

    def figure_title(self) -> str:
        """What an exported chart shows: the model, the view and target, the prompt(s)."""
        panel, r = self.widget, self.widget.result
        info = self.controller.model_info
        what = ["Logit lens", "Direct logit attribution per component",
                "Direct logit attribution per head"][panel.tabs.currentIndex()]
        i = panel.shown_prompt()
        prompt = r.prompts[max(i, 0)] if r.n_prompts == 1 or i >= 0 else ""
        many = f" (mean of {r.n_prompts} prompts)" if r.n_prompts > 1 and i < 0 else ""
        return figure_title(info.name if info is not None else "",
                            f"{what}: {panel._target_text(i)}{many}", prompt)

    # -- session ------------------------------------------------------------------------------
    def session_state(self) -> dict:
        p = self.widget
        return {"answer": p.answer_edit.text(), "counterfactual": p.cf_edit.text(),
                "position": p.position_spin.value(), "batch": p.batch_check.isChecked(),
                "batch_text": p.batch_edit.toPlainText(), "tab": p.tabs.currentIndex()}

    def restore_session_state(self, state: dict) -> None:
        """Settings from a session file; values of the wrong type are ignored, not fatal."""
        p = self.widget
        if not isinstance(state, dict):
            return

        def get(key, kind, default):
            value = state.get(key, default)
            try:
                return kind(value) if isinstance(value, (str, int, float, bool)) else default
            except (TypeError, ValueError):
                return default

        p.set_target(get("answer", str, "")[:200], get("counterfactual", str, "")[:200],
                     max(-4096, min(4096, get("position", int, -1))))
        p.batch_check.setChecked(get("batch", bool, False))
        p.batch_edit.setPlainText(get("batch_text", str, "")[:200_000])
        p.tabs.setCurrentIndex(max(0, min(2, get("tab", int, 0))))

