"""What a panel binding is: the app-side glue between one view in widgets/ and the engine.

A binding creates its widget, turns the widget's intents into controller jobs, and passes results
back with ``set_result``. The main window only puts each binding's widget in a dock.

Bindings import the engine (and with it torch and TransformerLens) inside their methods, never at
module level: the window is built and shown before the worker thread has imported them.
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
        # Whether the panel's dock is on screen (a tab behind another is not, though Qt keeps
        # it "visible"); the main window feeds this from QDockWidget.visibilityChanged.
        self.on_screen = window is None
        # A session's prompt whose results this panel gets back from the file (app.session_results):
        # its automatic rerun is skipped; any other prompt clears it.
        self.restored_prompt: str | None = None
        self.widget: QWidget = self.create_widget()
        # A bar above the panel (the main window puts it there) for what the panel's results
        # cannot say themselves: e.g. a session's saved results belong to another model.
        from widgets.notice_bar import NoticeBar

        self.notice = NoticeBar()
        self.notice.sig_action.connect(self._notice_action)
        self._on_notice = None
        # Right-click anywhere the panel's own controls leave the menu to it: Copy as code
        # (analysis panels only: a text panel keeps its own menu).
        from app.script_export import PANEL_SECTIONS

        if self.object_name in PANEL_SECTIONS:
            self.widget.setContextMenuPolicy(Qt.ContextMenuPolicy.CustomContextMenu)
            self.widget.customContextMenuRequested.connect(self._context_menu)
        controller.prompt_run.connect(self._prompt_run)
        controller.model_loaded.connect(self.on_model_loaded)
        controller.model_failed.connect(self._model_failed)
        controller.model_loaded.connect(lambda _info: self.notice.dismiss())

    def create_widget(self) -> QWidget:
        raise NotImplementedError

    def _context_menu(self, pos) -> None:
        if self.window is None:
            return
        from PySide6.QtWidgets import QMenu

        menu = QMenu(self.widget)
        self.copy_code_action(menu)
        menu.exec(self.widget.mapToGlobal(pos))

    def copy_code_action(self, menu):
        """Add "Copy as code" (this panel's analysis as a TransformerLens script) to ``menu``."""
        from app.script_export import copy_as_code

        action = menu.addAction("Copy as code")
        action.setObjectName("copyAsCode")
        action.setToolTip("Copy this panel's analysis as a self-contained TransformerLens 4 "
                          "script that prints the same numbers")
        action.triggered.connect(lambda: copy_as_code(self.window, self.object_name))
        return action

    def _prompt_run(self, prompt: str, truncate: bool) -> None:
        self.notice.dismiss()  # what it said was about results this run replaces
        if self.restored_prompt is not None:
            if prompt == self.restored_prompt and not truncate:
                return
            self.restored_prompt = None
        self.on_prompt_run(prompt, truncate)

    def on_prompt_run(self, prompt: str, truncate: bool) -> None:
        """The user ran a prompt; recompute if this panel is visible."""

    def on_model_loaded(self, info) -> None:
        """A new model replaced the old one; results of the old one are no longer valid."""

    def set_on_screen(self, shown: bool) -> None:
        self.on_screen = bool(shown)
        if shown:
            self.on_shown()

    def on_shown(self) -> None:
        """The panel's dock came on screen (shown, or its tab raised)."""

    def edit_actions(self) -> list:
        """Undo/redo-style QActions the main window lists in its Edit menu."""
        return []

    def no_model_text(self) -> str:
        """Why nothing can run: the failed load's reason when there is one."""
        info = self.controller.load_error
        reason = f" ({info.message})" if info is not None else ""
        return f"No model is loaded{reason}. Load one with Model > Load model… (Ctrl+L)."

    def _model_failed(self, info) -> None:
        if self.controller.model_info is None:
            self.on_no_model(self.no_model_text())

    def on_no_model(self, text: str) -> None:
        """A load failed and no model is loaded: show ``text`` instead of waiting for one."""

    # The shape session_state() has (app.session_schema): a session file's state for this panel
    # is checked against it before anything of the session is applied.
    state_schema = None

    def session_state(self) -> dict:
        """Plain JSON-able settings worth saving in a session."""
        return {}

    def validate_session_state(self, state: object) -> str | None:
        """Why ``state`` (from a file: hostile) cannot be restored, naming the field; or None."""
        from app.session_schema import Obj, SchemaError

        try:
            (self.state_schema or Obj({})).check(state, f"panels.{self.object_name}")
        except SchemaError as exc:
            return str(exc)
        return None

    def restore_session_state(self, state: dict) -> None:
        pass

    def session_results(self) -> dict:
        """The computed results on screen worth saving: name -> engine result (or None)."""
        return {}

    def restore_results(self, results: dict) -> None:
        """Show results saved by ``session_results`` (checked to be of this model)."""

    def offer_recompute(self, text: str, results: dict, prompt: str) -> None:
        """Saved ``results`` cannot be shown (``text`` says why): show nothing of them, and offer
        to compute the same analyses on the loaded model."""
        self._on_notice = lambda: self.recompute(results, prompt)
        self.notice.show_notice(text, "Recompute", "Run this panel's saved analyses again on "
                                "the loaded model, with the session's prompts and settings")

    def recompute(self, results: dict, prompt: str) -> None:
        """Compute again what ``results`` (decoded from a session) showed: by default the
        panel's analysis of ``prompt``; panels whose results need more say so."""
        if prompt:
            self.on_prompt_run(prompt, False)

    def _notice_action(self) -> None:
        action, self._on_notice = self._on_notice, None
        if action is not None:
            action()
