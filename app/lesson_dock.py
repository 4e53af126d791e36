"""Help > Lessons: the guided lessons' side panel, its live checks, and "Show me".

The binding keeps the newest result each panel received (the controller's ``job_result``) and
the selected head, and re-evaluates every step's check whenever one changes, so a step turns green
when the student's own panel shows the expected result. A passed step stays passed while the
lesson goes on (later steps change the prompt or the sweep it was checked on); starting the
lesson again or loading another model clears them, and results of another model never count. Starting a lesson opens its session (model, prompt, panel settings);
the session is then untitled, so saving never writes into the installed lesson files.
"""

from __future__ import annotations

from PySide6.QtCore import QObject, Qt
from PySide6.QtGui import QAction
from PySide6.QtWidgets import QDockWidget, QMenu

from app.lesson_catalog import LessonError, example_sessions, load_lessons
from app.lesson_checks import Observed, evaluate
from widgets.lesson_panel import LessonPanel

DOCK_NAME = "lessonsDock"


def help_menu(window) -> QMenu:
    """The window's Help menu (created if the window has none yet)."""
    for action in window.menuBar().actions():
        menu = action.menu()
        if menu is not None and action.text().replace("&", "") == "Help":
            return menu
    return window.menuBar().addMenu("&Help")


class LessonsBinding(QObject):
    def __init__(self, window) -> None:
        super().__init__(window)
        self.window = window
        self.controller = window.controller
        self.observed = Observed()
        self.lessons = []
        self.load_error = ""
        try:
            self.lessons = load_lessons()
        except LessonError as exc:
            self.load_error = str(exc)
        self.widget = LessonPanel()
        self.widget.set_lessons([lesson.title for lesson in self.lessons])
        self.dock = QDockWidget("Lessons", window)
        self.dock.setObjectName(DOCK_NAME)
        self.dock.setWidget(self.widget)
        self.dock.setToolTip("Guided lessons: steps to follow, checked live against your results")
        window.addDockWidget(Qt.DockWidgetArea.RightDockWidgetArea, self.dock)
        self.dock.hide()
        self._pending_action: tuple[str, dict] | None = None
        self._passed: dict[int, dict[int, str]] = {}  # lesson -> step -> the text it passed with
        self.widget.sig_lesson_selected.connect(self.select_lesson)
        self.widget.sig_open_lesson.connect(self.start_lesson)
        self.widget.sig_show_me.connect(self.show_me)
        self.controller.job_result.connect(self._on_result)
        self.controller.model_loaded.connect(self._on_model_loaded)
        self.controller.selection.head_selected.connect(self._on_head)
        self._on_head(self.controller.selection.layer, self.controller.selection.head)
        if self.lessons:
            self.select_lesson(0)
        if self.load_error:
            self.widget.set_message(f"A lesson could not be read: {self.load_error}")

    # -- showing ---------------------------------------------------------------------------------
    def open(self) -> None:
        """Show the panel (beside the predictions, which matter least during a lesson)."""
        predictions = self.window.docks.get("predictionsDock")
        if self.dock.isHidden() and predictions is not None and not predictions.isFloating():
            self.window.tabifyDockWidget(predictions, self.dock)
        self.dock.show()
        self.dock.raise_()

    def lesson(self):
        i = self.widget.current()
        return self.lessons[i] if 0 <= i < len(self.lessons) else None

    def select_lesson(self, index: int) -> None:
        if not 0 <= index < len(self.lessons):
            return
        lesson = self.lessons[index]
        self.widget.show_lesson(lesson.summary, lesson.minutes,
                                [(s.title, s.do, s.see, s.show_me is not None)
                                 for s in lesson.steps])
        self.evaluate()

    def start_lesson(self, index: int) -> bool:
        """Open the lesson's session: the bundled model, the prompt, the panels' settings."""
        if not 0 <= index < len(self.lessons) or not self.window.lifecycle.maybe_save():
            return False
        if self.widget.current() != index:
            self.widget.picker.setCurrentIndex(index)
        self.observed.results.clear()
        self._passed.pop(index, None)
        lesson = self.lessons[index]
        # Untitled once open: saving asks where, never into the installed lesson.
        ok = self.window.lifecycle.open_file(str(lesson.session_path), ask=False,
                                            untitled=True)
        if ok:
            if lesson.setup.get("raise"):
                self._raise(str(lesson.setup["raise"]))
        self.evaluate()
        return ok

    # -- results ---------------------------------------------------------------------------------
    def _on_result(self, channel: str, result) -> None:
        if channel == "model":
            return
        self.observed.results[channel] = result
        pending, self._pending_action = self._pending_action, None
        if pending is not None:
            if pending[0] == channel:
                self.perform(pending[1])
            else:
                self._pending_action = pending
        self.evaluate()

    def _on_model_loaded(self, _info) -> None:
        self.observed.results.clear()
        self._passed.clear()
        self.evaluate()

    def _on_head(self, layer: int, head: int) -> None:
        self.observed.selected_head = (int(layer), int(head))
        self.evaluate()

    def evaluate(self) -> list[str]:
        """Re-check every step of the shown lesson; returns the states (tests read them too)."""
        lesson = self.lesson()
        if lesson is None:
            return []
        passed = self._passed.setdefault(self.widget.current(), {})
        states = []
        for i, step in enumerate(lesson.steps):
            if i in passed:
                state, text = "pass", passed[i]
            else:
                outcome = evaluate(step.check, self.observed)
                state, text = outcome.state, outcome.text
                if state == "pass":
                    passed[i] = text
            self.widget.set_step_state(i, state, text)
            states.append(state)
        return states

    # -- show me ---------------------------------------------------------------------------------
    def show_me(self, lesson_index: int, step_index: int) -> None:
        if not 0 <= lesson_index < len(self.lessons):
            return
        steps = self.lessons[lesson_index].steps
        if 0 <= step_index < len(steps) and steps[step_index].show_me:
            if self.controller.model_info is None and not self.controller.busy:
                self.widget.set_message("No model is loaded: press Start lesson first.")
                return
            self.widget.set_message("")
            self.perform(steps[step_index].show_me)

    def _binding(self, object_name: str):
        for b in self.window.bindings:
            if b.object_name == object_name:
                return b
        return None

    def _raise(self, object_name: str) -> None:
        dock = self.window.docks.get(object_name)
        if dock is not None:
            dock.show()
            dock.raise_()

    def perform(self, action: dict) -> None:
        """Do what a step's ``show_me`` says, through the panels' own code paths."""
        kind = action["action"]
        window, controller = self.window, self.controller
        if kind == "run_prompt":
            window.prompt_editor.set_prompt(action["prompt"])
            controller.run_prompt(action["prompt"])
        elif kind == "show_panel":
            self._raise(action["panel"])
        elif kind == "select_head":
            self._raise(action.get("panel", "attentionDock"))
            controller.selection.set_head(int(action["layer"]), int(action["head"]))
        elif kind == "induction_scan":
            b = self._binding("inductionDock")
            self._raise("inductionDock")
            settings = b.widget.settings()
            settings.update({k: action[k] for k in ("seq_len", "batch", "seed") if k in action})
            b.scan(settings)
        elif kind == "induction_ablate":
            b = self._binding("inductionDock")
            self._raise("inductionDock")
            if b.result is None:  # the ablation reuses the scan's sequences: scan first
                self._pending_action = ("induction", action)
                b.scan(b.widget.settings())
                return
            b.ablate({"heads": [tuple(h) for h in action["heads"]],
                      "mode": action.get("mode", "zero"),
                      "control_sets": int(action.get("control_sets", 3)),
                      "control_seed": int(action.get("control_seed", 1))})
        elif kind == "attribution":
            b = self._binding("attributionDock")
            self._raise("attributionDock")
            answer, cf = action["answer"], action.get("counterfactual", "")
            position = int(action.get("position", -1))
            b.widget.set_target(answer, cf, position)
            if "tab" in action:
                b.widget.tabs.setCurrentIndex(int(action["tab"]))
            b.run_items([("", answer, cf, position)])
        elif kind == "patch_sweep":
            b = self._binding("patchingDock")
            self._raise("patchingDock")
            for row, pair in enumerate(action.get("pairs", [])):
                b.widget.set_pair(row, *[str(x) for x in pair])
            combo = getattr(b.widget, "sweep_combo", None)
            if combo is not None and combo.findData(action["kind"]) >= 0:
                combo.setCurrentIndex(combo.findData(action["kind"]))
            b.run_sweep(action["kind"])


def install(window) -> LessonsBinding:
    """Add Help > Lessons and Help > Example sessions to the window."""
    binding = LessonsBinding(window)
    menu = help_menu(window)
    action = QAction("&Lessons", window)
    action.setObjectName("actionLessons")
    action.setToolTip("Guided lessons on the bundled model: attention, attribution, patching, "
                      "ablation")
    action.triggered.connect(binding.open)
    menu.addAction(action)
    examples = menu.addMenu("&Example sessions")
    for path in example_sessions():
        item = QAction(path.stem.replace("-", " "), window)
        item.triggered.connect(lambda _c=False, p=str(path): _open_example(window, p))
        examples.addAction(item)
    examples.setEnabled(bool(examples.actions()))
    window.lessons = binding
    window.action_lessons = action
    return binding


def _open_example(window, path: str) -> None:
    window.lifecycle.open_file(path, untitled=True)  # never overwritten by Save
