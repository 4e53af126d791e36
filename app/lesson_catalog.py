"""The guided lessons shipped in resources/lessons/: one folder per lesson, read as plain data.

Each folder holds ``lesson.json`` and the lesson's session file. ``lesson.json``::

    {"format": 1, "title": "...", "summary": "...", "minutes": 15,
     "session": "session.lensbench",
     "setup": {...},            # what tools/make_lesson_sessions.py puts in the session
     "steps": [{"title": "...", "do": "...", "see": "...",
                "check": {...},              # app.lesson_checks
                "show_me": {"action": ...}}]} # optional: what "Show me" does

Lesson files are data like sessions: size-limited, parsed as JSON, every field type-checked; a
lesson that does not validate is reported, never half-loaded. No Qt here.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from app.lesson_checks import validate as validate_check

LESSONS_DIR = Path(__file__).resolve().parent.parent / "resources" / "lessons"
EXAMPLES_DIR = Path(__file__).resolve().parent.parent / "resources" / "examples"
FORMAT = 1
MAX_BYTES = 256_000
MAX_TEXT = 4000
# show_me actions and their arguments (app.lesson_dock performs them)
ACTIONS = {
    "run_prompt": {"prompt"},
    "select_head": {"layer", "head", "panel"},
    "show_panel": {"panel"},
    "induction_scan": {"seq_len", "batch", "seed"},
    "induction_ablate": {"heads", "mode", "control_sets", "control_seed"},
    "attribution": {"answer", "counterfactual", "position", "tab"},
    "patch_sweep": {"kind", "pairs"},
}


class LessonError(Exception):
    """A lesson file that cannot be used; the message names the file and the problem."""


@dataclass(frozen=True)
class Step:
    title: str
    do: str
    see: str
    check: dict
    show_me: dict | None


@dataclass(frozen=True)
class Lesson:
    folder: Path
    title: str
    summary: str
    minutes: int
    session_path: Path
    setup: dict
    steps: tuple[Step, ...]

    @property
    def id(self) -> str:
        return self.folder.name


def _text(data: dict, key: str, where: str, required: bool = True) -> str:
    value = data.get(key, None if required else "")
    if not isinstance(value, str) or (required and not value.strip()) or len(value) > MAX_TEXT:
        raise LessonError(f"{where}: '{key}' must be a text of 1-{MAX_TEXT} characters.")
    return value


def _step(data, where: str) -> Step:
    if not isinstance(data, dict):
        raise LessonError(f"{where}: a step must be an object.")
    check = data.get("check")
    problems = validate_check(check)
    if problems:
        raise LessonError(f"{where}: check: {problems[0]}.")
    show_me = data.get("show_me")
    if show_me is not None:
        if not isinstance(show_me, dict) or show_me.get("action") not in ACTIONS:
            raise LessonError(f"{where}: show_me needs an action of {sorted(ACTIONS)}.")
        extra = set(show_me) - {"action"} - ACTIONS[show_me["action"]]
        if extra:
            raise LessonError(f"{where}: show_me {show_me['action']} has no argument "
                              f"{sorted(extra)[0]!r}.")
    return Step(_text(data, "title", where), _text(data, "do", where), _text(data, "see", where),
                check, show_me)


def load_lesson(folder: Path) -> Lesson:
    folder = Path(folder)
    path = folder / "lesson.json"
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise LessonError(f"{path}: {exc.strerror or exc}") from None
    if len(raw) > MAX_BYTES:
        raise LessonError(f"{path}: larger than {MAX_BYTES} bytes.")
    try:
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise LessonError(f"{path}: not valid JSON ({exc}).") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise LessonError(f"{path}: not a lesson of format {FORMAT}.")
    where = folder.name
    session = _text(data, "session", where)
    if "/" in session or "\\" in session or not session.endswith(".lensbench"):
        raise LessonError(f"{where}: 'session' must name a .lensbench file in the lesson folder.")
    steps = data.get("steps")
    if not isinstance(steps, list) or not 1 <= len(steps) <= 30:
        raise LessonError(f"{where}: 'steps' must be a list of 1-30 steps.")
    minutes = data.get("minutes", 0)
    setup = data.get("setup", {})
    if not isinstance(minutes, int) or not isinstance(setup, dict):
        raise LessonError(f"{where}: 'minutes' must be a number and 'setup' an object.")
    return Lesson(folder, _text(data, "title", where), _text(data, "summary", where), minutes,
                  folder / session, setup,
                  tuple(_step(s, f"{where}, step {i + 1}") for i, s in enumerate(steps)))


def load_lessons(root: Path = LESSONS_DIR) -> list[Lesson]:
    """Every lesson under ``root``, in folder-name order. Raises LessonError on the first bad one
    (shipped lessons are tested; a broken one is a bug to report, not to skip silently)."""
    if not root.is_dir():
        return []
    return [load_lesson(d) for d in sorted(root.iterdir()) if (d / "lesson.json").is_file()]


def example_sessions(root: Path = EXAMPLES_DIR) -> list[Path]:
    return sorted(root.glob("*.lensbench")) if root.is_dir() else []
