"""Results in session files: every panel's computed results come back bit for bit without being
recomputed, only on the model they were computed on; hostile result data is refused cleanly."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
from PySide6.QtCore import Qt

from app import session_actions
from app.session_io import load_session, save_session
from tests.app.conftest import run_prompt_and_wait
from tests.app.test_attribution_panel import attribute
from tests.app.test_patching_panel import binding as patching_binding
from tests.app.test_patching_panel import drop_on, run_panel_sweep, wait_idle

PROMPT = "When John and Mary went to the store, John gave a drink to"


def bind(win, name):
    return next(b for b in win.bindings if b.object_name == name)


def same(a, b) -> None:
    """Equal field by field; arrays bit for bit (dtype, shape, bytes; NaN where NaN)."""
    assert type(a) is type(b)
    if dataclasses.is_dataclass(a):
        for f in dataclasses.fields(a):
            same(getattr(a, f.name), getattr(b, f.name))
    elif isinstance(a, np.ndarray):
        assert a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()
    elif isinstance(a, dict):
        assert a.keys() == b.keys()
        for k in a:
            same(a[k], b[k])
    elif isinstance(a, (tuple, list)):
        assert len(a) == len(b)
        for x, y in zip(a, b, strict=True):
            same(x, y)
    elif isinstance(a, float) and np.isnan(a):
        assert np.isnan(b)
    else:
        assert a == b


def compute_everything(qtbot, win):
    """Predictions, attribution, an induction scan and ablation, and every patching result."""
    induction = bind(win, "inductionDock")
    induction.widget.seq_len.setValue(10)
    induction.widget.batch.setValue(3)
    run_prompt_and_wait(qtbot, win, PROMPT)
    win.docks["inductionDock"].raise_()
    with qtbot.waitSignal(win.controller.busy_changed, timeout=60_000,
                          check_params_cb=lambda busy: busy is False):
        qtbot.mouseClick(induction.widget.scan_button, Qt.MouseButton.LeftButton)
    with qtbot.waitSignal(win.controller.busy_changed, timeout=60_000,
                          check_params_cb=lambda busy: busy is False):
        induction.ablate({"heads": [(1, 1)], "mode": "zero", "control_sets": 2,
                          "control_seed": 1})
    attribute(qtbot, win, " Mary", " John")
    panel = patching_binding(win).widget
    win.docks["patchingDock"].raise_()
    wait_idle(qtbot, win)
    run_panel_sweep(qtbot, win, panel, "block")
    panel.sweep_combo.setCurrentIndex(panel.sweep_combo.findData("head_out"))
    with qtbot.waitSignal(win.controller.job_done, timeout=60_000,
                          check_params_cb=lambda ch: ch == "patching.estimate"):
        qtbot.mouseClick(panel.estimate_button, Qt.MouseButton.LeftButton)
    with qtbot.waitSignal(win.controller.job_done, timeout=60_000,
                          check_params_cb=lambda ch: ch == "patching.path"):
        qtbot.mouseClick(panel.path_button, Qt.MouseButton.LeftButton)
    assert drop_on(panel.plan.list.viewport(),
                   panel.palette.tree.mimeData([panel.palette.find("L1H2")]))
    with qtbot.waitSignal(win.controller.job_done, timeout=60_000,
                          check_params_cb=lambda ch: ch == "patching.plan"):
        qtbot.mouseClick(panel.plan.run_button, Qt.MouseButton.LeftButton)
    wait_idle(qtbot, win)
    results = {b.object_name: {k: v for k, v in b.session_results().items() if v is not None}
               for b in win.bindings}
    assert set(results["patchingDock"]) == {"exact", "estimate", "path", "plan", "view"}
    assert set(results["inductionDock"]) == {"scan", "ablation"}
    assert "attribution" in results["attributionDock"] and "prompt" in results["predictionsDock"]
    return results


@pytest.fixture()
def second_window(qtbot):
    from app.main_window import MainWindow

    win = MainWindow(restore_layout=False)
    qtbot.addWidget(win)
    win.show()
    yield win
    win.close()


def jobs_started(win) -> list[str]:
    started: list[str] = []
    win.controller.job_started.connect(started.append)
    return started


def test_results_come_back_bit_for_bit_without_recomputing(qtbot, window, second_window,
                                                          tmp_path):
    saved = compute_everything(qtbot, window)
    path = str(tmp_path / "study.lensbench")
    assert session_actions.save_to(window, path)
    manifest, arrays = load_session(path)
    assert manifest["results"]["fingerprint"] == window.controller.model_info.fingerprint
    assert manifest["results"]["fingerprint"].startswith("sha256:")
    assert arrays  # the arrays live in the safetensors body, not in the JSON
    # A fresh window opens it at start-up: the model loads, then the results appear.
    win = second_window
    started = jobs_started(win)
    with qtbot.waitSignal(win.controller.busy_changed, timeout=60_000,
                          check_params_cb=lambda busy: busy is False):
        assert session_actions.open_path(win, path)
    wait_idle(qtbot, win)
    for name, results in saved.items():
        got = bind(win, name).session_results()
        for key, value in results.items():
            same(value, got[key])
    # Nothing was recomputed for the panels that got their results back.
    assert not {"predictions", "attribution", "induction", "patching"} & set(started), started
    # ... and what is drawn is the saved numbers.
    panel = patching_binding(win).widget
    assert panel.view_combo.currentData() == saved["patchingDock"]["view"]
    pred = bind(win, "predictionsDock")
    assert pred.widget._result is win.controller.last_prompt_result
    same(pred.widget._result, saved["predictionsDock"]["prompt"])
    # Running a prompt afterwards recomputes as usual.
    started.clear()
    run_prompt_and_wait(qtbot, win, PROMPT)
    assert "predictions" in started


def _other_weights(path: str) -> dict:
    """The file as if saved on the same folder with other weights (a fine-tune, say)."""
    manifest, arrays = load_session(path)
    manifest["results"]["fingerprint"] = "sha256:" + "0" * 64
    save_session(path, manifest, arrays)
    return manifest


def test_results_of_another_model_are_not_shown(qtbot, window, second_window, tmp_path,
                                               artifacts_dir):
    from engine.model_sources import ModelSpec

    run_prompt_and_wait(qtbot, window, PROMPT)
    saved = window.controller.last_prompt_result
    path = str(tmp_path / "a.lensbench")
    assert session_actions.save_to(window, path)
    manifest = _other_weights(path)
    win = second_window
    with qtbot.waitSignal(win.controller.busy_changed, timeout=60_000,
                          check_params_cb=lambda busy: busy is False):
        win.load_model(ModelSpec("folder", manifest["model"]["name"], "cpu"))
    started = jobs_started(win)
    assert session_actions.open_path(win, path)
    wait_idle(qtbot, win)
    # Not shown, and not recomputed unasked: the panel says why and offers to.
    assert "predictions" not in started
    assert win.controller.last_prompt_result is None
    pred = bind(win, "predictionsDock")
    assert pred.widget._result is None
    assert "not shown" in pred.notice.text() and "weights differ" in pred.notice.text()
    assert pred.notice.isVisible() and pred.notice.action_button.text() == "Recompute"
    assert "not shown" in win.statusBar().currentMessage()
    win.resize(1366, 768)
    qtbot.waitUntil(lambda: pred.notice.action_button.width() >= 40)
    win.grab().save(str(artifacts_dir / "session_other_model.png"))
    with qtbot.waitSignal(win.controller.busy_changed, timeout=60_000,
                          check_params_cb=lambda busy: busy is False):
        qtbot.mouseClick(pred.notice.action_button, Qt.MouseButton.LeftButton)
    wait_idle(qtbot, win)
    assert "predictions" in started
    got = win.controller.last_prompt_result
    assert got is not None and got is not saved and got.prompt == PROMPT
    assert not pred.notice.isVisible()
    # The loaded model is the same folder, so the recomputed numbers are the saved ones.
    np.testing.assert_allclose(got.top_probs, saved.top_probs, rtol=1e-5, atol=1e-7)


def test_recompute_runs_every_saved_analysis_again(qtbot, window, second_window, tmp_path):
    """Patching (sweep, estimate, path, plan) and induction (scan, then ablation) saved on
    another model: Recompute runs each again with the session's settings."""
    saved = compute_everything(qtbot, window)
    path = str(tmp_path / "study.lensbench")
    assert session_actions.save_to(window, path)
    _other_weights(path)
    win = second_window
    with qtbot.waitSignal(win.controller.busy_changed, timeout=60_000,
                          check_params_cb=lambda busy: busy is False):
        assert session_actions.open_path(win, path)
    wait_idle(qtbot, win)
    started = jobs_started(win)
    patching, induction = bind(win, "patchingDock"), bind(win, "inductionDock")
    assert patching.widget.exact is None and induction.result is None
    for binding in (patching, induction):
        assert "not shown" in binding.notice.text()
        win.docks[binding.object_name].raise_()
        qtbot.mouseClick(binding.notice.action_button, Qt.MouseButton.LeftButton)
        wait_idle(qtbot, win)
        assert not binding.notice.isVisible()
    assert {"patching", "patching.estimate", "patching.path", "patching.plan", "induction",
            "induction-ablation"} <= set(started), started
    wait_idle(qtbot, win)
    # Same folder, same settings: the same numbers as the session saved.
    exact, want = patching.widget.exact, saved["patchingDock"]["exact"]
    assert exact.kind == want.kind and exact.complete
    np.testing.assert_allclose(exact.values, want.values, atol=1e-4, equal_nan=True)
    np.testing.assert_allclose(patching.widget.plan.result.values,
                               saved["patchingDock"]["plan"].values, atol=1e-4)
    assert induction.ablation is not None
    assert induction.ablation.heads == saved["inductionDock"]["ablation"].heads
    np.testing.assert_allclose(induction.ablation.loss_ablated,
                               saved["inductionDock"]["ablation"].loss_ablated, atol=1e-4)


def _deep(n: int):
    value = [1]
    for _ in range(n):
        value = [value]
    return value


PANEL = "predictionsDock"


def _set(key, value):
    return lambda r: r["panels"][PANEL].update({key: value})


def _field(update=None, pop=None):
    def mutate(r):
        fields = r["panels"][PANEL]["prompt"]["f"]
        if pop:
            fields.pop(pop)
        fields.update(update or {})
    return mutate


REFUSED = [  # caught before the file changes anything: a message, the session untouched
    ("unknown-class", _set("prompt", {"$c": "os.system", "f": {}})),
    ("missing-array", _set("prompt", {"$a": "missing"})),
    ("deep", _set("prompt", _deep(40))),
    ("huge-int", _set("prompt", 2**70)),
    ("not-results", lambda r: r.update(panels=[1, 2])),
    ("newer-format", lambda r: r.update(format=99)),
]
RECOMPUTED = [  # well-formed, but not a result the panel can show: it computes instead
    ("unknown-field", _field(update={"evil": 1})),
    ("missing-field", _field(pop="top_ids")),
    ("wrong-type", _field(update={"top_ids": {"$t": [1, 2]}})),
    ("not-a-dict", lambda r: r["panels"].update({PANEL: 42})),
    ("bad-float", _set("prompt", {"$f": "1e999"})),
]


def _hostile_file(qtbot, window, tmp_path, mutate) -> str:
    run_prompt_and_wait(qtbot, window, PROMPT)
    path = str(tmp_path / "h.lensbench")
    assert session_actions.save_to(window, path)
    manifest, arrays = load_session(path)
    mutate(manifest["results"])
    save_session(path, json.loads(json.dumps(manifest)), arrays)
    return path


@pytest.mark.parametrize("mutate", [m for _n, m in REFUSED], ids=[n for n, _m in REFUSED])
def test_malformed_results_refuse_the_file(qtbot, window, tmp_path, mutate):
    path = _hostile_file(qtbot, window, tmp_path, mutate)
    window.prompt_editor.set_prompt("something else")
    before = session_actions.manifest_of(window)
    assert not session_actions.open_path(window, path)
    assert session_actions.manifest_of(window) == before
    assert window.errors.box is not None and "cannot be opened" in window.errors.box.text()
    assert "Traceback" not in window.errors.box.text()


@pytest.mark.parametrize("mutate", [m for _n, m in RECOMPUTED], ids=[n for n, _m in RECOMPUTED])
def test_results_a_panel_cannot_show_are_recomputed(qtbot, window, tmp_path, mutate):
    path = _hostile_file(qtbot, window, tmp_path, mutate)
    started = jobs_started(window)
    assert session_actions.open_path(window, path)
    wait_idle(qtbot, window)
    assert "predictions" in started  # the panel computed what it could not show
    assert window.controller.last_prompt_result is not None
    assert window.controller.last_prompt_result.prompt == PROMPT


def test_codec_round_trip_keeps_types():
    from app.session_results import decode, encode
    from engine.patching import SweepResult

    r = SweepResult("block", "logit_diff", "denoise", ("component", "layer", "pos"),
                    np.array([[[np.nan, 1.5]]], np.float32), 1, 2, float("inf"), -0.0,
                    ("a", "b"), ("a", "c"), labels={"components": ("resid_pre",),
                                                    "part_shapes": {"k": (2, 3)}, 3: [1.0]})
    arrays: dict = {}
    data = json.loads(json.dumps(encode(r, arrays, "x."), allow_nan=False))
    same(decode(data, arrays), r)
