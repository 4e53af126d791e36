"""What a panel binding is: the app-side glue between one view in widgets/ and the engine.

A binding creates its widget, turns the widget's intents into controller jobs, and passes results
back with ``set_result``. The main window only puts each binding's widget in a dock.
"""

from __future__ import annotations

from PySide6.QtCore import QObject, Qt
from PySide6.QtWidgets import QWidget


class PanelBinding(QObject):
    title = "Panel"
    object_name = "panel"
    area = Qt.DockWidgetArea.RightDockWidgetArea
    tooltip = ""
    tab_with = ""  # object_name of a dock to share tabs with

    def __init__(self, controller, window=None) -> None:
        super().__init__(window)
        self.controller = controller
        self.window = window
        self.widget: QWidget = self.create_widget()
        controller.prompt_run.connect(self.on_prompt_run)
        controller.model_loaded.connect(self.on_model_loaded)

    def create_widget(self) -> QWidget:
        raise NotImplementedError

    def on_prompt_run(self, prompt: str, truncate: bool) -> None:
        """The user ran a prompt; recompute if this panel is visible."""

    def on_model_loaded(self, info) -> None:
        """A new model replaced the old one; results of the old one are no longer valid."""

    def session_state(self) -> dict:
        """Plain JSON-able settings worth saving in a session."""
        return {}

    def restore_session_state(self, state: dict) -> None:
        pass
