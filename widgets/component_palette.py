"""A tree of the model's components to drag onto a patch plan.

Drags carry ``MIME_TYPE``: JSON, a list of ``{"component", "layer", "index", "positions"}``
dicts. The heatmap of a sweep and other panels can produce the same payload with
:func:`component_mime`.
"""

from __future__ import annotations

import json

from PySide6.QtCore import QMimeData, Qt
from PySide6.QtWidgets import (
    QAbstractItemView,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QSpinBox,
    QTreeWidget,
    QTreeWidgetItem,
    QVBoxLayout,
    QWidget,
)

MIME_TYPE = "application/x-lensbench-patch-items"
ROLE = Qt.ItemDataRole.UserRole
LAYER_PARTS = [("resid_pre", "residual stream before the block"),
               ("resid_mid", "residual stream between attention and MLP"),
               ("resid_post", "residual stream after the block"),
               ("attn_out", "attention output"), ("mlp_out", "MLP output")]
HEAD_PARTS = [("z", "head output (z)"), ("q", "queries"), ("k", "keys"), ("v", "values"),
              ("pattern", "attention pattern")]


def component_mime(items: list[dict]) -> QMimeData:
    mime = QMimeData()
    mime.setData(MIME_TYPE, json.dumps(items).encode("utf-8"))
    mime.setText("; ".join(f"{d['component']} L{d.get('layer', 0)}" for d in items))
    return mime


def parse_mime(mime: QMimeData) -> list[dict]:
    if not mime.hasFormat(MIME_TYPE):
        return []
    try:
        data = json.loads(bytes(mime.data(MIME_TYPE)).decode("utf-8"))
    except (ValueError, UnicodeDecodeError):
        return []
    out = []
    for d in data if isinstance(data, list) else []:
        if isinstance(d, dict) and isinstance(d.get("component"), str):
            item = {"component": d["component"], "layer": int(d.get("layer", 0)),
                    "index": int(d.get("index", -1)),
                    "positions": [int(p) for p in d.get("positions", [])]}
            if isinstance(d.get("sae"), str):  # an SAE feature (the Features panel)
                item["sae"] = d["sae"]
            out.append(item)
    return out


def parse_positions(text: str) -> list[int] | None:
    """'' or 'all' -> [] (every position); '3, 5-7' -> [3, 5, 6, 7]; None when unreadable."""
    text = text.strip().lower()
    if text in ("", "all"):
        return []
    out: list[int] = []
    try:
        for part in text.replace(" ", "").split(","):
            if "-" in part:
                a, b = part.split("-", 1)
                out.extend(range(int(a), int(b) + 1))
            elif part:
                out.append(int(part))
    except ValueError:
        return None
    return sorted(set(out))


class _Tree(QTreeWidget):
    def __init__(self, palette: ComponentPalette) -> None:
        super().__init__()
        self._palette = palette

    def mimeTypes(self):  # noqa: N802 (Qt naming)
        return [MIME_TYPE]

    def mimeData(self, items):  # noqa: N802 (Qt naming)
        payload = [p for p in (self._palette.payload(i) for i in items) if p is not None]
        return component_mime(payload)


class ComponentPalette(QWidget):
    """Embedding, each layer's residual stream / attn_out / mlp_out, each head's z/q/k/v/pattern,
    MLP neurons by index; positions from the field above (empty = all)."""

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.tree = _Tree(self)
        self.tree.setHeaderLabels(["Component (drag onto the plan)"])
        self.tree.setDragEnabled(True)
        self.tree.setDragDropMode(QAbstractItemView.DragDropMode.DragOnly)
        self.tree.setSelectionMode(QAbstractItemView.SelectionMode.ExtendedSelection)
        self.tree.setToolTip("Drag a component (or several) onto the patch plan.")
        self.positions = QLineEdit()
        self.positions.setPlaceholderText("all positions")
        self.positions.setToolTip("Positions the dragged component is patched at: empty for "
                                  "all, or e.g. '3, 5-7'.")
        self.neuron = QSpinBox()
        self.neuron.setRange(0, 0)
        self.neuron.setToolTip("Index of the MLP neuron a dragged 'neuron' item patches")
        row = QHBoxLayout()
        row.addWidget(QLabel("Positions"))
        row.addWidget(self.positions, 1)
        row.addWidget(QLabel("Neuron"))
        row.addWidget(self.neuron)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.addLayout(row)
        lay.addWidget(self.tree, 1)

    def set_model(self, n_layers: int, n_heads: int, d_mlp: int, n_kv_heads: int = 0,
                  missing: dict | None = None) -> None:
        """The model's components. ``missing``: component -> why this model cannot patch it
        (left out of the tree, listed in its tooltip). With grouped-query attention (``n_kv_heads``
        fewer than ``n_heads``) keys and values belong to key/value heads, listed per layer."""
        self.tree.clear()
        missing = dict(missing or {})
        gqa = 0 < n_kv_heads < n_heads
        self.neuron.setRange(0, max(d_mlp - 1, 0))
        tip = "Drag a component (or several) onto the patch plan."
        if missing:
            tip += "\nNot offered on this model:\n" + "\n".join(
                f"• {c}: {why}" for c, why in missing.items())
        self.tree.setToolTip(tip)
        if "embed" not in missing:
            embed = QTreeWidgetItem(["embed (token embedding)"])
            embed.setData(0, ROLE, ("embed", 0, -1))
            self.tree.addTopLevelItem(embed)
        head_parts = [(p, t) for p, t in HEAD_PARTS if p not in missing
                      and not (gqa and p in ("k", "v"))]
        for layer in range(n_layers):
            top = QTreeWidgetItem([f"Layer {layer}"])
            top.setFlags(top.flags() & ~Qt.ItemFlag.ItemIsDragEnabled)
            self.tree.addTopLevelItem(top)
            for part, part_tip in LAYER_PARTS:
                if part in missing:
                    continue
                item = QTreeWidgetItem([f"L{layer} {part}"])
                item.setToolTip(0, part_tip)
                item.setData(0, ROLE, (part, layer, -1))
                top.addChild(item)
            for head in range(n_heads):
                h_item = QTreeWidgetItem([f"L{layer}H{head}"])
                h_item.setData(0, ROLE, ("z", layer, head))
                h_item.setToolTip(0, "drag: the head's output (z); expand for its other parts")
                top.addChild(h_item)
                for part, part_tip in head_parts:
                    item = QTreeWidgetItem([f"L{layer}H{head} {part}"])
                    item.setToolTip(0, part_tip)
                    item.setData(0, ROLE, (part, layer, head))
                    h_item.addChild(item)
            if gqa:  # keys and values are shared by a group of query heads
                group = n_heads // n_kv_heads
                for kv in range(n_kv_heads):
                    shared = f"shared by query heads H{kv * group}–H{(kv + 1) * group - 1}"
                    for part in ("k", "v"):
                        if part in missing:
                            continue
                        item = QTreeWidgetItem([f"L{layer} KV{kv} {part}"])
                        item.setToolTip(0, f"{'keys' if part == 'k' else 'values'} of key/value "
                                           f"head {kv}, {shared}")
                        item.setData(0, ROLE, (part, layer, kv))
                        top.addChild(item)
            if "neuron" not in missing:
                neuron = QTreeWidgetItem([f"L{layer} MLP neuron (index from 'Neuron')"])
                neuron.setData(0, ROLE, ("neuron", layer, -2))
                top.addChild(neuron)

    def find(self, text: str) -> QTreeWidgetItem | None:
        hits = self.tree.findItems(text, Qt.MatchFlag.MatchExactly | Qt.MatchFlag.MatchRecursive)
        return hits[0] if hits else None

    def payload(self, item: QTreeWidgetItem) -> dict | None:
        data = item.data(0, ROLE)
        if not data:
            return None
        component, layer, index = data
        if index == -2:
            index = self.neuron.value()
        return {"component": component, "layer": layer, "index": index,
                "positions": parse_positions(self.positions.text()) or []}
