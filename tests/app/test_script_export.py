"""File > Export as Python script: the exported TransformerLens script, run in a fresh process,
prints the numbers the panels show (1e-4), and a hostile prompt stays a string literal."""

from __future__ import annotations

import ast
import json
import subprocess
import sys

import numpy as np
from PySide6.QtCore import Qt

from tests.app.conftest import run_prompt_and_wait
from tests.app.test_attribution_panel import attribute
from tests.app.test_patching_panel import binding as patching_binding
from tests.app.test_patching_panel import run_panel_sweep, wait_idle

PROMPT = "When John and Mary went to the store, John gave a drink to"


def run_script(path) -> dict:
    out = subprocess.run([sys.executable, str(path)], capture_output=True, text=True,
                         timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    results = {}
    for line in out.stdout.splitlines():
        if line.startswith("RESULT "):
            _, name, value = line.split(" ", 2)
            results[name] = json.loads(value)
    return results


def test_exported_script_prints_the_panels_numbers(qtbot, window, tmp_path, monkeypatch):
    from PySide6.QtWidgets import QFileDialog

    from app import script_export

    induction = next(b for b in window.bindings if b.object_name == "inductionDock")
    window.docks["inductionDock"].show()
    induction.widget.seq_len.setValue(12)
    induction.widget.batch.setValue(3)
    run_prompt_and_wait(qtbot, window, PROMPT)
    window.docks["inductionDock"].raise_()
    with qtbot.waitSignal(window.controller.busy_changed, timeout=60_000,
                          check_params_cb=lambda busy: busy is False):
        qtbot.mouseClick(induction.widget.scan_button, Qt.MouseButton.LeftButton)
    attention = next(b for b in window.bindings if b.object_name == "attentionDock").widget
    predictions = next(b for b in window.bindings if b.object_name == "predictionsDock").widget
    attribution = attribute(qtbot, window, " Mary", " John")
    patching = patching_binding(window).widget
    window.docks["patchingDock"].raise_()
    wait_idle(qtbot, window)
    run_panel_sweep(qtbot, window, patching, "head_out")
    plan = patching.plan
    n = len(patching.result.clean_tokens)
    plan.add_items([{"component": "z", "layer": 1, "index": 2, "positions": []},
                    {"component": "attn_out", "layer": 0, "index": -1, "positions": [3, 5]},
                    {"component": "neuron", "layer": 1, "index": 7, "positions": []},
                    {"component": "pattern", "layer": 1, "index": 0, "positions": [n - 1]}])
    plan.set_mode(1, "mean")
    plan.set_mode(2, "zero")
    plan.set_mode(3, "mean")
    with qtbot.waitSignal(window.controller.job_done, timeout=60_000,
                          check_params_cb=lambda ch: ch == "patching.plan"):
        qtbot.mouseClick(plan.run_button, Qt.MouseButton.LeftButton)
    assert plan.result is not None and len(plan.result.values) == 5
    target = tmp_path / "analysis.py"
    monkeypatch.setattr(QFileDialog, "getSaveFileName",
                        staticmethod(lambda *a, **k: (str(target), "")))
    assert script_export.export_dialog(window) == str(target)
    got = run_script(target)

    pred = predictions._result
    assert got["predictions.str_tokens"] == list(pred.str_tokens)
    np.testing.assert_array_equal(got["predictions.top_ids"], pred.top_ids)
    np.testing.assert_allclose(got["predictions.top_probs"], pred.top_probs, atol=1e-4)
    np.testing.assert_allclose(got["predictions.loss_per_token"], pred.loss_per_token, atol=1e-4)

    layer, head = attention.focused_head()
    item = attention.item()
    row = list(attention.result().layers).index(layer)
    np.testing.assert_allclose(got[f"attention.pattern.L{layer}H{head}"],
                               item.patterns[row, head], atol=1e-4)

    r = attribution.result
    assert tuple(got["attribution.lens_labels"]) == tuple(r.lens_labels)
    np.testing.assert_allclose(got["attribution.logit_lens"], r.lens_values[0], atol=1e-4)
    assert tuple(got["attribution.component_labels"]) == tuple(r.component_labels)
    np.testing.assert_allclose(got["attribution.components"], r.component_values[0], atol=1e-4)
    np.testing.assert_allclose(got["attribution.heads"], r.head_values[0], atol=1e-4)
    assert np.ptp(r.head_values[0]) > 1e-3

    scan = induction.result
    assert scan is not None and scan.prompt_scores
    for kind in ("previous", "duplicate", "induction_detector"):
        np.testing.assert_allclose(got[f"induction.repeated.{kind}"], scan.repeated[kind],
                                   atol=1e-4)
    for kind in ("previous", "duplicate", "induction"):
        np.testing.assert_allclose(got[f"induction.prompt.{kind}"], scan.prompt_scores[kind],
                                   atol=1e-4)
    assert np.ptp(scan.repeated["previous"]) > 1e-3

    sweep = patching.result
    np.testing.assert_allclose(got["patching.head_out"], sweep.values, atol=1e-4)
    np.testing.assert_allclose(got["patching.plan"], plan.result.values, atol=1e-4)
    assert np.ptp(plan.result.values) > 1e-3
    assert np.ptp(sweep.values) > 1e-3


def test_hostile_text_stays_a_literal(tmp_path):
    from app.script_export import ScriptSpec, render

    evil = '"""\nimport os; os.system("touch PWNED")  # \'\'\' \\x00 \\N{ \\x \u2028\\'
    spec = ScriptSpec(model=evil, model_label=evil, prompt=evil, head=(0, 0),
                      attribution=(evil, evil, -1), pairs=[(evil, evil, evil, evil)],
                      sweep="head_out", plan=[(evil, 0, 0, [1], evil)])
    text = render(spec)
    tree = ast.parse(text)
    assigned = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name):
            try:
                assigned[node.targets[0].id] = ast.literal_eval(node.value)
            except ValueError:
                pass
    assert assigned["MODEL"] == evil and assigned["PROMPT"] == evil
    assert assigned["PAIRS"] == [(evil, evil, evil, evil)]
    assert assigned["PLAN"] == [(evil, 0, 0, [1], evil)]
    # Nothing but the expected top-level statements: imports, literals, defs, model calls.
    assert isinstance(tree.body[0].value, ast.Constant)  # the docstring
    calls = [n for n in tree.body[1:] if isinstance(n, ast.Expr)]
    assert all(isinstance(n.value, ast.Call) for n in calls)
    names = {n.value.func.id if isinstance(n.value.func, ast.Name) else n.value.func.attr
             for n in calls}
    assert names <= {"report", "set_grad_enabled", "enable_compatibility_mode", "eval"}, names


def test_copy_as_code_gives_one_panels_analysis(qtbot, window, tmp_path):
    from PySide6.QtWidgets import QApplication, QMenu

    patching = patching_binding(window)
    window.docks["patchingDock"].raise_()
    wait_idle(qtbot, window)
    menu = QMenu()
    action = patching.copy_code_action(menu)
    patching.widget.sweep_combo.setCurrentIndex(patching.widget.sweep_combo.findData("mlp_out"))
    action.trigger()  # the configured analysis, before it ran
    assert "get_act_patch_mlp_out(" in QApplication.clipboard().text()
    run_panel_sweep(qtbot, window, patching.widget, "resid_pre")
    action.trigger()
    text = QApplication.clipboard().text()
    assert "get_act_patch_resid_pre" in text and "logit_lens" not in text
    (tmp_path / "snippet.py").write_text(text)
    got = run_script(tmp_path / "snippet.py")
    assert set(got) == {"patching.resid_pre"}
    np.testing.assert_allclose(got["patching.resid_pre"], patching.widget.result.values,
                               atol=1e-4)
    # The attention panel's snippet: its head's pattern and the run it reads, nothing else.
    run_prompt_and_wait(qtbot, window, PROMPT)
    attention = next(b for b in window.bindings if b.object_name == "attentionDock")
    attention.copy_code_action(menu).trigger()
    text = QApplication.clipboard().text()
    assert 'cache["pattern"' in text and "patching" not in text and "head_detector" not in text
