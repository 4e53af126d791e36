"""Binding for the Attention panel: runs ``engine.attention.run_attention``, links the selection,
and writes exports (PNG/SVG via pyqtgraph exporters, CSV/NPZ via numpy)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PySide6.QtCore import QEvent, Qt
from PySide6.QtWidgets import QFileDialog

from app.exports import export_figure, figure_title, write_csv
from app.panels.base import PanelBinding
from app.session_schema import Bool, Int, List, Obj, Opt, Str
from widgets.attention_panel import AttentionPanel
from widgets.token_strip import visible

if TYPE_CHECKING:
    from engine.attention import AttentionRequest

FILTERS = {"png": "PNG image (*.png)", "svg": "SVG image (*.svg)", "csv": "CSV table (*.csv)",
           "npz": "NumPy arrays (*.npz)"}


class AttentionBinding(PanelBinding):
    title = "Attention"
    object_name = "attentionDock"
    state_schema = Obj({"mode": Opt(Str(64)), "colormap": Str(64), "scale": Opt(Str(64)),
                        "hide_bos": Bool(), "kept": List(Str(1000), 256),
                        "layer_view": Int(-1, 100_000),
                        "pinned": List(List(Int(0, 100_000), length=2), 64)})
    area = Qt.DockWidgetArea.BottomDockWidgetArea
    tab_with = "attributionDock"  # big plots share the bottom tab group
    tooltip = "Attention patterns of every head, and one head in detail"
    channel = "attention"

    def create_widget(self):
        panel = AttentionPanel()
        selection = self.controller.selection
        panel.sig_head_clicked.connect(selection.set_head)
        panel.sig_position_selected.connect(selection.set_position)
        selection.head_selected.connect(panel.set_head)
        selection.position_changed.connect(panel.set_position)
        panel.sig_scores_needed.connect(self._recompute_with_scores)
        panel.sig_export_requested.connect(self.export_dialog)
        panel.sig_keep_toggled.connect(self._keep_toggled)
        self.controller.inspect_tokens.connect(self.inspect_tokens)
        self.kept: list[str] = []  # prompts kept in the batch besides the current one
        self._last: AttentionRequest | None = None
        self._pending: AttentionRequest | None = None
        self._select_label: str | None = None  # the item to show when the result arrives
        panel.installEventFilter(self)
        panel.set_head(selection.layer, selection.head)
        return panel

    # -- jobs ------------------------------------------------------------------------------------------
    def on_prompt_run(self, prompt: str, truncate: bool) -> None:
        from engine.attention import AttentionRequest

        prompts = (prompt,) + tuple(p for p in self.kept if p != prompt)
        request = AttentionRequest(prompts=prompts, truncate=truncate,
                                   scores=self.widget.mode() == "scores")
        if self.window is not None and not self.widget.isVisible():
            # A hidden tab: compute when it is shown, not on every run (long prompts are costly).
            self._pending = request
            self.widget.clear("The prompt changed; its attention is computed when this panel "
                              "is shown.")
            return
        self._submit(request)

    def eventFilter(self, obj, event) -> bool:  # noqa: N802 (Qt naming)
        if obj is self.widget and event.type() == QEvent.Type.Show and self._pending is not None:
            request, self._pending = self._pending, None
            self._submit(request)
        return super().eventFilter(obj, event)

    def inspect_tokens(self, token_ids, label: str) -> None:
        """Show attention on an explicit token sequence (e.g. from the induction scanner) as one
        more item of the batch: the prompts shown so far stay in the prompt box."""
        from engine.attention import AttentionRequest

        ids = tuple(int(t) for t in token_ids)
        label = label or "tokens"
        prompts = self._last.prompts if self._last is not None else ()
        if not prompts and self.controller.selection.prompt.strip():
            prompts = (self.controller.selection.prompt,)
        self._select_label = label
        self._submit(AttentionRequest(prompts=prompts, token_ids=(ids,),
                                      labels=(*prompts, label),
                                      scores=self.widget.mode() == "scores"))
        if self.window is not None:
            dock = self.window.docks.get(self.object_name)
            if dock is not None:
                dock.show()
                dock.raise_()

    def _recompute_with_scores(self) -> None:
        if self._pending is not None:
            from dataclasses import replace

            self._pending = replace(self._pending, scores=True)
        elif self._last is not None:
            from dataclasses import replace

            self._submit(replace(self._last, scores=True))

    def _submit(self, request: AttentionRequest) -> None:
        from engine.attention import run_attention

        self._last = request
        self._pending = None
        self.widget.show_error("")
        self.widget.set_busy(True)
        self.controller.submit(self.channel, run_attention, request, on_result=self._show,
                               on_error=self._on_error,
                               on_cancel=lambda: self.widget.set_busy(False))

    def _show(self, result) -> None:
        self.widget.set_result(result)
        self.widget.set_busy(False)
        label, self._select_label = self._select_label, None
        if label is not None:
            self.widget.select_item(label)

    def _on_error(self, info) -> bool:
        self.widget.set_busy(False)
        if info.kind in ("input", "too_long"):
            self.widget.show_error(f"{info.message} {info.hint}".strip())
            return True
        return False

    def on_model_loaded(self, info) -> None:
        # Pins of heads this model has stay (the same study on a fine-tune); others go.
        self.widget.pins.set_pinned([(la, h) for la, h in self.widget.pins.pinned()
                                     if la < info.n_layers and h < info.n_heads])
        self.kept.clear()
        self.widget.set_kept([])
        self._last = self._pending = None
        self.widget.clear(f"{info.name}: {info.n_layers} layers × {info.n_heads} heads. Run a "
                          "prompt to see their attention.")

    def on_no_model(self, text: str) -> None:
        self._last = self._pending = None
        self.widget.clear(text)

    def _keep_toggled(self, label: str, keep: bool) -> None:
        if keep and label not in self.kept:
            self.kept.append(label)
        elif not keep and label in self.kept:
            self.kept.remove(label)

    # -- export ----------------------------------------------------------------------------------------
    def export_dialog(self, kind: str) -> None:
        ext = kind.rsplit("_", 1)[-1]
        layer, head = self.widget.focused_head()
        default = f"attention_L{layer}H{head}.{ext}" if kind.startswith("focused") \
            else f"attention_{kind.split('_')[0]}.{ext}"
        path, _ = QFileDialog.getSaveFileName(self.widget, "Export attention", default,
                                              FILTERS[ext])
        if path:
            self.export(kind, path)

    def export(self, kind: str, path: str) -> str:
        """Write one export; returns the path written (the extension is added if missing)."""
        ext = kind.rsplit("_", 1)[-1]
        out = Path(path)
        if out.suffix.lower() != f".{ext}":
            out = out.with_name(out.name + f".{ext}")
        panel = self.widget
        if ext in ("png", "svg"):
            view = panel.focused if kind.startswith("focused") else panel.grid
            return export_figure(view, view.export_target(), str(out), ext,
                                 self.figure_title(kind))
        if ext == "csv":
            values = panel.focused_values()
            tokens = [visible(t) for t in panel.item().str_tokens]
            info = self.controller.model_info
            units = ("pre-softmax attention score (scaled q·k)" if panel._is_scores() else
                     "attention probability (each row sums to 1 over key positions)")
            write_csv(out, [("model", info.name if info is not None else ""),
                            ("prompt", panel.item().label),
                            ("head", self.figure_title(kind).split("\n")[0]),
                            ("rows", "query positions"), ("columns", "key positions"),
                            ("units", units)],
                      ["query_pos", "query_token"] + [f"{k}:{t}" for k, t in enumerate(tokens)],
                      [[q, tokens[q]] + ["" if not np.isfinite(v) else f"{v:.6g}" for v in row]
                       for q, row in enumerate(values)])
        elif ext == "npz":
            np.savez_compressed(out, **panel.export_arrays())
        return str(out)

    def figure_title(self, kind: str) -> str:
        """What an exported picture shows: the model, the head(s) and mode, the prompt."""
        panel = self.widget
        info = self.controller.model_info
        mode = "pre-softmax scores" if panel._is_scores() else "attention pattern"
        if kind.startswith("focused"):
            layer, head = panel.focused_head()
            what = f"L{layer}H{head} {mode}"
        else:
            what = f"every head's {mode}"
        return figure_title(info.name if info is not None else "", what, panel.item().label)

    # -- session ---------------------------------------------------------------------------------------
    def session_state(self) -> dict:
        p = self.widget
        return {"mode": p.mode(), "colormap": p.cmap_combo.currentText(),
                "scale": p.scale_combo.currentData(), "hide_bos": p.bos_check.isChecked(),
                "kept": list(self.kept), "layer_view": p.layer_view(),
                "pinned": [list(h) for h in p.pins.pinned()]}

    def restore_session_state(self, state: dict) -> None:
        p = self.widget
        for combo, key in ((p.mode_combo, "mode"), (p.scale_combo, "scale")):
            idx = combo.findData(state.get(key))
            if idx >= 0:
                combo.setCurrentIndex(idx)
        idx = p.cmap_combo.findText(str(state.get("colormap", "")))
        if idx >= 0:
            p.cmap_combo.setCurrentIndex(idx)
        p.bos_check.setChecked(bool(state.get("hide_bos", False)))
        self.kept = [str(s) for s in state.get("kept", []) if isinstance(s, str)][:16]
        p.set_kept(self.kept)
        p.set_layer_view(int(state.get("layer_view", -1)))
        p.pins.set_pinned(tuple(h) for h in state.get("pinned", []))
        p.set_head(*p.focused_head())  # redraw the pins' frames

    def session_results(self) -> dict:
        """The pinned heads' patterns (float16) on the prompts shown: not every head's."""
        from engine.attention_pins import pin

        pinned = self.widget.pins.pinned()
        result = self.widget.result()
        if not pinned or result is None:
            return {}
        return {"pinned": pin(result, pinned)}

    def restore_results(self, results: dict) -> None:
        from app.session_results import expect
        from engine.attention import AttentionRequest
        from engine.attention_pins import unpin

        saved = expect(results, "pinned", "PinnedAttention")
        info = self.controller.model_info
        if saved is None or info is None:
            return
        result = unpin(saved, info.n_layers)
        # Running again (scores, say) computes every head on exactly these tokens.
        self._last = AttentionRequest(token_ids=tuple(tuple(int(t) for t in it.token_ids)
                                                      for it in result.items),
                                      labels=tuple(it.label for it in result.items))
        self._show(result)
