"""Numbers the window shows: the parameter count, and axes that never read "-0.000" or "(x0.001)"."""

from __future__ import annotations

import pyqtgraph as pg

from tests.app.conftest import run_prompt_and_wait

PROMPT = "When John and Mary went to the store, John gave a drink to"


def test_bundled_parameter_count_is_the_model_cards(bundled_host):
    from engine.model_sources import BUNDLED_DIR
    from engine.param_count import format_count

    card = (BUNDLED_DIR / "README.md").read_text(encoding="utf-8")
    assert "| Parameters | 1,234,688 |" in card
    assert bundled_host.info.n_params == 1_234_688
    assert format_count(bundled_host.info.n_params) == "1.23M"
    assert "1.23M params" in bundled_host.info.summary()


def test_status_bar_parameter_count_matches_transformers(qtbot, window, tiny_gpt2_dir):
    """The tiny GPT-2 ties W_U to W_E and fuses QKV: the count is transformers' own."""
    from transformers import GPT2LMHeadModel

    from engine.param_count import format_count

    expected = GPT2LMHeadModel.from_pretrained(str(tiny_gpt2_dir)).num_parameters()
    label = window.status.model_label
    assert f"{format_count(expected)} params" in label.text()
    assert f"{expected:,} parameters" in label.toolTip()


def _axes(window):
    for view in window.findChildren(pg.GraphicsView):
        for item in view.scene().items():
            if isinstance(item, pg.AxisItem) and item.isVisible():
                yield item


def _shown_tick_strings(axis) -> list[str]:
    if not axis.style.get("showValues", True):
        return []
    lo, hi = axis.range
    size = axis.geometry().height() if axis.orientation in ("left", "right") \
        else axis.geometry().width()
    out = []
    for spacing, values in axis.tickValues(lo, hi, max(size, 1.0)):
        out += axis.tickStrings(values, axis.autoSIPrefixScale * axis.scale, spacing)
    return out


def _check_axes(window) -> int:
    n = 0
    for axis in _axes(window):
        n += 1
        label = axis.labelString() if axis.label.isVisible() else ""
        assert "(x" not in label, label
        for text in _shown_tick_strings(axis):
            t = text.strip()
            assert not (t.startswith("-") and t.lstrip("-").replace(".", "").strip("0") == ""), \
                f"negative zero tick {t!r} on {axis.orientation} axis"
    return n


def test_empty_and_filled_axes_have_no_si_prefix_or_negative_zero(qtbot, window):
    for dock in window.docks.values():  # every panel once, empty
        dock.raise_()
        qtbot.waitUntil(lambda: not window.controller.busy, timeout=60_000)
    assert _check_axes(window) > 10
    # Empty value axes show no numbers at all (nothing has been measured yet).
    attribution = next(b for b in window.bindings if b.object_name == "attributionDock").widget
    assert _shown_tick_strings(attribution.lens_chart.value_axis) == []
    run_prompt_and_wait(qtbot, window, PROMPT)
    for dock in window.docks.values():
        dock.raise_()
        qtbot.waitUntil(lambda: not window.controller.busy, timeout=60_000)
    _check_axes(window)
