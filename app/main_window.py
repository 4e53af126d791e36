"""The main window only assembles: prompt editor in the centre, panels in docks, menus, status."""

from __future__ import annotations

from PySide6.QtCore import QSize, Qt, Signal
from PySide6.QtGui import QAction, QGuiApplication, QKeySequence
from PySide6.QtWidgets import QDockWidget, QMainWindow, QMenu, QVBoxLayout, QWidget

from app import help_menu, layout_state
from app.controller import Controller
from app.dock_scroll import PanelScrollArea
from app.error_view import ErrorView
from app.panels import PANELS
from app.status_bar import JobStatusBar
from engine.model_sources import ModelSpec
from widgets.prompt_editor import PromptEditor


def default_size() -> QSize:
    """1400x900, or the screen's available area if smaller (a 1366x768 laptop)."""
    size = QSize(1400, 900)
    screen = QGuiApplication.primaryScreen()
    if screen is not None and QGuiApplication.platformName() != "offscreen":
        size = size.boundedTo(screen.availableGeometry().size())
    return size


class MainWindow(QMainWindow):
    sig_closed = Signal()

    def __init__(self, controller: Controller | None = None, restore_layout: bool = True,
                 persist: bool = True) -> None:
        super().__init__()
        # persist=False (--screenshot, --self-test): never write the autosave or the layout.
        self.persist = persist
        self.setWindowTitle("Untitled[*] — Lensbench")
        self.setObjectName("MainWindow")
        self.resize(default_size())
        self.setDockNestingEnabled(True)
        # The right-hand column (predictions) runs the full height; plots fill the bottom.
        self.setCorner(Qt.Corner.TopRightCorner, Qt.DockWidgetArea.RightDockWidgetArea)
        self.setCorner(Qt.Corner.BottomRightCorner, Qt.DockWidgetArea.RightDockWidgetArea)
        self.controller = controller or Controller(self)
        self.model_spec = ModelSpec()
        self._session_path: str | None = None
        self.prompt_editor = PromptEditor()
        self.setCentralWidget(self.prompt_editor)
        self.status = JobStatusBar(self.controller, self)
        self.setStatusBar(self.status)
        self.errors = ErrorView(self)
        self.bindings = []
        self._pending_run: tuple[str, bool] | None = None  # asked for while a model loads
        self.docks: dict[str, QDockWidget] = {}
        first_in_area: dict = {}
        for binding_cls in PANELS:
            binding = binding_cls(self.controller, self)
            dock = QDockWidget(binding.title, self)
            dock.setObjectName(binding.object_name)
            # A scroll area lets a dock shrink below its panel's minimum size (small laptop
            # screens, many docks side by side); the panel scrolls instead of forcing the width.
            scroll = PanelScrollArea(binding.widget)
            scroll.setObjectName(binding.object_name + "Scroll")
            # Above it, the panel's notice bar (hidden until the panel has something to say).
            holder = QWidget()
            holder.setObjectName(binding.object_name + "Holder")
            column = QVBoxLayout(holder)
            column.setContentsMargins(0, 0, 0, 0)
            column.setSpacing(0)
            column.addWidget(binding.notice)
            column.addWidget(scroll, 1)
            dock.setWidget(holder)
            dock.setToolTip(binding.tooltip)
            dock.visibilityChanged.connect(binding.set_on_screen)
            # By default each dock area is one tab group, so every panel gets the full width;
            # users drag tabs apart to see panels side by side.
            tab_with = self.docks.get(getattr(binding, "tab_with", "")) or first_in_area.get(
                binding.area)
            if tab_with is not None:
                self.tabifyDockWidget(tab_with, dock)
            else:
                self.addDockWidget(binding.area, dock)
                first_in_area[binding.area] = dock
            self.bindings.append(binding)
            self.docks[binding.object_name] = dock
        if "attentionDock" in self.docks:
            self.docks["attentionDock"].raise_()  # the first thing a researcher looks at
        self._default_state = self.saveState(layout_state.LAYOUT_VERSION)
        self._build_menus()
        from app.lesson_dock import install as install_lessons

        install_lessons(self)  # Help > Lessons, Help > Example sessions
        help_menu.build(self)  # then shortcuts, documentation and About
        self.prompt_editor.sig_run.connect(self._run_prompt)
        self.prompt_editor.sig_bos.connect(self._bos_toggled)
        self.controller.bos_changed.connect(self._bos_shown)
        self.controller.error.connect(self.errors.show)
        self.controller.model_loaded.connect(self._model_loaded)
        self.controller.model_failed.connect(self._model_failed)
        self.controller.selection.prompt_changed.connect(self.prompt_editor.set_prompt)
        if restore_layout:
            layout_state.restore_layout(self)
        from app.autosave import Autosaver
        from app.session_lifecycle import SessionLifecycle

        self.autosaver = Autosaver(self, active=persist)
        self.lifecycle = SessionLifecycle(self, persist=persist)
        self.prompt_editor.edit.setFocus()  # typing a prompt is the first thing to do

    @property
    def session_path(self) -> str | None:
        """The file the session was opened from or saved to; None while untitled."""
        return self._session_path

    @session_path.setter
    def session_path(self, path: str | None) -> None:
        self._session_path = path
        lifecycle = getattr(self, "lifecycle", None)
        if lifecycle is not None:
            lifecycle.refresh()  # the title names the file

    # -- menus --------------------------------------------------------------------------------
    def _build_menus(self) -> None:
        from app import recent_files, recovery, session_actions

        file_menu = self.menuBar().addMenu("&File")
        self.action_new = QAction("&New session", self, shortcut=QKeySequence.StandardKey.New)
        self.action_open = QAction("&Open session…", self, shortcut=QKeySequence.StandardKey.Open)
        self.recent_menu = QMenu("Open &recent", self)
        self.recent_menu.aboutToShow.connect(
            lambda: recent_files.fill_menu(self.recent_menu, self.lifecycle.open_file))
        self.action_save = QAction("&Save session", self, shortcut=QKeySequence.StandardKey.Save)
        self.action_save_as = QAction("Save session &as…", self,
                                      shortcut=QKeySequence.StandardKey.SaveAs)
        self.action_new.triggered.connect(lambda: self.lifecycle.new_session())
        self.action_open.triggered.connect(lambda: session_actions.open_dialog(self))
        self.action_save.triggered.connect(lambda: session_actions.save(self))
        self.action_save_as.triggered.connect(lambda: session_actions.save_as_dialog(self))
        self.action_recover = QAction("&Recover unsaved work…", self)
        self.action_recover.setToolTip("Sessions saved automatically before Lensbench closed "
                                       "without saving them")
        self.action_recover.triggered.connect(lambda: recovery.recover_action(self))
        quit_action = QAction("&Quit", self, shortcut=QKeySequence.StandardKey.Quit)
        quit_action.triggered.connect(self.close)
        file_menu.addAction(self.action_new)
        file_menu.addAction(self.action_open)
        file_menu.addMenu(self.recent_menu)
        file_menu.addSeparator()
        file_menu.addAction(self.action_save)
        file_menu.addAction(self.action_save_as)
        file_menu.addSeparator()
        from app import script_export

        self.action_export_script = QAction("&Export as Python script…", self)
        self.action_export_script.setToolTip(
            "A self-contained TransformerLens 4 script that reruns these analyses and prints the "
            "same numbers")
        self.action_export_script.triggered.connect(lambda: script_export.export_dialog(self))
        file_menu.addAction(self.action_export_script)
        file_menu.addSeparator()
        file_menu.addAction(self.action_recover)
        file_menu.addSeparator()
        file_menu.addAction(quit_action)
        edit_menu = self.menuBar().addMenu("&Edit")  # the panels' undoable edits (the plan)
        for binding in self.bindings:
            for action in binding.edit_actions():
                edit_menu.addAction(action)
        edit_menu.menuAction().setVisible(not edit_menu.isEmpty())
        model_menu = self.menuBar().addMenu("&Model")
        self.action_load = QAction("&Load model…", self, shortcut="Ctrl+L")
        self.action_load.triggered.connect(self.open_model_dialog)
        model_menu.addAction(self.action_load)
        view_menu = self.menuBar().addMenu("&View")
        for dock in self.docks.values():
            view_menu.addAction(dock.toggleViewAction())
        from app import notes_dock

        notes_dock.install(self, view_menu)
        view_menu.addSeparator()
        self.action_reset_layout = QAction("&Reset layout", self)
        self.action_reset_layout.triggered.connect(self.reset_layout)
        view_menu.addAction(self.action_reset_layout)
        cancel = QAction("Cancel job", self, shortcut=Qt.Key.Key_Escape)
        cancel.triggered.connect(self.controller.cancel_all)
        self.addAction(cancel)

    def reset_layout(self) -> None:
        for dock in self.docks.values():
            dock.setFloating(False)
            dock.show()
        self.restoreState(self._default_state, layout_state.LAYOUT_VERSION)

    # -- actions ------------------------------------------------------------------------------
    def load_model(self, spec: ModelSpec, preview=None) -> int:
        """``preview``: a PromptRequest to answer early from the checkpoint (start-up)."""
        self.model_spec = spec
        return self.controller.load_model(spec, preview=preview)

    def open_model_dialog(self) -> None:
        from app.model_dialog import ModelDialog

        dialog = ModelDialog(self, self.model_spec)
        if dialog.exec():
            self.load_model(dialog.spec())

    def _run_prompt(self, prompt: str, top_k: int, truncate: bool) -> None:
        if not prompt.strip():
            self.prompt_editor.show_message("The prompt is empty. Type some text to run the "
                                            "model on.")
            return
        if self.controller.loading:
            # Nothing runs behind a load: if it failed, every panel would wait for nothing.
            self._pending_run = (prompt, truncate)
            self.prompt_editor.show_message("The model is loading; the prompt runs as soon as it "
                                            "is ready.", error=False)
            return
        if self.controller.model_info is None:
            info = self.controller.load_error
            reason = f": {info.message}" if info is not None else "."
            self.prompt_editor.show_message(f"No model is loaded{reason} Use Model > Load "
                                            "model… (Ctrl+L).")
            return
        self.controller.run_prompt(prompt, truncate)

    def _bos_toggled(self, on: bool) -> None:
        """One BOS policy for every panel: the model's default unless the user chooses; every
        panel recomputes with it."""
        info = self.controller.model_info
        default = info.default_prepend_bos if info is not None else True
        self.controller.set_prepend_bos(None if on == default else on)
        prompt = self.controller.selection.prompt
        if info is not None and prompt.strip():
            self.controller.run_prompt(prompt)

    def _bos_shown(self, choice) -> None:
        info = self.controller.model_info
        self.prompt_editor.set_bos(info.default_prepend_bos if info is not None else True, choice)

    def _model_loaded(self, info) -> None:
        """A new model: every panel has dropped the old one's results; run the prompt again."""
        self.prompt_editor.set_bos(info.default_prepend_bos, None)
        pending, self._pending_run = self._pending_run, None
        prompt, truncate = pending or (self.controller.selection.prompt, False)
        if prompt.strip():
            self.prompt_editor.clear_message()
            self.controller.run_prompt(prompt, truncate)

    def _model_failed(self, info) -> None:
        pending, self._pending_run = self._pending_run, None
        if self.controller.model_info is None:
            self.prompt_editor.show_message(f"No model is loaded: {info.message} Use Model > "
                                            "Load model… (Ctrl+L).")
        elif pending is not None:  # the previous model is still loaded: run it there
            self.prompt_editor.clear_message()
            self.controller.run_prompt(*pending)

    def closeEvent(self, event) -> None:
        if not self.lifecycle.confirm_close():  # Cancel keeps the window and the work
            event.ignore()
            return
        if self.persist:
            layout_state.save_layout(self)
        self.autosaver.finish()  # a clean exit: its autosave and lock go
        self.controller.shutdown()
        self.sig_closed.emit()
        super().closeEvent(event)
