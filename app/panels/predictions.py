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
        return panel

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
