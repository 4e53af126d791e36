"""Figure exports shared by the panel bindings (the bindings, not the widgets, write files).

Exported figures are clean: the view hides what only makes sense on screen (selection outlines,
hover highlights, "(click one)") and takes a title naming the model, the prompt and what is shown.
SVG files are rewritten so they render as on screen outside browsers too (librsvg, Inkscape):

- ``vector-effect="non-scaling-stroke"`` is dropped and each stroke's width divided by the scale
  of its transform (else a 2.5 px outline under a x88 transform became a 220 px red blob);
- embedded heat-map bitmaps are enlarged by whole pixels (nearest neighbour), so renderers that
  smooth images keep the cells crisp (``image-rendering`` is ignored by some);
- Qt's generic "Sans Serif" gets real fallbacks ending in the CSS generic ``sans-serif``.
"""

from __future__ import annotations

import base64
import math
import re
import xml.etree.ElementTree as ET
from pathlib import Path

SVG_NS = "http://www.w3.org/2000/svg"
XLINK_NS = "http://www.w3.org/1999/xlink"
SANS = "DejaVu Sans, Helvetica, Arial, sans-serif"
MONO = "DejaVu Sans Mono, Menlo, Consolas, monospace"
GENERIC = ("serif", "sans-serif", "monospace", "cursive", "fantasy", "system-ui")
MAX_IMAGE_SIDE = 2048  # enlarged heat-map bitmaps stay below this many pixels per side
_NUM = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"


def export_figure(view, item, path: str, kind: str, title: str, min_width: int = 800,
                  **exporting) -> str:
    """Write ``item`` (a pyqtgraph item of ``view``) as ``kind`` ("png" or "svg") to ``path``,
    with ``title`` and without on-screen-only marks; returns the path written (the extension is
    added if missing). ``view.exporting(title, **exporting)`` prepares the view."""
    import pyqtgraph.exporters as exporters

    out = Path(path)
    if out.suffix.lower() != f".{kind}":
        out = out.with_name(out.name + f".{kind}")
    with view.exporting(title, **exporting):
        if kind == "png":
            exporter = exporters.ImageExporter(item)
            exporter.parameters()["width"] = max(int(item.sceneBoundingRect().width()) * 2,
                                                 min_width)
            exporter.export(str(out))
        elif kind == "svg":
            export_svg(item, str(out))
        else:
            raise ValueError(f"unknown figure format {kind!r}")
    return str(out)


def export_svg(item, path: str) -> None:
    """pyqtgraph's SVGExporter (tolerating the closing 'Z' Qt >= 6.8 writes in paths), then
    :func:`clean_svg` for renderers other than browsers.

    pyqtgraph 0.14 parses every path token as 'x,y' and fails on a bare 'Z'; dropping it only
    leaves the (already returned-to-start) outline open, which draws the same.
    """
    import importlib

    import pyqtgraph.exporters as exporters

    module = importlib.import_module("pyqtgraph.exporters.SVGExporter")
    original = module.correctCoordinates

    def tolerant(node, defs, item, options):
        for path_node in node.getElementsByTagName("path"):
            d = path_node.getAttribute("d")
            tokens = [t for t in d.split() if t not in ("Z", "z")]
            path_node.setAttribute("d", " ".join(tokens))
        return original(node, defs, item, options)

    module.correctCoordinates = tolerant
    try:
        exporters.SVGExporter(item).export(path)
    finally:
        module.correctCoordinates = original
    clean_svg(path)


# -- SVG clean-up ---------------------------------------------------------------------------------
def _parse_transform(text: str) -> tuple[float, ...]:
    """An SVG transform list as one affine matrix (a, b, c, d, e, f)."""
    m = (1.0, 0.0, 0.0, 1.0, 0.0, 0.0)
    for name, args in re.findall(r"(\w+)\s*\(([^)]*)\)", text or ""):
        v = [float(x) for x in re.findall(_NUM, args)]
        if name == "matrix" and len(v) == 6:
            t = tuple(v)
        elif name == "translate" and v:
            t = (1.0, 0.0, 0.0, 1.0, v[0], v[1] if len(v) > 1 else 0.0)
        elif name == "scale" and v:
            t = (v[0], 0.0, 0.0, v[1] if len(v) > 1 else v[0], 0.0, 0.0)
        elif name == "rotate" and v:
            r = math.radians(v[0])
            t = (math.cos(r), math.sin(r), -math.sin(r), math.cos(r), 0.0, 0.0)
        else:
            continue
        m = _compose(m, t)
    return m


def _compose(m, t):
    a, b, c, d, e, f = m
    a2, b2, c2, d2, e2, f2 = t
    return (a * a2 + c * b2, b * a2 + d * b2, a * c2 + c * d2, b * c2 + d * d2,
            a * e2 + c * f2 + e, b * e2 + d * f2 + f)


def _style(el) -> dict[str, str]:
    out = {}
    for part in (el.get("style") or "").split(";"):
        if ":" in part:
            k, v = part.split(":", 1)
            out[k.strip()] = v.strip()
    return out


def _font_family(value: str) -> str:
    names = [n.strip().strip("\"'") for n in value.split(",") if n.strip()]
    if not names:
        return SANS
    if names[0].lower() in ("sans serif", "sans", "sansserif", "helvetica"):
        return SANS
    if names[0].lower() in ("monospace", "mono", "courier"):
        return MONO
    if not any(n.lower() in GENERIC for n in names):
        names.append("sans-serif")
    return ", ".join(names)


def _enlarge_png(data: bytes) -> bytes | None:
    """The PNG enlarged by a whole factor, nearest neighbour (None if already large)."""
    from PySide6.QtCore import QBuffer, QByteArray, QIODevice, Qt
    from PySide6.QtGui import QImage

    image = QImage()
    if not image.loadFromData(data, "PNG"):
        return None
    factor = MAX_IMAGE_SIDE // max(image.width(), image.height(), 1)
    if factor < 2:
        return None
    big = image.scaled(image.width() * factor, image.height() * factor,
                       Qt.AspectRatioMode.IgnoreAspectRatio,
                       Qt.TransformationMode.FastTransformation)
    buf = QByteArray()
    device = QBuffer(buf)
    device.open(QIODevice.OpenModeFlag.WriteOnly)
    big.save(device, "PNG")
    device.close()
    return bytes(buf)


def drop_xml_illegal(path: str | Path) -> None:
    """Remove the control characters XML 1.0 forbids, which Qt's SVG writers copy from text
    (a prompt or token holding \\x04 made the file unreadable to every SVG reader)."""
    raw = Path(path).read_bytes()
    cleaned = re.sub(rb"[\x00-\x08\x0b\x0c\x0e-\x1f]", b"", raw)
    if cleaned != raw:
        Path(path).write_bytes(cleaned)


def clean_svg(path: str) -> None:
    """Rewrite an exported SVG so non-browser renderers draw it as the screen does."""
    drop_xml_illegal(path)
    ET.register_namespace("", SVG_NS)
    ET.register_namespace("xlink", XLINK_NS)
    tree = ET.parse(path)
    href = f"{{{XLINK_NS}}}href"

    def walk(el, matrix, width: float) -> None:
        matrix = _compose(matrix, _parse_transform(el.get("transform", "")))
        style = _style(el)
        if el.get("stroke-width") or style.get("stroke-width"):
            try:
                width = float(re.findall(_NUM, el.get("stroke-width")
                                         or style["stroke-width"])[0])
            except (IndexError, ValueError):
                pass
        effect = el.attrib.pop("vector-effect", None)
        if effect == "non-scaling-stroke":
            a, b, c, d = matrix[:4]
            scale = math.sqrt(abs(a * d - b * c))
            if scale > 0 and math.isfinite(scale):
                el.set("stroke-width", f"{width / scale:.6g}")
        if "font-family" in el.attrib:
            el.set("font-family", _font_family(el.get("font-family")))
        if el.tag == f"{{{SVG_NS}}}image":
            ref = el.get(href) or el.get("href") or ""
            if ref.startswith("data:image/png;base64,"):
                big = _enlarge_png(base64.b64decode(ref.split(",", 1)[1]))
                if big is not None:
                    el.set(href, "data:image/png;base64," + base64.b64encode(big).decode("ascii"))
            el.set("image-rendering", "optimizeSpeed")
            el.set("style", "image-rendering:pixelated")
        for child in el:
            walk(child, matrix, width)

    walk(tree.getroot(), (1.0, 0.0, 0.0, 1.0, 0.0, 0.0), 1.0)
    tree.write(path, encoding="utf-8", xml_declaration=True)


def figure_title(model: str, what: str, prompt: str = "", limit: int = 70) -> str:
    """"model · what" and, on a second line, "“prompt”" (shortened to ``limit`` characters)."""
    title = " · ".join(p for p in (model, what) if p)
    text = " ".join(prompt.split())
    if text:
        title += "\n“" + (text if len(text) <= limit else text[: limit - 1] + "…") + "”"
    return title


def write_csv(path: str | Path, about: list[tuple[str, str]], header: list[str],
              rows) -> str:
    """A CSV table whose first lines say what the numbers are (``# model: …``, prompts, metric,
    units), read back by ``pandas.read_csv(path, comment="#")`` or ``np.genfromtxt``; returns the
    path written (``.csv`` added if missing)."""
    import csv

    out = Path(path)
    if out.suffix.lower() != ".csv":
        out = out.with_name(out.name + ".csv")
    with open(out, "w", newline="", encoding="utf-8") as fh:
        for key, value in about:
            text = " ".join(str(value).split())  # one line each, whatever the prompt held
            fh.write(f"# {key}: {text if len(text) <= 2000 else text[:1999] + '…'}\n")
        writer = csv.writer(fh)
        writer.writerow(header)
        writer.writerows(rows)
    return str(out)


def csv_number(value: float) -> str:
    """A cell's value for CSV: 7 significant digits, empty where there is none (NaN)."""
    return f"{value:.7g}" if math.isfinite(value) else ""


def write_text_atomic(path: str | Path, text: str) -> None:
    """Write ``text`` through QSaveFile: the old file stays until the new one is complete."""
    from PySide6.QtCore import QSaveFile

    f = QSaveFile(str(path))
    if not f.open(QSaveFile.OpenModeFlag.WriteOnly):
        raise OSError(f"cannot open for writing ({f.errorString()})")
    f.write(text.encode("utf-8"))
    if not f.commit():
        raise OSError(f"writing failed ({f.errorString()})")
