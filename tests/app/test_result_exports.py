"""Exports of the patching panel (heatmap, plan bars) and the predictions panel, chosen from their
Export menus as a user does (the save dialog answered by the test): every number in the CSV is the
one on screen, and the first lines say what they are."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import numpy as np
import pytest
from PySide6.QtCore import Qt
from PySide6.QtGui import QImage

from tests.app.conftest import run_prompt_and_wait
from tests.app.exported import read_export
from tests.app.test_patching_panel import CLEAN, CORRUPT, binding, run_panel_sweep, wait_idle


@pytest.fixture()
def save_to(monkeypatch, tmp_path):
    """Answer the next save dialog with ``tmp_path / name`` (what the user would type)."""
    from PySide6.QtWidgets import QFileDialog

    answer = {}
    monkeypatch.setattr(QFileDialog, "getSaveFileName",
                        staticmethod(lambda *a, **k: (str(tmp_path / answer["name"]), "")))

    def choose(name: str):
        answer["name"] = name
        return tmp_path / name
    return choose


def trigger(menu, name: str) -> None:
    action = menu.findChild(type(menu.actions()[0]), name)
    assert action is not None and action.isEnabled(), name
    action.trigger()


def test_patching_heatmap_and_plan_exports(qtbot, window, save_to):
    b = binding(window)
    panel = b.widget
    window.docks["patchingDock"].raise_()
    wait_idle(qtbot, window)
    menu = panel.result_bar.export_menu
    # Nothing computed yet: a message, no file.
    target = save_to("early.csv")
    trigger(menu, "export_heatmap_csv")
    assert not target.exists() and "Nothing to export yet" in panel.message.text()
    run_panel_sweep(qtbot, window, panel, "block")
    result = panel.result
    assert result.complete and tuple(result.axes) == ("component", "layer", "pos")
    target = save_to("block.csv")
    trigger(menu, "export_heatmap_csv")
    about, header, rows = read_export(target)
    assert header == ["component", "layer", "pos", "label", "value"]
    assert about["model"] == window.controller.model_info.name
    assert about["pair 1 clean"] == CLEAN and about["pair 1 corrupted"] == CORRUPT
    assert about["metric"] == result.metric and "logit difference" in about["units"]
    assert float(about["clean value"]) == pytest.approx(result.clean_value, rel=1e-6)
    comps = list(result.labels["components"])
    got = np.full(result.values.shape, np.nan)
    for comp, layer, pos, _label, value in rows:
        got[comps.index(comp), int(layer), int(pos)] = float(value)
    np.testing.assert_allclose(got, result.values, rtol=1e-6, atol=1e-7)
    assert np.ptp(result.values) > 1e-3
    assert rows[0][3].startswith(f"{comps[0]} L0 pos 0")
    # Pictures of the heatmap: titled with the model and the sweep.
    save_to("block.png")
    trigger(menu, "export_heatmap_png")
    img = QImage(str(save_to("block.png")))
    assert not img.isNull() and img.width() >= 1200
    save_to("block.svg")
    trigger(menu, "export_heatmap_svg")
    svg = ET.parse(save_to("block.svg")).getroot()
    text = " ".join(t.text or "" for t in svg.iter() if t.tag.endswith("text"))
    assert window.controller.model_info.name in text and "Block" in text

    # The plan's bars: drag nothing, add through the palette's payload, run, export.
    from tests.app.test_patching_panel import drop_on

    view = panel.plan
    mime = panel.palette.tree.mimeData([panel.palette.find("L1H2")])
    assert drop_on(view.list.viewport(), mime)
    with qtbot.waitSignal(window.controller.job_done, timeout=60_000,
                          check_params_cb=lambda ch: ch == "patching.plan"):
        qtbot.mouseClick(view.run_button, Qt.MouseButton.LeftButton)
    save_to("plan.csv")
    trigger(menu, "export_plan_csv")
    about, header, rows = read_export(save_to("plan.csv"))
    assert header == ["bar", "value"] and [r[0] for r in rows] == list(view.result.labels)
    np.testing.assert_allclose([float(r[1]) for r in rows], view.result.values, rtol=1e-6)
    assert about["bars start at"] == f"the {view.result.base} run"
    save_to("plan.png")
    trigger(menu, "export_plan_png")
    assert not QImage(str(save_to("plan.png"))).isNull()


def test_predictions_exports(qtbot, window, save_to):
    panel = next(b for b in window.bindings if b.object_name == "predictionsDock").widget
    menu = panel.export_menu
    save_to("none.csv")
    trigger(menu, "export_csv")
    assert not save_to("none.csv").exists() and "Nothing to export" in panel.summary.text()
    run_prompt_and_wait(qtbot, window, "The cat sat on the mat. The cat")
    result = panel._result
    save_to("pred.csv")
    trigger(menu, "export_csv")
    about, header, rows = read_export(save_to("pred.csv"))
    assert about["prompt"] == "The cat sat on the mat. The cat"
    assert about["computed by"] == "TransformerLens"
    assert [r[1] for r in rows] == list(result.str_tokens)
    np.testing.assert_allclose([float(r[2]) for r in rows[1:]], result.loss_per_token,
                               rtol=1e-6)
    k = result.top_probs.shape[1]
    assert header[3:5] == ["top 1 token", "top 1 prob"] and len(header) == 3 + 2 * k
    np.testing.assert_allclose(np.array([r[4::2] for r in rows], dtype=float), result.top_probs,
                               rtol=1e-6)
    assert [r[3::2] for r in rows] == [list(t) for t in result.top_tokens]
    save_to("pred.png")
    trigger(menu, "export_png")
    img = QImage(str(save_to("pred.png")))
    assert not img.isNull() and img.width() == panel.width()
    save_to("pred.svg")
    trigger(menu, "export_svg")
    root = ET.parse(save_to("pred.svg")).getroot()
    assert root.tag.endswith("svg")
