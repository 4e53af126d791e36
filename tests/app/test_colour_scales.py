"""Colour scales that do not mislead (issue 15, item 4): patching heatmaps are centred on the run
the metric is measured from, one sign convention (blue = positive) everywhere, and the normalised
metric shows its raw baselines and warns when their gap is too small to divide by."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import torch
from PySide6.QtCore import Qt

from tests.app.conftest import run_prompt_and_wait

CLEAN = "When John and Mary went to the store, John gave a drink to"
CORRUPT = "When John and Mary went to the store, Mary gave a drink to"


def _binding(window, name):
    return next(b for b in window.bindings if b.object_name == name)


def _colour_of(view, value: float) -> np.ndarray:
    """The RGB the heatmap draws for ``value`` (its colour map at its levels)."""
    lo, hi = view.levels()
    cmap = view.colorbar.colorMap()
    return np.asarray(cmap.map(np.array([(value - lo) / (hi - lo)]), mode="byte")[0][:3],
                      dtype=float)


def _raw_logit_diffs(window, clean: str, corrupted: str, answer: str, cf: str):
    """TransformerLens's logits on the window's own model: the raw (clean, corrupted) LD."""
    model = window.controller._worker.host.model
    a = model.to_single_token(answer)
    c = model.to_single_token(cf)
    with torch.no_grad():
        out = []
        for prompt in (clean, corrupted):
            logits = model(model.to_tokens(prompt))[0, -1]
            out.append(float(logits[a] - logits[c]))
    return out


def _sweep(qtbot, window, panel, kind="head_out"):
    panel.sweep_combo.setCurrentIndex(panel.sweep_combo.findData(kind))
    with qtbot.waitSignal(window.controller.job_done, timeout=60_000,
                          check_params_cb=lambda ch: ch == "patching"):
        qtbot.mouseClick(panel.run_button, Qt.MouseButton.LeftButton)
    return panel.result


def test_raw_logit_diff_is_centred_on_the_corrupted_run(qtbot, window, artifacts_dir):
    window.docks["patchingDock"].raise_()
    qtbot.waitUntil(lambda: not window.controller.busy, timeout=60_000)
    panel = _binding(window, "patchingDock").widget
    panel.metric_combo.setCurrentIndex(panel.metric_combo.findData("logit_diff"))
    result = _sweep(qtbot, window, panel)
    clean_ld, corrupt_ld = _raw_logit_diffs(window, CLEAN, CORRUPT, " Mary", " John")
    assert abs(result.corrupted_value - corrupt_ld) < 1e-3
    assert abs(corrupt_ld) > 0.05  # else centring on 0 would look the same
    lo, hi = panel.heatmap.levels()
    assert abs((lo + hi) / 2 - corrupt_ld) < 1e-4
    # A cell that changes nothing is drawn white; the clean run's value is blue or red by sign.
    assert np.all(_colour_of(panel.heatmap, corrupt_ld) > 240)
    restored = _colour_of(panel.heatmap, clean_ld)
    assert (restored[2] > restored[0]) == (clean_ld > corrupt_ld)
    label = panel.heatmap.colorbar.getAxis("right").labelText
    assert "white = corrupted run" in label
    panel.grab().save(str(artifacts_dir / "colour_raw_logit_diff.png"))


def test_noising_is_centred_on_the_clean_run_and_path_patching_on_corrupted(qtbot, window):
    window.docks["patchingDock"].raise_()
    qtbot.waitUntil(lambda: not window.controller.busy, timeout=60_000)
    panel = _binding(window, "patchingDock").widget
    panel.direction_combo.setCurrentIndex(panel.direction_combo.findData("noise"))
    _sweep(qtbot, window, panel)
    lo, hi = panel.heatmap.levels()
    assert abs((lo + hi) / 2 - 1.0) < 1e-6  # normalised: the clean run is 1
    assert "white = clean run" in panel.heatmap.colorbar.getAxis("right").labelText
    panel.direction_combo.setCurrentIndex(panel.direction_combo.findData("denoise"))
    panel.metric_combo.setCurrentIndex(panel.metric_combo.findData("logit_diff"))
    with qtbot.waitSignal(window.controller.job_done, timeout=60_000,
                          check_params_cb=lambda ch: ch == "patching.path"):
        qtbot.mouseClick(panel.path_button, Qt.MouseButton.LeftButton)
    assert panel.view_combo.currentData() == "path"
    _clean, corrupt_ld = _raw_logit_diffs(window, CLEAN, CORRUPT, " Mary", " John")
    lo, hi = panel.heatmap.levels()
    assert abs((lo + hi) / 2 - corrupt_ld) < 1e-4


def test_normalised_metric_shows_raw_baselines(qtbot, window):
    window.docks["patchingDock"].raise_()
    qtbot.waitUntil(lambda: not window.controller.busy, timeout=60_000)
    panel = _binding(window, "patchingDock").widget
    _sweep(qtbot, window, panel)
    clean_ld, corrupt_ld = _raw_logit_diffs(window, CLEAN, CORRUPT, " Mary", " John")
    text = panel.summary.text()
    assert "clean 1.000, corrupted 0.000" in text
    assert f"raw logit difference: clean {clean_ld:.3f}, corrupted {corrupt_ld:.3f}" in text
    assert panel.warning.isVisible() == (abs(clean_ld - corrupt_ld) < 1.0)


def test_small_gap_warns(qtbot):
    from widgets.patching_panel import PatchingPanel

    panel = PatchingPanel()
    qtbot.addWidget(panel)
    panel.show()
    result = SimpleNamespace(
        kind="head_out", metric="logit_diff_norm", direction="denoise", axes=("layer", "head"),
        values=np.array([[0.1, -3.0], [0.5, 1.2]], np.float32), done=4, total=4,
        clean_value=1.0, corrupted_value=0.0, clean_tokens=("a",), corrupted_tokens=("b",),
        seconds=0.1, chunk_size=4, complete=True,
        labels={"components": ("head_out",), "raw_baselines": (2.31, 2.08)})
    panel.set_sweep_result(result)
    assert panel.warning.isVisible()
    assert "differ by only 0.230" in panel.warning.text()
    assert "raw logit difference: clean 2.310, corrupted 2.080" in panel.summary.text()
    # Centred on 0 (the corrupted run), the range covers the strongest cell either way.
    assert panel.heatmap.levels() == (-3.0, 3.0)


def test_dla_heatmap_and_bars_share_one_sign_convention(qtbot, window, artifacts_dir):
    window.docks["attributionDock"].raise_()
    run_prompt_and_wait(qtbot, window, CLEAN)
    panel = _binding(window, "attributionDock").widget
    panel.set_target(" Mary", " John")
    with qtbot.waitSignal(window.controller.job_done, timeout=60_000,
                          check_params_cb=lambda ch: ch == "attribution"):
        qtbot.mouseClick(panel.run_button, Qt.MouseButton.LeftButton)
    heads = panel.result.head_values[0]
    assert heads.max() > 0 > heads.min()
    lut_hi = panel.heatmap.colorbar.colorMap().map(np.array([1.0]), mode="byte")[0][:3]
    lut_lo = panel.heatmap.colorbar.colorMap().map(np.array([0.0]), mode="byte")[0][:3]
    # In the heatmap the top of the scale (positive) is blue, the bottom red ...
    assert lut_hi[2] > lut_hi[0] and lut_lo[0] > lut_lo[2]
    # ... as in the top-heads bar chart next to it: the most positive head's bar is blue.
    chart = panel.top_heads
    i_pos = int(np.argmax(chart.values))
    i_neg = int(np.argmin(chart.values))
    brushes = chart.bars.opts["brushes"]
    pos, neg = brushes[i_pos].color(), brushes[i_neg].color()
    assert chart.values[i_pos] > 0 > chart.values[i_neg]
    assert pos.blue() > pos.red() and neg.red() > neg.blue()
    assert (pos.red(), pos.green(), pos.blue()) == tuple(int(v) for v in lut_hi)
    panel.tabs.setCurrentIndex(2)
    panel.grab().save(str(artifacts_dir / "colour_dla_heads.png"))
