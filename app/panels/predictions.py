"""Binding for the Predictions panel: runs ``engine.prompt.run_prompt`` for the current prompt."""

from __future__ import annotations

from PySide6.QtCore import Qt

from app.panels.base import PanelBinding
from widgets.predictions_panel import PredictionsPanel

EARLY_NOTE = "From the weights while TransformerLens loads; it recomputes this."


class PredictionsBinding(PanelBinding):
    title = "Predictions"
    object_name = "predictionsDock"
    area = Qt.DockWidgetArea.RightDockWidgetArea
    channel = "predictions"

    def create_widget(self):
        panel = PredictionsPanel()
        panel.sig_position_selected.connect(self.controller.selection.set_position)
        self.controller.selection.position_changed.connect(panel.set_position)
        # At start-up the prompt is answered from the checkpoint before TransformerLens is ready
        # (engine.early_prediction); TransformerLens's own result replaces it.
        self.early = None  # that result while it is on screen
        self.controller.early_prediction.connect(self._show_early)
        panel.sig_export.connect(self.export_dialog)
        return panel

    # -- exports -------------------------------------------------------------------------------
    def export_dialog(self, kind: str) -> None:
        from PySide6.QtWidgets import QFileDialog

        filters = {"png": "PNG image (*.png)", "svg": "SVG image (*.svg)",
                   "csv": "CSV table (*.csv)"}
        path, _ = QFileDialog.getSaveFileName(self.widget, f"Export {kind.upper()}",
                                              f"predictions.{kind}", filters[kind])
        if path:
            self.export(kind, path)

    def export(self, kind: str, path: str) -> str | None:
        """Write the panel as a picture or its table as CSV; returns the path written, or None
        after saying why not in the summary line."""
        from pathlib import Path

        from app.exports import write_csv

        panel = self.widget
        result = panel._result
        if result is None:
            panel.summary.setText("Nothing to export yet: run a prompt first.")
            return None
        out = Path(path)
        if out.suffix.lower() != f".{kind}":
            out = out.with_name(out.name + f".{kind}")
        try:
            if kind == "csv":
                info = self.controller.model_info
                how = EARLY_NOTE if self._showing_early() else "TransformerLens"
                about = [("model", info.name if info is not None else "(loading)"),
                         ("prompt", result.prompt), ("loss", "nats: -log p of each token given "
                                                     "the ones before it"),
                         ("prob", "probability of the next token (softmax of the logits)"),
                         ("computed by", how)]
                header, rows = panel.export_table()
                return write_csv(out, about, header, rows)
            if kind == "png":
                if not panel.grab().save(str(out)):
                    raise OSError(f"Qt could not write {out}")
                return str(out)
            return _render_svg(panel, out)
        except OSError as exc:
            panel.summary.setText(f"Could not write {out}: {getattr(exc, 'strerror', None) or exc}")
            return None

    def session_results(self) -> dict:
        result = self.controller.last_prompt_result
        return {"prompt": result} if result is not None and self.widget._result is result else {}

    def restore_results(self, results: dict) -> None:
        from app.session_results import expect

        result = expect(results, "prompt", "PromptResult")
        if result is not None:
            self._show(result)

    def on_prompt_run(self, prompt: str, truncate: bool) -> None:
        from engine.prompt import PromptRequest, run_prompt

        top_k = self.window.prompt_editor.top_k.value() if self.window is not None else 10
        request = PromptRequest(prompt=prompt, top_k=top_k, truncate=truncate)
        self.controller.submit(self.channel, run_prompt, request, on_result=self._show,
                               on_error=self._on_error)

    def on_model_loaded(self, info) -> None:
        """The old model's predictions are gone; the window re-runs the prompt on the new one.
        An early prediction of this model stays until TransformerLens's result replaces it."""
        if self._showing_early():
            return
        self.widget.clear(f"{info.name} is loaded. Run a prompt to see its predictions.")

    def _showing_early(self) -> bool:
        return self.early is not None and self.widget._result is self.early

    def _show_early(self, result) -> None:
        """Show an early prediction (None: take it back) unless something newer is shown or the
        prompt box holds another prompt by now."""
        if result is None:
            if self._showing_early():
                self.widget.clear()
            self.early = None
            return
        if self.widget._result is not None:
            return
        if self.window is not None and self.window.prompt_editor.prompt() != result.prompt:
            return
        self.early = result
        self.widget.set_result(result, note=EARLY_NOTE)

    def on_no_model(self, text: str) -> None:
        self.widget.clear(text)

    def _show(self, result) -> None:
        self.early = None
        self.widget.set_result(result)
        self.controller.last_prompt_result = result

    def _on_error(self, info) -> bool:
        """Input problems go next to the prompt, not into an error box."""
        if self._showing_early():  # TransformerLens did not confirm it: show nothing
            self.widget.clear()
            self.early = None
        if self.window is not None and info.kind in ("input", "too_long"):
            self.window.prompt_editor.show_message(f"{info.message} {info.hint}",
                                                   offer_truncate=info.kind == "too_long")
            return True
        return False


def _render_svg(widget, out) -> str:
    """The widget as drawn, through Qt's SVG painter (text stays text)."""
    from PySide6.QtCore import QPoint, QRect, QSize
    from PySide6.QtGui import QPainter
    from PySide6.QtSvg import QSvgGenerator

    gen = QSvgGenerator()
    gen.setFileName(str(out))
    gen.setSize(QSize(widget.width(), widget.height()))
    gen.setViewBox(QRect(0, 0, widget.width(), widget.height()))
    gen.setTitle("Lensbench predictions")
    painter = QPainter()
    if not painter.begin(gen):
        raise OSError(f"Qt could not write {out}")
    try:
        widget.render(painter, QPoint(0, 0))
    finally:
        painter.end()
    from app.exports import drop_xml_illegal

    drop_xml_illegal(out)
    return str(out)
