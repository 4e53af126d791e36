"""Binding for the Induction-heads panel: runs the scan and the ablation check, links the head
selection to the attention panel (on the repeated sequence), and writes PNG/SVG/CSV exports."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QFileDialog

from app.exports import export_figure, figure_title, write_csv
from app.panels.base import PanelBinding
from app.session_schema import Bool, Int, Obj, Opt, Str
from widgets.induction_panel import InductionPanel

if TYPE_CHECKING:
    from engine.induction import InductionRequest

FILTERS = {"png": "PNG image (*.png)", "svg": "SVG image (*.svg)", "csv": "CSV table (*.csv)"}
INSPECT_LABEL = "repeated random tokens"


class InductionBinding(PanelBinding):
    title = "Induction heads"
    object_name = "inductionDock"
    state_schema = Obj({**{k: Int() for k in ("seq_len", "batch", "seed", "threshold")},
                        **{k: Opt(Str(64)) for k in ("source", "rank_by", "token_pool",
                                                     "error_measure", "ablation")},
                        **{k: Bool() for k in ("exclude_bos", "exclude_current_token",
                                               "use_prompt")},
                        "formula": Str(10_000)})
    area = Qt.DockWidgetArea.BottomDockWidgetArea
    # Not in the attention/attribution tab group: clicking a head raises the attention dock, and
    # the scores and the head's stripe should be visible side by side.
    tab_with = ""
    tooltip = ("Scan every head for induction, previous-token, duplicate-token, current-token and "
               "BOS attention; check induction heads causally by ablating them")
    channel = "induction"
    ablation_channel = "induction-ablation"

    def create_widget(self):
        panel = InductionPanel()
        sel = self.controller.selection
        panel.sig_scan.connect(self.scan)
        panel.sig_head_clicked.connect(self.select_head)
        panel.sig_ablate.connect(self.ablate)
        panel.sig_export.connect(self.export_dialog)
        panel.sig_inspect.connect(self.inspect)
        sel.head_selected.connect(panel.set_selected_head)
        panel.set_selected_head(sel.layer, sel.head)
        self.result = None
        self.ablation = None
        self._truncate = False
        self._rescan_on_show = False
        self._ablate_after: dict | None = None  # an ablation to run once a recomputed scan is in
        return panel

    # -- jobs ------------------------------------------------------------------------------------
    def on_prompt_run(self, prompt: str, truncate: bool) -> None:
        """A new prompt: re-score (the prompt scores change) if the panel is on screen."""
        self._truncate = truncate
        if self.controller.model_info is None:
            return
        if self.on_screen:
            self.scan(self.widget.settings())
        elif self.result is not None and self.result.prompt_scores:
            # A hidden tab keeps the old prompt's scores: say so, and re-score when shown.
            self._rescan_on_show = True
            self.widget.set_stale("The prompt changed: the scores on your prompt are for the "
                                  "previous one until this panel rescans (when it is shown).")

    def on_shown(self) -> None:
        if self._rescan_on_show:
            self._rescan_on_show = False
            if self.controller.model_info is not None:
                self.scan(self.widget.settings())

    def on_model_loaded(self, info) -> None:
        self._ablate_after = None
        self.result = None
        self.ablation = None
        self._rescan_on_show = False
        self.widget.set_model(info.n_layers, info.n_heads, info.n_ctx)
        self.widget.show_message("")

    def on_no_model(self, text: str) -> None:
        self.result = self.ablation = None
        self.widget.clear()
        self.widget.show_message(text)

    def request_from(self, settings: dict) -> InductionRequest:
        from engine.induction import CustomPattern, InductionRequest

        custom = settings.get("custom")
        prompt = self.controller.selection.prompt if settings.get("use_prompt", True) else ""
        return InductionRequest(
            seq_len=int(settings["seq_len"]), batch=int(settings["batch"]),
            seed=int(settings["seed"]), token_pool=str(settings.get("token_pool", "all")),
            prompt=prompt, truncate=self._truncate,
            exclude_bos=bool(settings["exclude_bos"]),
            exclude_current_token=bool(settings["exclude_current_token"]),
            error_measure=str(settings["error_measure"]),
            custom=CustomPattern(**custom) if custom else None)

    def scan(self, settings: dict) -> int:
        if self.controller.model_info is None:
            self.widget.show_message(self.no_model_text())
            return -1
        from engine.induction import run_induction_scan

        request = self.request_from(settings)
        self._rescan_on_show = False
        self.widget.set_busy(True, "Scanning every head…")
        return self.controller.submit(self.channel, run_induction_scan, request,
                                      on_result=self._show, on_error=self._on_error,
                                      on_cancel=self._cancelled)

    def ablate(self, settings: dict) -> int:
        r = self.result
        if r is None:
            self.widget.show_message("Scan first.")
            return -1
        from engine.induction import AblationRequest, run_induction_ablation

        request = AblationRequest(heads=tuple(settings["heads"]), mode=settings["mode"],
                                  seq_len=r.seq_len, batch=r.batch, seed=r.seed,
                                  token_pool=r.token_pool,
                                  control_sets=int(settings["control_sets"]),
                                  control_seed=int(settings["control_seed"]))
        self.widget.set_busy(True, ablating=True)
        return self.controller.submit(self.ablation_channel, run_induction_ablation, request,
                                      on_result=self._show_ablation, on_error=self._on_error,
                                      on_cancel=self._cancelled)

    def session_results(self) -> dict:
        return {"scan": self.result, "ablation": self.ablation}

    def restore_results(self, results: dict) -> None:
        from app.session_results import expect

        scan = expect(results, "scan", "InductionResult")
        ablation = expect(results, "ablation", "AblationResult")
        if scan is not None:
            self._show(scan)
            if ablation is not None:
                self._show_ablation(ablation)

    def recompute(self, results: dict, prompt: str) -> None:
        """Scan again with the session's settings; then, if the session had an ablation, ablate
        the same heads the same way."""
        from engine.induction import AblationResult

        ablation = results.get("ablation")
        self._ablate_after = None
        if isinstance(ablation, AblationResult) and ablation.mode in ("zero", "mean"):
            from app.session_results import int_pairs

            heads = int_pairs(ablation.heads)
            controls = ablation.control_heads
            if heads:
                self._ablate_after = {
                    "heads": heads, "mode": ablation.mode,
                    "control_sets": len(controls) if isinstance(controls, tuple) else 0,
                    "control_seed": self.widget.control_seed.value()}
        self.scan(self.widget.settings())

    def _show(self, result) -> None:
        self.result = result
        self.ablation = None
        self.widget.set_busy(False)
        self.widget.set_result(result)
        settings, self._ablate_after = self._ablate_after, None
        if settings is not None:
            self.ablate(settings)

    def _show_ablation(self, result) -> None:
        self.ablation = result
        self.widget.set_busy(False)
        self.widget.set_ablation(result)

    def _cancelled(self) -> None:
        self._ablate_after = None
        self.widget.set_busy(False)
        self.widget.set_cancelled()

    def _on_error(self, info) -> bool:
        self.widget.set_busy(False)
        if info.kind in ("input", "too_long"):
            self.widget.show_message(f"{info.message} {info.hint}".strip())
            return True
        if info.kind == "oom":
            self.widget.show_message(f"{info.message} Lower the batch or the length T.")
            return True
        return False

    # -- linking ---------------------------------------------------------------------------------
    def select_head(self, layer: int, head: int) -> None:
        """Select the head everywhere (the attention panel focuses it on what it shows)."""
        self.controller.selection.set_head(layer, head)
        self.widget.set_selected_head(layer, head)

    def inspect(self) -> None:
        """Add the repeated sequence to the attention panel's prompts and show it there; the
        user's prompt stays one click away in its prompt box."""
        if self.result is not None:
            ids = [int(t) for t in self.result.rep_tokens[0]]
            self.controller.inspect_tokens.emit(ids, INSPECT_LABEL)

    # -- export ----------------------------------------------------------------------------------
    def export_dialog(self, kind: str) -> None:
        if self.result is None:
            self.widget.show_message("Nothing to export yet: scan first.")
            return
        path, _ = QFileDialog.getSaveFileName(self.widget, "Export head scores",
                                              f"head_scores.{kind}", FILTERS[kind])
        if path:
            self.export(kind, path)

    def export(self, kind: str, path: str) -> str:
        """Write the score maps as PNG/SVG (titled, threshold outlines kept, the selected head's
        outline left out) or every score as CSV."""
        out = Path(path)
        if out.suffix.lower() != f".{kind}":
            out = out.with_name(out.name + f".{kind}")
        if kind in ("png", "svg"):
            panel = self.widget
            return export_figure(panel.heat, panel.export_target(), str(out), kind,
                                 self.figure_title(), min_width=1000, keep=("mark",))
        if kind == "csv":
            header, table = self.widget.export_table()
            info = self.controller.model_info
            rows = [[str(int(row[0])), str(int(row[1]))] + [f"{v:.6g}" for v in row[2:]]
                    for row in np.asarray(table)]
            write_csv(out, [("model", info.name if info is not None else ""),
                            ("scan", self.figure_title().split("\n")[0]),
                            ("units", "head_detector scores: the share of each head's "
                                      "attention on the pattern's positions (0 to 1)")], header, rows)
        else:
            raise ValueError(f"unknown export kind {kind!r}")
        return str(out)

    def figure_title(self) -> str:
        p, r = self.widget, self.result
        info = self.controller.model_info
        on_prompt = p.source.currentData() == "prompt"
        what = (f"head scores on {'the prompt' if on_prompt else 'repeated random tokens'} "
                f"(T = {r.seq_len}, {r.batch} sequences; {r.error_measure}) · outlined: "
                f"{p.rank_by.currentText().lower()} ≥ {p.threshold_value():.2f}")
        prompt = self.controller.selection.prompt if on_prompt else ""
        return figure_title(info.name if info is not None else "", what, prompt)

    # -- session ---------------------------------------------------------------------------------
    def session_state(self) -> dict:
        p = self.widget
        s = p.settings()
        s.pop("custom", None)
        s.update(formula=p.formula.text(), threshold=p.threshold.value(),
                 source=p.source.currentData(), rank_by=p.rank_by.currentData(),
                 ablation=p.ablate_mode.currentText())
        return s

    def restore_session_state(self, state: dict) -> None:
        p = self.widget
        for spin, key in ((p.seq_len, "seq_len"), (p.batch, "batch"), (p.seed, "seed"),
                          (p.threshold, "threshold")):
            if isinstance(state.get(key), int):
                spin.setValue(state[key])
        for combo, key in ((p.source, "source"), (p.rank_by, "rank_by"), (p.pool, "token_pool")):
            idx = combo.findData(state.get(key))
            if idx >= 0:
                combo.setCurrentIndex(idx)
        for combo, key in ((p.measure, "error_measure"), (p.ablate_mode, "ablation")):
            idx = combo.findText(str(state.get(key, "")))
            if idx >= 0:
                combo.setCurrentIndex(idx)
        p.exclude_bos.setChecked(bool(state.get("exclude_bos", False)))
        p.exclude_current.setChecked(bool(state.get("exclude_current_token", False)))
        p.use_prompt.setChecked(bool(state.get("use_prompt", True)))
        if isinstance(state.get("formula"), str):
            p.formula.setText(state["formula"][:500])
