"""Pinned heads: pinned by clicks, drawn on the grid, and saved in the session with their
attention patterns (float16); opening shows them without recomputing, with the layer view."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PySide6.QtCore import Qt

from app import session_actions
from app.session_io import load_session, save_session
from tests.app.conftest import run_prompt_and_wait
from tests.app.test_attention_panel import _binding, shown  # noqa: F401
from tests.app.test_patching_panel import wait_idle
from tests.app.test_session_hostile import JSON_VALUES, PYTHON_TEXT, _paths
from tests.app.test_session_results import jobs_started, same, second_window  # noqa: F401

PROMPT = "When John and Mary went to the store, John gave a drink to"


def _focus(qtbot, panel, layer: int, head: int) -> None:
    pos = panel.tile_center(layer, head)
    qtbot.mouseClick(panel.grid.graphics.viewport(), Qt.MouseButton.LeftButton, pos=pos)
    assert panel.focused_head() == (layer, head)


def pin_two(qtbot, panel) -> None:
    _focus(qtbot, panel, 1, 3)
    assert panel.pins.pin_button.text() == "Pin L1H3"
    qtbot.mouseClick(panel.pins.pin_button, Qt.MouseButton.LeftButton)
    _focus(qtbot, panel, 0, 2)
    qtbot.mouseClick(panel.pins.pin_button, Qt.MouseButton.LeftButton)
    assert panel.pins.pinned() == [(1, 3), (0, 2)]


def test_pin_by_clicks_frames_the_tile_and_chip_focuses(qtbot, window, shown, artifacts_dir):  # noqa: F811
    panel = shown
    window.resize(1366, 768)
    pin_two(qtbot, panel)
    assert panel.pins.pin_button.isChecked() and panel.pins.pin_button.text() == "Unpin L0H2"
    # Each pinned head's tile is framed on the grid.
    rect = panel.grid.overlay_rect("pin 1 3")
    assert rect is not None and rect.contains(3.4, 1.4) and not rect.contains(2.4, 0.4)
    qtbot.waitUntil(lambda: panel.pins.chip(0, 2) is not None
                    and panel.pins.chip(0, 2).isVisible())
    chip = panel.pins.chip(0, 2)
    qtbot.waitUntil(lambda: chip.width() >= chip.sizeHint().width())
    button = panel.pins.pin_button
    assert button.width() >= button.sizeHint().width()  # "Unpin L0H2" in full, not elided
    window.grab().save(str(artifacts_dir / "attention_pins.png"))
    # A chip focuses its head, and the shared selection follows.
    with qtbot.waitSignal(window.controller.selection.head_selected, timeout=3000) as sig:
        qtbot.mouseClick(panel.pins.chip(1, 3), Qt.MouseButton.LeftButton)
    assert sig.args == [1, 3] and panel.focused_head() == (1, 3)
    # Unpinning takes the frame and the chip away.
    qtbot.mouseClick(panel.pins.pin_button, Qt.MouseButton.LeftButton)
    assert panel.pins.pinned() == [(0, 2)] and panel.pins.chip(1, 3) is None
    rect = panel.grid.overlay_rect("pin 1 3")
    assert rect is None or not panel.grid._overlays["pin 1 3"].isVisible()
    qtbot.waitUntil(window.isWindowModified, timeout=3000)


def test_pinned_patterns_and_layer_view_come_back_without_recomputing(
        qtbot, window, shown, second_window, tmp_path):  # noqa: F811
    panel = shown
    pin_two(qtbot, panel)
    panel.layer_combo.setCurrentIndex(panel.layer_combo.findData(1))
    full = panel.item().patterns.copy()  # [layers, heads, q, k] float32, every head
    path = str(tmp_path / "pins.lensbench")
    assert session_actions.save_to(window, path)
    manifest, arrays = load_session(path)
    state = manifest["panels"]["attentionDock"]
    assert state["pinned"] == [[1, 3], [0, 2]] and state["layer_view"] == 1
    saved = _binding(window).session_results()["pinned"]
    # Only the pinned heads are in the file, as float16.
    assert saved.patterns[0].dtype == np.float16 and saved.patterns[0].shape[0] == 2
    n = full.shape[-1]
    assert sum(p.nbytes for p in saved.patterns) == 2 * n * n * 2 < full.nbytes / 4
    assert any(a.dtype == np.float16 and a.shape == (2, n, n) for a in arrays.values())

    win = second_window
    started = jobs_started(win)
    with qtbot.waitSignal(win.controller.busy_changed, timeout=60_000,
                          check_params_cb=lambda busy: busy is False):
        assert session_actions.open_path(win, path)
    wait_idle(qtbot, win)
    assert "attention" not in started, started
    got = _binding(win).widget
    result = got.result()
    assert result is not None and result.layers == (0, 1)
    assert got.pins.pinned() == [(1, 3), (0, 2)]
    assert got.layer_combo.currentData() == 1
    same(_binding(win).session_results()["pinned"], saved)  # bit for bit
    item = got.item()
    for layer, head in ((1, 3), (0, 2)):
        shown_values = item.patterns[result.layers.index(layer), head]
        np.testing.assert_array_equal(shown_values, full[layer, head].astype(np.float16))
        np.testing.assert_allclose(shown_values, full[layer, head], atol=1e-3)
    assert np.isnan(item.patterns[1, 0]).all()  # an unpinned head is blank, not a number
    assert "pinned heads" in got.notes.text()
    # Focusing an unsaved layer from elsewhere keeps the panel's focus and draws nothing wrong.
    win.controller.selection.set_head(0, 2)
    assert got.focused_head() == (0, 2)
    np.testing.assert_array_equal(got.focused.image.image, item.patterns[0, 2])
    # Running the prompt computes every head again.
    run_prompt_and_wait(qtbot, win, PROMPT)
    assert "attention" in started
    np.testing.assert_array_equal(got.item().patterns, full)


def test_pinned_patterns_that_do_not_fit_are_recomputed(qtbot, window, shown, tmp_path):  # noqa: F811
    panel = shown
    pin_two(qtbot, panel)
    path = str(tmp_path / "bad.lensbench")
    assert session_actions.save_to(window, path)
    manifest, arrays = load_session(path)
    fields = manifest["results"]["panels"]["attentionDock"]["pinned"]["f"]
    key = fields["patterns"]["$t"][0]["$a"]
    arrays[key] = arrays[key][:1]  # one head's pattern missing
    save_session(path, manifest, arrays)
    started = jobs_started(window)
    assert session_actions.open_path(window, path)
    wait_idle(qtbot, window)
    assert "attention" in started  # computed afresh: every head, no stale partial view
    assert panel.result().layers == tuple(range(window.controller.model_info.n_layers))


def test_pin_and_unpin_round_trip_and_refusals():
    from engine.attention import AttentionItem, AttentionResult
    from engine.attention_pins import PinnedAttention, pin, unpin
    from engine.errors import InputError

    rng = np.random.default_rng(0)
    pat = rng.random((3, 4, 5, 5)).astype(np.float32)
    item = AttentionItem("p", tuple("abcde"), np.arange(5), pat)
    result = AttentionResult((item,), (0, 1, 2), 4, (0, 1, 2), ())
    saved = pin(result, [(2, 1), (0, 3)])
    back = unpin(saved, 3)
    assert back.layers == (0, 2)
    np.testing.assert_array_equal(back.items[0].patterns[1, 1], pat[2, 1].astype(np.float16))
    np.testing.assert_array_equal(back.items[0].patterns[0, 3], pat[0, 3].astype(np.float16))
    assert np.isnan(back.items[0].patterns[0, 0]).all()
    with pytest.raises(InputError):
        unpin(saved, 2)  # layer 2 is not in a 2-layer model
    bad = PinnedAttention(saved.heads, saved.labels, saved.str_tokens, saved.token_ids,
                          (saved.patterns[0].astype(np.float32),), 4)
    with pytest.raises(InputError):
        unpin(bad, 3)
    with pytest.raises(InputError):
        pin(result, [])


@settings(max_examples=30, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(data=st.data())
def test_mutated_pinned_patterns_never_raise(qtbot, window, shown, tmp_path, data):  # noqa: F811
    """The pinned heads' saved result with one value anywhere replaced, or one of its arrays
    swapped for another shape or dtype: refused in words, or opened with the panel showing a
    result (the saved one or a recomputed one); nothing raises."""
    panel = shown
    base = tmp_path / "base.lensbench"  # the same valid file for every example
    if not base.exists():
        pin_two(qtbot, panel)
        assert session_actions.save_to(window, str(base))
    manifest, arrays = load_session(base)
    path = tmp_path / "pins.lensbench"
    pinned = manifest["results"]["panels"]["attentionDock"]
    if data.draw(st.booleans(), label="array"):
        key = pinned["pinned"]["f"]["patterns"]["$t"][0]["$a"]
        arrays[key] = data.draw(st.sampled_from([
            arrays[key][:1], arrays[key].astype(np.float32), arrays[key][:, :3, :3],
            np.zeros((0,), np.float16), np.full_like(arrays[key], np.inf)]), label="swap")
    else:
        target = data.draw(st.sampled_from(list(_paths(pinned))[1:]), label="field")
        node = pinned
        for k in target[:-1]:
            node = node[k]
        node[target[-1]] = data.draw(JSON_VALUES, label="value")
    try:
        save_session(path, manifest, arrays)
    except (TypeError, ValueError):  # JSON cannot hold what was drawn
        return
    if window.errors.box is not None:
        window.errors.box.close()
    if not session_actions.open_path(window, str(path)):
        assert not any(p in window.errors.visible_text for p in PYTHON_TEXT)
        return
    qtbot.waitUntil(lambda: not window.controller.busy, timeout=60_000)
    assert panel.result() is not None
    assert window.errors.box is None or not window.errors.box.isVisible()
