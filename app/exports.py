"""Export helpers shared by the panel bindings (the bindings, not the widgets, write files)."""

from __future__ import annotations


def export_svg(item, path: str) -> None:
    """pyqtgraph's SVGExporter, tolerating the closing 'Z' that Qt >= 6.8 writes in paths.

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
