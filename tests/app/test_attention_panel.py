"""The Attention panel in the real window: numbers vs run_with_cache, real clicks and hovers."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QApplication

from tests.app.conftest import run_prompt_and_wait

PROMPT = "When John and Mary went to the store, John gave a drink to"


def _binding(window):
    return next(b for b in window.bindings if b.object_name == "attentionDock")


def _reference_cache(window, tokens):
    """run_with_cache on the window's own model, on the worker's thread's model object."""
    host = window.controller._worker.host
    with torch.no_grad():
        _, cache = host.model.run_with_cache(tokens)
    return host, cache


@pytest.fixture()
def shown(qtbot, window):
    window.docks["attentionDock"].show()
    window.docks["attentionDock"].raise_()
    window.resize(1500, 1000)
    run_prompt_and_wait(qtbot, window, PROMPT)
    return _binding(window).widget


def test_panel_arrays_equal_run_with_cache(qtbot, window, shown):
    panel = shown
    host = window.controller._worker.host
    tokens = host.model.to_tokens(PROMPT)
    _, cache = _reference_cache(window, tokens)
    item = panel.item()
    assert item.token_ids.tolist() == tokens[0].tolist()
    for layer in range(host.info.n_layers):
        np.testing.assert_array_equal(panel.values()[layer], cache["pattern", layer][0].numpy())
    # What the focused view draws is the focused head's full-resolution pattern.
    layer, head = panel.focused_head()
    np.testing.assert_array_equal(panel.focused.image.image,
                                  cache["pattern", layer][0, head].numpy())
    assert panel.focused.y_axis.labels()[1] == item.str_tokens[1].replace(" ", "·")


def test_click_grid_tile_focuses_head_and_sets_selection(qtbot, window, shown, artifacts_dir):
    panel = shown
    selection = window.controller.selection
    assert (selection.layer, selection.head) != (1, 3)
    pos = panel.tile_center(1, 3)
    with qtbot.waitSignal(selection.head_selected, timeout=3000) as sig:
        qtbot.mouseClick(panel.grid.graphics.viewport(), Qt.MouseButton.LeftButton, pos=pos)
    assert sig.args == [1, 3]
    assert panel.focused_head() == (1, 3)
    assert "L1 H3" in panel.focused.plot.titleLabel.text
    np.testing.assert_array_equal(panel.focused.image.image, panel.item().patterns[1, 3])
    # The focus outline moved onto the clicked tile.
    rect = panel.grid.overlay_rect("focus")
    assert rect.contains(3.4, 1.4) and not rect.contains(0.4, 0.4)
    # Another panel selecting a head: the attention panel follows.
    selection.set_head(0, 2)
    assert panel.focused_head() == (0, 2)
    np.testing.assert_array_equal(panel.focused.image.image, panel.item().patterns[0, 2])
    window.grab().save(str(artifacts_dir / "attention_panel.png"))


def test_hover_cell_shows_tooltip_and_highlights(qtbot, window, shown):
    panel = shown
    item = panel.item()
    layer, head = panel.focused_head()
    q, k = 7, 3
    pos = panel.focused.data_to_widget(k + 0.5, q + 0.5)
    qtbot.mouseMove(panel.focused.graphics.viewport(), pos)
    value = float(item.patterns[layer, head, q, k])
    tq, tk = item.str_tokens[q].replace(" ", "·"), item.str_tokens[k].replace(" ", "·")
    expected = f"query '{tq}' (pos {q}) -> key '{tk}' (pos {k}): {value:.2f}"
    qtbot.waitUntil(lambda: panel.focused.last_tooltip == expected, timeout=3000)
    assert panel.focused.readout.text() == expected
    # The hovered row and column are highlighted.
    assert panel.focused.overlay_rect("row").top() == q
    assert panel.focused.overlay_rect("col").left() == k


def test_click_in_focused_view_selects_query_and_colours_strip(qtbot, window, shown):
    panel = shown
    layer, head = panel.focused_head()
    q = 9
    with qtbot.waitSignal(window.controller.selection.position_changed, timeout=3000):
        qtbot.mouseClick(panel.focused.graphics.viewport(), Qt.MouseButton.LeftButton,
                         pos=panel.focused.data_to_widget(2.5, q + 0.5))
    assert panel.query_position() == q
    row = panel.item().patterns[layer, head, q]
    darkest = int(np.argmax(row[: q + 1]))
    lightest = int(np.argmin(row[: q + 1]))
    lum = [panel.strip.item(i).background().color().lightness() for i in range(q + 1)]
    assert lum[darkest] < lum[lightest]
    assert panel.strip.item(q + 1).background().color().lightness() == 255  # future: blank
    # Hovering a token in the strip highlights its row and column in the focused head.
    rect = panel.strip.visualItemRect(panel.strip.item(4))
    qtbot.mouseMove(panel.strip.viewport(), rect.center())
    qtbot.waitUntil(lambda: panel.focused.overlay_rect("col") is not None
                    and panel.focused.overlay_rect("col").left() == 4, timeout=3000)
    assert panel.focused.overlay_rect("row").top() == 4
    assert panel.strip_label.text().endswith(f"(pos 4): {float(row[4]):.3f}")


def test_scores_toggle_recomputes_and_masks(qtbot, window, shown):
    panel = shown
    assert panel.item().scores is None
    with qtbot.waitSignal(window.controller.busy_changed, timeout=60_000,
                          check_params_cb=lambda busy: busy is False):
        panel.mode_combo.setCurrentIndex(panel.mode_combo.findData("scores"))
    scores = panel.item().scores
    assert scores is not None
    host = window.controller._worker.host
    _, cache = _reference_cache(window, host.model.to_tokens(PROMPT))
    layer, head = panel.focused_head()
    ref = cache["attn_scores", layer][0, head].numpy()
    shown_img = panel.focused.image.image
    finite = np.isfinite(ref)
    np.testing.assert_array_equal(shown_img[finite], ref[finite])
    assert np.isnan(shown_img[~finite]).all()  # masked cells are drawn as masked
    assert "masked" in panel.describe(layer, head, 2, 5)


def test_options_hide_bos_per_head_and_layer_view(qtbot, window, shown):
    panel = shown
    layer, head = panel.focused_head()
    panel.bos_check.setChecked(True)
    assert np.isnan(panel.focused.image.image[:, 0]).all()
    pattern = panel.item().patterns
    assert panel.focused.levels()[1] == pytest.approx(float(pattern[..., 1:].max()), rel=1e-6)
    panel.scale_combo.setCurrentIndex(panel.scale_combo.findData("per-head"))
    assert panel.focused.levels()[1] == pytest.approx(float(pattern[layer, head, :, 1:].max()),
                                                      rel=1e-6)
    panel.layer_combo.setCurrentIndex(panel.layer_combo.findData(1))
    assert panel.grid_geometry()["layers"] == [1]
    assert panel.grid.y_axis.labels() == ["L1"]
    panel.cmap_combo.setCurrentText("inferno")
    assert panel.focused.colormap_name() == "inferno"


def test_inspect_tokens_and_exports(qtbot, window, shown, tmp_path):
    panel = shown
    binding = _binding(window)
    ids = [0] + [5, 9, 17, 33] * 2
    with qtbot.waitSignal(window.controller.busy_changed, timeout=60_000,
                          check_params_cb=lambda busy: busy is False):
        window.controller.inspect_tokens.emit(ids, "repeated random tokens")
    assert panel.item().token_ids.tolist() == ids
    assert panel.item_combo.currentText() == "repeated random tokens"
    for kind in ("focused_png", "grid_svg", "focused_csv", "all_npz"):
        path = binding.export(kind, str(tmp_path / kind))
        assert (tmp_path / f"{kind}.{kind.split('_')[1]}").stat().st_size > 100, path
    with np.load(tmp_path / "all_npz.npz") as data:  # no pickle needed
        np.testing.assert_array_equal(data["patterns"], panel.item().patterns)
        assert data["token_ids"].tolist() == ids
    from tests.app.exported import read_export

    about, header, rows = read_export(tmp_path / "focused_csv.csv")
    assert len(rows) == len(ids) and header[:2] == ["query_pos", "query_token"]
    assert about["prompt"] == "repeated random tokens" and "attention" in about["units"]
    layer, head = panel.focused_head()
    np.testing.assert_allclose(np.array([r[2:] for r in rows], dtype=float),
                               panel.item().patterns[layer, head], atol=1e-5)
    assert "<svg" in (tmp_path / "grid_svg.svg").read_text(encoding="utf-8")[:2000]


def test_kept_prompts_form_a_batch(qtbot, window, shown):
    panel = shown
    qtbot.mouseClick(panel.keep_button, Qt.MouseButton.LeftButton)
    run_prompt_and_wait(qtbot, window, "The cat sat on the mat.")
    assert [it.label for it in panel.result().items] == ["The cat sat on the mat.", PROMPT]
    panel.item_combo.setCurrentIndex(1)
    assert panel.item().label == PROMPT and panel.keep_button.isChecked()
    assert panel.focused.image.image.shape[0] == panel.item().n_tokens


def test_hidden_panel_computes_when_shown(qtbot, window):
    """Hidden (closed, or behind another tab) the panel waits; showing it computes the prompt."""
    panel = _binding(window).widget
    dock = window.docks["attentionDock"]
    dock.hide()
    assert not panel.isVisible()
    run_prompt_and_wait(qtbot, window, PROMPT)
    assert panel.result() is None
    with qtbot.waitSignal(window.controller.busy_changed, timeout=60_000,
                          check_params_cb=lambda busy: busy is False):
        dock.show()
        dock.raise_()
    assert panel.item().label == PROMPT


def test_grouped_query_model_does_not_crash_the_panel(qtbot, window, shown, tmp_path,
                                                      tiny_gpt2_dir):
    """A real GQA model: the panel shows the per-query-head patterns and says what is shared."""
    from engine.model_sources import ModelSpec
    from tests.engine.test_attention import make_gqa_llama_folder

    folder = make_gqa_llama_folder(tmp_path / "gqa", tiny_gpt2_dir)
    with qtbot.waitSignal(window.controller.model_loaded, timeout=60_000):
        window.load_model(ModelSpec("folder", str(folder), "cpu"))
    assert shown.result() is None  # the old model's patterns are gone
    run_prompt_and_wait(qtbot, window, PROMPT)
    assert shown.notes.isVisible() and "Grouped-query" in shown.notes.text()
    assert shown.item().patterns.shape[1] == window.controller.model_info.n_heads
    qtbot.mouseClick(shown.grid.graphics.viewport(), Qt.MouseButton.LeftButton,
                     pos=shown.tile_center(1, 3))
    assert shown.focused_head() == (1, 3)


def test_model_without_pattern_hooks_says_so(qtbot, window, shown, monkeypatch):
    host = window.controller._worker.host
    hooks = {k: v for k, v in host.model.hook_dict.items() if not k.endswith("hook_pattern")}
    monkeypatch.setattr(type(host.model), "hook_dict", property(lambda self: hooks))
    run_prompt_and_wait(qtbot, window, PROMPT)
    assert shown.message.isVisible() and "no attention-pattern hooks" in shown.message.text()
    # Said next to the panel, not in an error box.
    assert [c for c, _ in window.errors.history if c == "attention"] == []
    assert window.controller.last_prompt_result is not None  # other panels still work


# -- the view alone, on synthetic long-prompt data (no model needed) ---------------------------------
def _synthetic(n: int, layers: int = 3, heads: int = 4, seed: int = 0):
    """A duck-typed AttentionResult with causal, row-stochastic random patterns."""
    from types import SimpleNamespace

    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(layers, heads, n, n)).astype(np.float32) * 3
    logits[..., np.triu_indices(n, 1)[0], np.triu_indices(n, 1)[1]] = -np.inf
    p = np.exp(logits - logits.max(-1, keepdims=True))
    p = (p / p.sum(-1, keepdims=True)).astype(np.float32)
    toks = tuple(["<bos>"] + [f" t{i}" for i in range(1, n)])
    item = SimpleNamespace(label="synthetic", str_tokens=toks, token_ids=np.arange(n),
                           patterns=p, scores=None, truncated_from=0, n_tokens=n)
    return SimpleNamespace(items=(item,), layers=tuple(range(layers)), n_heads=heads,
                           layers_with_pattern=tuple(range(layers)), layers_with_scores=(),
                           notes=())


def test_block_max_matches_naive_pooling():
    from widgets.heatmap import block_max

    rng = np.random.default_rng(1)
    a = rng.random((2, 3, 37, 37)).astype(np.float32)
    a[0, 0, :5, :5] = np.nan
    f = 4
    nb = -(-37 // f)
    expected = np.full((2, 3, nb, nb), np.nan, dtype=np.float32)
    for i in range(nb):
        for j in range(nb):
            block = a[..., i * f:(i + 1) * f, j * f:(j + 1) * f]
            with np.errstate(all="ignore"):
                expected[..., i, j] = np.fmax.reduce(block.reshape(2, 3, -1), axis=-1)
    np.testing.assert_array_equal(block_max(a, f), expected)
    skipped = block_max(a, f, skip_first_col=True)
    np.testing.assert_array_equal(skipped[..., 1:], expected[..., 1:])
    np.testing.assert_array_equal(skipped[1, 2, 3, 0], a[1, 2, 12:16, 1:4].max())
    assert np.isnan(block_max(a, 1, skip_first_col=True)[..., 0]).all()
    assert not np.isnan(a[1, :, :, 0]).any()  # the input is never modified


def test_long_prompt_grid_is_pooled_and_focused_is_full(qtbot, artifacts_dir):
    from widgets.attention_panel import GRID_TILE, AttentionPanel

    n = 300
    result = _synthetic(n)
    panel = AttentionPanel()
    qtbot.addWidget(panel)
    panel.resize(1400, 800)
    panel.show()
    qtbot.waitExposed(panel)
    panel.set_result(result)
    QApplication.processEvents()  # let the aspect-locked views settle before mapping positions
    geom = panel.grid_geometry()
    factor = geom["factor"]
    assert factor == -(-n // GRID_TILE) and factor > 1
    # Tile (L2, H1) in the mosaic is the max-pool of that head's pattern.
    image = panel.grid.image.image
    nb = -(-n // factor)
    step = geom["tile_px"] + geom["gap_px"]
    assert geom["tile_px"] == nb
    tile = image[2 * step:2 * step + nb, 1 * step:1 * step + nb]
    p = result.items[0].patterns[2, 1]
    np.testing.assert_array_equal(tile[3, 1], p[3 * factor:4 * factor, factor:2 * factor].max())
    np.testing.assert_array_equal(panel.focused.image.image.shape, (n, n))
    # Hide BOS: the first pooled key block keeps only keys 1..factor-1.
    panel.bos_check.setChecked(True)
    tile = panel.grid.image.image[2 * step:2 * step + nb, 1 * step:1 * step + nb]
    assert tile[5, 0] == p[5 * factor:6 * factor, 1:factor].max()
    # Hover over a pooled tile: the text names the block and its maximum.
    x, y = 1 + (1.5 / nb) * geom["fraction"], 2 + (3.5 / nb) * geom["fraction"]
    qtbot.mouseMove(panel.grid.graphics.viewport(), panel.grid.data_to_widget(x, y))
    block = p[3 * factor:4 * factor, factor:2 * factor]
    expected = (f"L2 H1: queries {3 * factor}–{4 * factor - 1} -> keys {factor}–"
                f"{2 * factor - 1}: max {block.max():.2f} (pooled ×{factor}; click to focus)")
    qtbot.waitUntil(lambda: panel.grid.last_tooltip == expected, timeout=3000)
    panel.grab().save(str(artifacts_dir / "attention_long_prompt.png"))


def test_grid_hover_exact_cell_on_short_prompt(qtbot):
    from widgets.attention_panel import AttentionPanel

    result = _synthetic(12)
    panel = AttentionPanel()
    qtbot.addWidget(panel)
    panel.resize(1200, 700)
    panel.show()
    qtbot.waitExposed(panel)
    panel.set_result(result)
    QApplication.processEvents()  # let the aspect-locked views settle before mapping positions
    frac = panel.grid_geometry()["fraction"]
    q, k = 9, 4
    x, y = 3 + (k + 0.5) / 12 * frac, 1 + (q + 0.5) / 12 * frac
    qtbot.mouseMove(panel.grid.graphics.viewport(), panel.grid.data_to_widget(x, y))
    v = float(result.items[0].patterns[1, 3, q, k])
    expected = f"L1 H3: query '·t{q}' (pos {q}) -> key '·t{k}' (pos {k}): {v:.2f}"
    qtbot.waitUntil(lambda: panel.grid.last_tooltip == expected, timeout=3000)


def test_session_state_round_trip(qtbot, window):
    binding = _binding(window)
    panel = binding.widget
    panel.cmap_combo.setCurrentText("magma")
    panel.scale_combo.setCurrentIndex(panel.scale_combo.findData("per-head"))
    panel.bos_check.setChecked(True)
    binding.kept = ["an older prompt"]
    state = binding.session_state()
    panel.cmap_combo.setCurrentText("viridis")
    panel.scale_combo.setCurrentIndex(0)
    panel.bos_check.setChecked(False)
    binding.kept = []
    binding.restore_session_state(state)
    assert panel.cmap_combo.currentText() == "magma"
    assert panel.scale_combo.currentData() == "per-head" and panel.bos_check.isChecked()
    assert binding.kept == ["an older prompt"]
