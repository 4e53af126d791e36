"""Help > Lessons: every shipped lesson, run as a student would, turns every check green on the
bundled model; checks can fail and wait; lesson files are data, validated; sessions are current."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest
from PySide6.QtCore import Qt

from app.dock_scroll import PanelScrollArea
from app.lesson_catalog import LessonError, load_lesson, load_lessons
from app.lesson_checks import FAIL, PASS, PENDING, Observed, evaluate, validate
from app.session_io import load_session

LESSONS = load_lessons()


def test_at_least_four_lessons_with_sessions():
    assert [lesson.id for lesson in LESSONS][:4] == [
        "01-induction-heads", "02-factual-recall", "03-ioi-patching", "04-ablation"]
    for lesson in LESSONS:
        manifest, _ = load_session(lesson.session_path)
        assert manifest["model"]["source"] == "bundled"
        assert all(step.check for step in lesson.steps)


@pytest.fixture()
def lesson_window(qtbot):
    """The real window, nothing persisted, with the bundled model (as a lesson starts it)."""
    from app.main_window import MainWindow

    win = MainWindow(restore_layout=False, persist=False)
    qtbot.addWidget(win)
    win.resize(1366, 768)
    win.show()
    yield win
    win.close()
    assert win.controller.thread.isFinished(), "the worker thread leaked"


def _idle(qtbot, win, timeout=180_000):
    qtbot.waitUntil(lambda: not win.controller.busy, timeout=timeout)


@pytest.mark.parametrize("index", range(len(LESSONS)), ids=[lesson.id for lesson in LESSONS])
def test_lesson_checks_turn_green_on_the_shipped_model(qtbot, lesson_window, index,
                                                       artifacts_dir):
    """Open Help > Lessons, start the lesson, press every step's Show me and check that every
    step's check (as shown on screen) passes, in order, on the bundled model."""
    win = lesson_window
    lessons = win.lessons
    win.action_lessons.trigger()  # Help > Lessons
    assert lessons.dock.isVisible()
    panel = lessons.widget
    panel.picker.setCurrentIndex(index)
    lesson = LESSONS[index]
    assert panel.picker.currentText() == lesson.title
    assert len(panel.cards) == len(lesson.steps)
    assert all(card.state == PENDING for card in panel.cards)
    qtbot.mouseClick(panel.open_button, Qt.MouseButton.LeftButton)
    _idle(qtbot, win)
    assert win.controller.model_info is not None and win.controller.model_info.n_layers == 4
    assert win.prompt_editor.prompt() == lesson.setup["prompt"]
    assert win.session_path is None  # Save never writes into the installed lesson
    for i, (step, card) in enumerate(zip(lesson.steps, panel.cards, strict=True)):
        if step.show_me is not None:
            assert card.show_me.isVisible()
            qtbot.mouseClick(card.show_me, Qt.MouseButton.LeftButton)
            _idle(qtbot, win)
        qtbot.waitUntil(lambda card=card: card.state != PENDING, timeout=10_000)
        assert card.state == PASS, f"step {i + 1} ({step.title}): {card.check.text()}"
        assert card.symbol.text() == "\u2714"
    assert panel.progress.text() == f"{len(lesson.steps)} of {len(lesson.steps)} checks passed"
    win.grab().save(str(artifacts_dir / f"lesson_{lesson.id}.png"))


def _scan(induction: float, previous: float = 0.98):
    rep = {"induction": np.zeros((4, 4), np.float32), "previous": np.zeros((4, 4), np.float32)}
    rep["induction"][1, 1] = induction
    rep["previous"][0, 0] = previous
    return SimpleNamespace(repeated=rep, first_half_loss=8.1, second_half_loss=0.2)


def test_a_check_waits_then_passes_or_fails_with_the_measured_value():
    check = {"measure": "head_score", "args": {"score": "induction", "layer": 1, "head": 1},
             "op": ">", "value": 0.9, "name": "L1H1 induction score"}
    assert validate(check) == []
    waiting = evaluate(check, Observed())
    assert waiting.state == PENDING and "Scan" in waiting.text
    assert evaluate(check, Observed({"induction": _scan(0.95)})) .state == PASS
    failed = evaluate(check, Observed({"induction": _scan(0.42)}))
    assert failed.state == FAIL and "0.42" in failed.text and "expected > 0.9" in failed.text
    both = {"all": [check, {"measure": "best_head", "args": {"score": "previous"}, "op": "==",
                            "value": "L0H0"}]}
    assert evaluate(both, Observed({"induction": _scan(0.95)})).state == PASS
    assert evaluate(both, Observed({"induction": _scan(0.5)})).state == FAIL


def test_attention_measures_on_a_known_pattern():
    """Previous-token and induction attention of hand-made patterns with known answers."""
    from app.lesson_checks import induction_attention, previous_token_attention

    n = 7  # BOS a b c a b c
    ids = np.array([0, 5, 6, 7, 5, 6, 7])
    prev = np.zeros((n, n), np.float32)
    prev[0, 0] = 1
    for q in range(1, n):
        prev[q, q - 1] = 1
    induct = np.zeros((n, n), np.float32)
    induct[:, 0] = 1
    for q in (4, 5, 6):  # the token after the earlier occurrence of the same token
        induct[q] = 0
        induct[q, q - 2] = 0.75
        induct[q, 0] = 0.25
    item = SimpleNamespace(label="p", token_ids=ids, patterns=np.stack([np.stack([prev, induct])]))
    obs = Observed({"attention": SimpleNamespace(items=(item,), layers=(0,))})
    assert previous_token_attention(obs, 0, 0) == pytest.approx(1.0)
    assert previous_token_attention(obs, 0, 1) == pytest.approx(1 / 6)  # only q=1 looks back 1
    assert induction_attention(obs, 0, 1) == pytest.approx(0.75)
    assert induction_attention(obs, 0, 0) == pytest.approx(0.0)


def test_results_of_another_model_do_not_count(qtbot, lesson_window, tiny_gpt2_dir):
    from engine.model_sources import ModelSpec

    win = lesson_window
    lessons = win.lessons
    lessons.observed.results["induction"] = _scan(0.99)
    assert lessons.evaluate()[3] == PASS  # lesson 1, step 4 (with L0H0 previous score too)
    with qtbot.waitSignal(win.controller.model_loaded, timeout=60_000):
        win.load_model(ModelSpec("folder", str(tiny_gpt2_dir), "cpu"))
    _idle(qtbot, win)
    assert lessons.evaluate()[3] == PENDING
    assert lessons.widget.cards[3].state == PENDING


@pytest.mark.parametrize("edit, message", [
    (lambda d: d.pop("steps"), "steps"),
    (lambda d: d.update(format=2), "format 1"),
    (lambda d: d.update(session="../../etc/passwd.lensbench"), "in the lesson folder"),
    (lambda d: d["steps"][0].update(check={"measure": "eval", "op": ">", "value": 1}),
     "unknown measure 'eval'"),
    (lambda d: d["steps"][0].update(check={"measure": "head_score", "op": "~", "value": 1}),
     "unknown operator"),
    (lambda d: d["steps"][0].update(check={"measure": "head_score", "args": {"evil": 1},
                                           "op": ">", "value": 1}), "no argument 'evil'"),
    (lambda d: d["steps"][0].update(show_me={"action": "exec", "code": "1"}), "show_me"),
    (lambda d: d["steps"][0].update(title=None), "'title'"),
])
def test_bad_lesson_files_are_refused(tmp_path, edit, message):
    data = json.loads((LESSONS[0].folder / "lesson.json").read_text())
    edit(data)
    folder = tmp_path / "bad"
    folder.mkdir()
    (folder / "lesson.json").write_text(json.dumps(data))
    with pytest.raises(LessonError, match=message):
        load_lesson(folder)
    (folder / "lesson.json").write_bytes(b"\xff\xfe not json")
    with pytest.raises(LessonError, match="not valid JSON"):
        load_lesson(folder)


def test_shipped_sessions_are_what_the_generator_writes(qtbot):
    """resources/ holds the sessions tools/make_lesson_sessions.py makes from each setup."""
    from tools.make_lesson_sessions import fresh_window, manifest_for, targets

    for path, setup in targets():
        window = fresh_window()
        qtbot.addWidget(window)
        expected = manifest_for(window, setup)
        shipped, _ = load_session(path)
        for key in ("schema_version", "app"):
            shipped.pop(key, None)
        assert shipped == json.loads(json.dumps(expected)), f"{path} is stale: rerun " \
                                                            "tools/make_lesson_sessions.py"
        window.close()


def test_gpt2_example_says_how_to_get_gpt2_when_not_cached(qtbot, lesson_window, tmp_path,
                                                          monkeypatch):
    from app.lesson_catalog import example_sessions
    from app.lesson_dock import help_menu

    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty"))
    win = lesson_window
    examples = [a for a in help_menu(win).actions() if a.menu() is not None][0].menu()
    names = [a.text() for a in examples.actions()]
    assert "gpt2 small ioi" in names
    assert [p.stem for p in example_sessions()] == ["gpt2-small-ioi"]
    from app.session_actions import manifest_of

    before = manifest_of(win)
    # Opening is all-or-nothing (issue 17): a session whose model cannot be loaded is refused
    # before anything of it is applied, with the way to get the model.
    examples.actions()[names.index("gpt2 small ioi")].trigger()
    text = win.errors.visible_text
    assert "not in the Hugging Face cache" in text
    from engine.model_sources import download_command

    assert f"`{download_command('gpt2')}`" in text  # `hf download gpt2` (issue 15)
    assert manifest_of(win) == before
    assert win.session_path is None


def test_gpt2_example_loads_gpt2_small_from_the_cache(qtbot, lesson_window, tmp_path,
                                                     monkeypatch, tiny_gpt2_dir):
    from app.lesson_catalog import example_sessions
    from app.session_actions import open_path
    from tests.model_fixtures import make_fake_hf_cache

    cache = tmp_path / "hub"
    make_fake_hf_cache(cache, "openai-community/gpt2", tiny_gpt2_dir)
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setattr("engine.model_sources.hub_reachable",
                        lambda timeout=3.0: pytest.fail("must not touch the network"))
    win = lesson_window
    with qtbot.waitSignal(win.controller.model_loaded, timeout=60_000) as blocker:
        assert open_path(win, str(example_sessions()[0]))
    assert blocker.args[0].name == "gpt2-small"
    _idle(qtbot, win)
    assert win.docks["patchingDock"].findChild(PanelScrollArea).widget().pairs()[0][2] == " Mary"
