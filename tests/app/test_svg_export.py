"""Exported figures render as on screen outside browsers, and carry no UI text (issue 15, item 6).

librsvg/Inkscape-class renderers ignore ``vector-effect="non-scaling-stroke"`` (a 2.5 px outline
under a x88 transform became a 220 px blob), smooth small embedded bitmaps, and fall back to a serif
font for Qt's "Sans Serif". The exports are checked structurally, and rendered with rsvg-convert
when it is installed (Debian: librsvg2-bin).
"""

from __future__ import annotations

import base64
import re
import shutil
import subprocess
import xml.etree.ElementTree as ET

import pytest
from PySide6.QtCore import Qt
from PySide6.QtGui import QImage

from tests.app.conftest import run_prompt_and_wait

PROMPT = "When John and Mary went to the store, John gave a drink to"
SVG = "{http://www.w3.org/2000/svg}"
XLINK = "{http://www.w3.org/1999/xlink}href"


def _binding(window, name):
    return next(b for b in window.bindings if b.object_name == name)


def _texts(root) -> str:
    return " ".join("".join(el.itertext()) for el in root.iter(f"{SVG}text"))


def _check_clean_svg(path, model: str) -> ET.Element:
    raw = open(path, encoding="utf-8").read()
    assert "vector-effect" not in raw
    root = ET.fromstring(raw)
    families = {el.get("font-family") for el in root.iter() if el.get("font-family")}
    assert families and all(f.endswith("sans-serif") for f in families), families
    text = _texts(root)
    assert model in text
    assert "click" not in text and "selected head" not in text
    return root


def _render(path, out):
    exe = shutil.which("rsvg-convert")
    if exe is None:
        pytest.skip("rsvg-convert (librsvg2-bin) is not installed")
    subprocess.run([exe, str(path), "-o", str(out)], check=True, timeout=60)
    return QImage(str(out))


def _red_fraction(image: QImage) -> float:
    """Share of pixels that are the selection red (#e4002b)."""
    n = red = 0
    for y in range(0, image.height(), 2):
        for x in range(0, image.width(), 2):
            c = image.pixelColor(x, y)
            n += 1
            red += c.red() > 200 and c.green() < 40 and c.blue() < 70
    return red / max(n, 1)


def test_attention_svg_is_clean_and_titled(qtbot, window, tmp_path, artifacts_dir):
    window.docks["attentionDock"].raise_()
    run_prompt_and_wait(qtbot, window, PROMPT)
    binding = _binding(window, "attentionDock")
    panel = binding.widget
    model = window.controller.model_info.name
    grid = binding.export("grid_svg", str(tmp_path / "grid"))
    root = _check_clean_svg(grid, model)
    assert "When John and Mary" in _texts(root)
    # The focused head's red outline is a selection mark: not in the figure.
    assert not any(el.get("stroke") == "#e4002b" for el in root.iter())
    # Heat-map bitmaps are enlarged by whole pixels, so smoothing renderers keep cells crisp.
    images = [el for el in root.iter(f"{SVG}image")]
    assert images
    data = images[0].get(XLINK).split(",", 1)[1]
    tile = panel.grid_geometry()["tile_px"]
    big = QImage.fromData(base64.b64decode(data), "PNG")
    assert big.width() >= 8 * tile
    # The screen is as it was.
    assert panel.grid.plot.titleLabel.text.startswith("All heads")
    assert panel.grid.overlay_rect("focus") is not None
    focused = binding.export("focused_svg", str(tmp_path / "focused"))
    root = _check_clean_svg(focused, model)
    layer, head = panel.focused_head()
    assert f"L{layer}H{head}" in _texts(root)
    image = _render(focused, tmp_path / "focused.png")
    image.save(str(artifacts_dir / "export_focused_rsvg.png"))
    assert _red_fraction(image) < 0.002  # the query-row highlight is not exported either
    image = _render(grid, tmp_path / "grid.png")
    image.save(str(artifacts_dir / "export_grid_rsvg.png"))
    assert _red_fraction(image) < 0.002


def test_attribution_and_induction_svgs_are_clean(qtbot, window, tmp_path):
    run_prompt_and_wait(qtbot, window, PROMPT)
    model = window.controller.model_info.name
    attribution = _binding(window, "attributionDock")
    attribution.widget.set_target(" Mary", " John")
    with qtbot.waitSignal(window.controller.job_done, timeout=60_000,
                          check_params_cb=lambda ch: ch == "attribution"):
        qtbot.mouseClick(attribution.widget.run_button, Qt.MouseButton.LeftButton)
    for tab in range(3):
        attribution.widget.tabs.setCurrentIndex(tab)
        path = tmp_path / f"attr{tab}.svg"
        attribution.export("svg", str(path))
        root = _check_clean_svg(path, model)
        assert "Mary" in _texts(root)
    window.docks["inductionDock"].raise_()
    induction = _binding(window, "inductionDock")
    induction.widget.seq_len.setValue(8)
    induction.widget.batch.setValue(2)
    with qtbot.waitSignal(window.controller.busy_changed, timeout=60_000,
                          check_params_cb=lambda busy: busy is False):
        qtbot.mouseClick(induction.widget.scan_button, Qt.MouseButton.LeftButton)
    path = induction.export("svg", str(tmp_path / "scores"))
    root = _check_clean_svg(path, model)
    assert "repeated random tokens" in _texts(root)


def test_non_scaling_strokes_get_their_width_back(tmp_path):
    """A cosmetic 2.5 px stroke under a x80 transform is written as 2.5 / 80 in user units."""
    from app.exports import clean_svg

    path = tmp_path / "t.svg"
    path.write_text(
        '<svg xmlns="http://www.w3.org/2000/svg" width="100" height="100">'
        '<g stroke="#e4002b" stroke-width="2.5" transform="matrix(80,0,0,80,10,10)" '
        'font-family="Sans Serif"><rect vector-effect="non-scaling-stroke" x="0" y="0" '
        'width="1" height="1"/></g></svg>', encoding="utf-8")
    clean_svg(str(path))
    text = path.read_text(encoding="utf-8")
    assert "vector-effect" not in text
    width = float(re.search(r'<(?:\w+:)?rect[^>]*stroke-width="([^"]+)"', text).group(1))
    assert width == pytest.approx(2.5 / 80)
    assert 'font-family="DejaVu Sans, Helvetica, Arial, sans-serif"' in text
