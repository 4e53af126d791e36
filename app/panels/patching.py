"""Binding for the activation-patching editor: pair checks, streamed sweeps, the patch plan."""

from __future__ import annotations

from PySide6.QtCore import Qt

from app.panels.base import PanelBinding
from app.session_schema import MAX_PROMPT, Int, List, Obj, Opt, Str
from widgets.patching_panel import PatchingPanel


class PatchingBinding(PanelBinding):
    title = "Activation patching"
    object_name = "patchingDock"
    state_schema = Obj({
        "pairs": List(List(Str(MAX_PROMPT), 4, length=4), 64),
        "metric": Opt(Str(64)), "direction": Opt(Str(64)),
        "plan": List(Obj({"component": Str(32), "layer": Int(0, 100_000),
                          "index": Int(-1, 10**7), "positions": List(Int(0, 10**6), 4096),
                          "mode": Str(32), "sae": Str(4096)}, required=("component",)), 1024),
    })
    area = Qt.DockWidgetArea.BottomDockWidgetArea
    tab_with = "attributionDock"
    tooltip = "Patch activations between a clean and a corrupted prompt and measure the effect"
    channel = "patching"
    check_channel = "patching.check"
    max_tokens_per_chunk = 4096

    def create_widget(self):
        panel = PatchingPanel()
        panel.sig_pairs_edited.connect(self.check)
        panel.sig_run_sweep.connect(self.run_sweep)
        panel.sig_cancel.connect(lambda: self.controller.cancel(self.channel))
        panel.sig_cell_clicked.connect(self._select)
        panel.plan.sig_run_plan.connect(self.run_plan)
        panel.sig_estimate.connect(self.estimate)
        panel.sig_verify.connect(self.verify)
        panel.sig_path_patch.connect(self.path_patch)
        panel.sig_export.connect(self.export_dialog)
        self.controller.job_progress.connect(self._progress)
        self.controller.bos_changed.connect(lambda _choice: self.check())
        return panel

    def edit_actions(self) -> list:
        return self.widget.plan.edit_actions()

    # -- exports -------------------------------------------------------------------------------
    def export_dialog(self, what: str, kind: str) -> None:
        from PySide6.QtWidgets import QFileDialog

        filters = {"png": "PNG image (*.png)", "svg": "SVG image (*.svg)",
                   "csv": "CSV table (*.csv)"}
        name = f"patching_{'plan' if what == 'plan' else self._shown_name()}.{kind}"
        path, _ = QFileDialog.getSaveFileName(self.widget, f"Export {kind.upper()}", name,
                                              filters[kind])
        if path:
            self.export(what, kind, path)

    def _shown_name(self) -> str:
        r = self.widget.result
        return "heatmap" if r is None else str(r.kind)

    def export(self, what: str, kind: str, path: str) -> str | None:
        """Write the shown heatmap or the plan's bars (``what``) as ``kind``; returns the path
        written, or None after saying why not in the panel."""
        from app.exports import export_figure, write_csv
        from widgets import patching_export as pe

        panel = self.widget
        result = panel.result if what == "heatmap" else panel.plan.result
        if result is None:
            panel.show_message("Nothing to export yet: run a sweep first." if what == "heatmap"
                               else "Nothing to export yet: run the plan first.")
            return None
        try:
            if kind == "csv":
                about = pe.heatmap_about(panel) if what == "heatmap" else pe.plan_about(result)
                header, rows = (pe.heatmap_table(panel) if what == "heatmap"
                                else pe.plan_table(result))
                return write_csv(path, self._about() + about, header, rows)
            if what == "heatmap":
                view = panel.heatmap
                return export_figure(view, view.export_target(), path, kind,
                                     self._figure_title(pe.heatmap_what(result)),
                                     min_width=1200)
            chart = panel.plan.chart
            return export_figure(chart, chart.plot, path, kind,
                                 self._figure_title("patch plan"), min_width=900)
        except OSError as exc:
            panel.show_message(f"Could not write {path}: {exc.strerror or exc}")
            return None

    def _about(self) -> list[tuple[str, str]]:
        info = self.controller.model_info
        about = [("model", info.name if info is not None else "")]
        for i, (clean, corrupted, answer, counterfactual) in enumerate(self.widget.pairs()):
            about += [(f"pair {i + 1} clean", clean), (f"pair {i + 1} corrupted", corrupted),
                      (f"pair {i + 1} answer / counterfactual", f"{answer} / {counterfactual}")]
        return about

    def _figure_title(self, what: str) -> str:
        from app.exports import figure_title

        info = self.controller.model_info
        pairs = self.widget.pairs()
        prompt = pairs[0][0] if pairs else ""
        more = f" (+{len(pairs) - 1} more pairs)" if len(pairs) > 1 else ""
        return figure_title(info.name if info is not None else "", what + more, prompt)

    # -- pairs -----------------------------------------------------------------------------------
    def prompt_pairs(self) -> tuple:
        from engine.patch_pairs import PromptPair

        return tuple(PromptPair(c, r, a, cf) for c, r, a, cf in self.widget.pairs())

    def check(self) -> None:
        if self.controller.model_info is None:
            return
        from engine.patch_pairs import PairCheckRequest, check_pairs

        self.controller.submit(self.check_channel, check_pairs,
                               PairCheckRequest(self.prompt_pairs()),
                               on_result=self.widget.set_alignment)

    # -- sweeps ----------------------------------------------------------------------------------
    def run_sweep(self, kind: str) -> None:
        if self.controller.model_info is None:
            self.widget.show_message(self.no_model_text())
            return
        from engine.patching import SweepRequest, run_sweep

        request = SweepRequest(self.prompt_pairs(), kind, self.widget.metric_name(),
                               self.widget.direction(),
                               max_tokens_per_chunk=self.max_tokens_per_chunk)
        self.widget.show_message("")
        self.widget.set_busy(True)
        self.widget.set_progress(0.0, "Starting…")
        self.controller.submit(self.channel, run_sweep, request,
                               on_result=self._show, on_partial=self.widget.set_sweep_result,
                               on_error=self._on_error, on_cancel=self.widget.set_cancelled)

    def estimate(self, kind: str) -> None:
        if self.controller.model_info is None:
            self.widget.show_message(self.no_model_text())
            return
        from engine.attribution_patching import AttributionPatchRequest, run_attribution_patching
        from engine.patching import SWEEPS

        if kind not in SWEEPS:
            self.widget.show_message("Attribution patching estimates single sweeps (not the "
                                     "combined block sweep); pick one kind.")
            return
        request = AttributionPatchRequest(self.prompt_pairs(), kind, self.widget.metric_name())
        self.widget.show_message("")
        self.controller.submit(self.channel + ".estimate", run_attribution_patching, request,
                               on_result=self.widget.set_estimate, on_error=self._on_error,
                               grad=True)

    def path_patch(self, senders, component: str) -> None:
        if self.controller.model_info is None:
            self.widget.show_message(self.no_model_text())
            return
        from engine.path_patching import PathPatchRequest, run_path_patching

        request = PathPatchRequest(self.prompt_pairs(), tuple(tuple(s) for s in senders),
                                   component, self.widget.metric_name())
        self.widget.show_message("")
        self.controller.submit(self.channel + ".path", run_path_patching, request,
                               on_result=self.widget.set_path_result, on_error=self._on_error)

    def verify(self, kind: str, cells) -> None:
        if self.controller.model_info is None:
            self.widget.show_message(self.no_model_text())
            return
        from engine.patching import SweepRequest, run_sweep

        request = SweepRequest(self.prompt_pairs(), kind, self.widget.metric_name(), "denoise",
                               max_tokens_per_chunk=self.max_tokens_per_chunk,
                               only=tuple(int(c) for c in cells))
        self.widget.set_busy(True)
        self.controller.submit(self.channel, run_sweep, request, on_result=self._show,
                               on_partial=self.widget.set_sweep_result, on_error=self._on_error,
                               on_cancel=self.widget.set_cancelled)

    def session_results(self) -> dict:
        w = self.widget
        return {"exact": w.exact, "estimate": w.estimate, "path": w.path_result,
                "plan": w.plan.result, "view": w.view_combo.currentData() if w.result else None}

    def restore_results(self, results: dict) -> None:
        from app.session_results import expect

        w = self.widget
        exact = expect(results, "exact", "SweepResult")
        estimate = expect(results, "estimate", "SweepResult")
        path = expect(results, "path", "PathPatchResult")
        plan = expect(results, "plan", "PlanResult")
        if exact is not None:
            self._show(exact)
        if estimate is not None:
            w.set_estimate(estimate)
        if path is not None:
            w.set_path_result(path)
        if plan is not None:
            w.plan.set_result(plan)
        view = results.get("view")
        index = w.view_combo.findData(view) if isinstance(view, str) else -1
        if index >= 0:
            w.view_combo.setCurrentIndex(index)

    def recompute(self, results: dict, prompt: str) -> None:
        """Run again the sweeps, estimate, path patching and plan a session saved (on another
        model), with the session's pairs, metric and plan."""
        from app.session_results import int_pairs
        from engine.patching import SweepResult
        from engine.path_patching import PathPatchResult

        w = self.widget
        exact, estimate = results.get("exact"), results.get("estimate")
        if isinstance(exact, SweepResult) and isinstance(exact.kind, str):
            index = w.sweep_combo.findData(exact.kind)
            if index >= 0:
                w.sweep_combo.setCurrentIndex(index)
            self.run_sweep(exact.kind)
        if isinstance(estimate, SweepResult) and isinstance(estimate.kind, str):
            self.estimate(estimate.kind)
        path = results.get("path")
        if isinstance(path, PathPatchResult) and isinstance(path.component, str):
            senders = int_pairs(path.senders)
            if senders:
                self.path_patch(senders, path.component)
        if results.get("plan") is not None and w.plan.items:
            self.run_plan(w.plan.items)

    def _show(self, result) -> None:
        self.widget.set_sweep_result(result)
        self.widget.set_busy(False)
        self.widget.set_progress(1.0, "done")

    def _progress(self, channel: str, fraction: float, message: str) -> None:
        if channel == self.channel:
            self.widget.set_progress(fraction, message)

    def _on_error(self, info) -> bool:
        self.widget.set_busy(False)
        self.widget.set_progress(0.0, "failed")
        if info.kind in ("input", "too_long"):
            self.widget.show_message(f"{info.message} {info.hint}".strip())
            return True
        return False

    def _select(self, index: dict) -> None:
        selection = self.controller.selection
        if "head" in index:
            selection.set_head(int(index.get("layer", 0)), int(index["head"]))
        elif "layer" in index:
            selection.set_head(int(index["layer"]), -1)
        if "pos" in index:
            selection.set_position(int(index["pos"]))

    # -- model -----------------------------------------------------------------------------------
    def on_model_loaded(self, info) -> None:
        self.widget.clear_results(f"{info.name} is loaded. Run a sweep to see which components "
                                  "carry the answer.")
        from engine.patching import available_sweeps

        caps = info.caps
        self.widget.palette.set_model(info.n_layers, info.n_heads, info.d_mlp,
                                      info.n_key_value_heads, caps.missing)
        self.widget.set_available(available_sweeps(caps), caps)
        self.check()
        self.validate_plan(info)

    def on_no_model(self, text: str) -> None:
        self.widget.clear_results(text)

    # -- the patch plan --------------------------------------------------------------------------
    @staticmethod
    def plan_items(items: list[dict]) -> tuple:
        from engine.patch_plan import PlanItem

        return tuple(PlanItem(d["component"], int(d.get("layer", 0)), int(d.get("index", -1)),
                              tuple(int(p) for p in d.get("positions", [])),
                              d.get("mode", "denoise"), str(d.get("sae", "")))
                     for d in items)

    def validate_plan(self, info) -> list[str]:
        """After a model switch: say which items no longer fit (they stay, marked red)."""
        from engine.patch_plan import validate_plan

        view = self.widget.plan
        items = self.plan_items(view.items)
        problems = validate_plan(items, info)
        bad = [i for i, item in enumerate(items) if validate_plan([item], info)]
        view.mark_invalid(bad, (" ".join(problems) + " Remove or edit them before running.")
                          if problems else "")
        return problems

    def run_plan(self, items: list[dict]) -> None:
        view = self.widget.plan
        if self.controller.model_info is None:
            view.show_message(self.no_model_text())
            return
        if not items:
            view.show_message("The patch plan is empty. Drag components from the palette (or "
                              "cells of a sweep) onto the plan.")
            return
        if self.validate_plan(self.controller.model_info):
            return
        from engine.patch_plan import PlanRequest, run_plan

        request = PlanRequest(self.prompt_pairs(), self.plan_items(items),
                              self.widget.metric_name())
        view.show_message("")
        self.controller.submit(self.channel + ".plan", run_plan, request,
                               on_result=view.set_result, on_error=self._plan_error)

    def _plan_error(self, info) -> bool:
        if info.kind in ("input", "too_long"):
            self.widget.plan.show_message(f"{info.message} {info.hint}".strip())
            return True
        return False

    def session_state(self) -> dict:
        state = {"pairs": [list(p) for p in self.widget.pairs()], "metric": self.widget.metric_name(),
                 "direction": self.widget.direction()}
        state["plan"] = [dict(d) for d in self.widget.plan.items]
        return state

    def restore_session_state(self, state: dict) -> None:
        pairs = state.get("pairs") or []
        for row, pair in enumerate(pairs):
            if isinstance(pair, list) and len(pair) == 4:
                self.widget.set_pair(row, *[str(x) for x in pair])
        plan = state.get("plan")
        if isinstance(plan, list):
            self.widget.plan.set_items([d for d in plan if isinstance(d, dict)
                                        and isinstance(d.get("component"), str)])

