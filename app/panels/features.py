"""Binding for the Features panel: SAE loading, dashboards, prompt features, attribution,
interventions, training, and features sent to the patch plan.

Every computation is a job on its own channel (``features.*``), so a newer request replaces an
older one of the same kind and results of a previous model or SAE are never shown as current.
With the bundled model organism, its bundled SAE loads by itself. Dashboards are cached on disk
(the platform's cache folder), so reopening an SAE shows them at once. Like every binding it
imports the engine inside its methods: the window is shown before torch is imported.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING

import numpy as np
from PySide6.QtCore import QSettings, QStandardPaths, Qt
from PySide6.QtWidgets import QFileDialog

from app.panels.base import PanelBinding
from app.panels.features_training import TrainingRunner
from app.session_schema import MAX_PROMPT, Int, List, Num, Obj, Opt, Str
from engine.model_sources import BUNDLED_NAME, BUNDLED_SAE_DIR
from widgets.features_panel import FeaturesPanel

if TYPE_CHECKING:
    from engine.text_source import TextSource

RECENT_KEY = "features/recentSaes"
MAX_RECENT = 8


class FeaturesBinding(PanelBinding):
    title = "Features (SAE)"
    object_name = "featuresDock"
    state_schema = Obj({
        "sae": Opt(Str(4096)), "feature": Opt(Int(0, 10**8)), "tab": Int(),
        "train": Obj({"hook_name": Str(200), "architecture": Opt(Str(64)),
                      "expansion": Num(), "l1_coefficient": Num(), "k": Int(),
                      "n_tokens": Int(), "batch_size": Int(), "lr": Num(),
                      "context_size": Int(), "source_kind": Opt(Str(64)),
                      "source_path": Str(4096), "out_folder": Str(4096)}),
        "attribution": Obj({"answer": Str(1000), "counterfactual": Str(1000),
                            "position": Int()}),
        "interventions": List(Obj({"feature": Int(0, 10**8), "mode": Str(16), "value": Num(),
                                   "positions": List(Int(-(10**6), 10**6), 4096)}), 64),
        "intervention_target": List(Str(1000), 2, length=2),
        "dashboards": Obj({"source_kind": Opt(Str(64)), "n_tokens": Int(0, 10**12)}),
        "intervention_result": Obj({
            "prompt": Str(MAX_PROMPT), "target_label": Str(1000),
            **{k: List(Str(1000), 100) for k in ("before_tokens", "after_tokens")},
            **{k: List(Opt(Num()), 100) for k in ("before_probs", "after_probs")},
            **{k: List(Str(1000), 10_000) for k in ("labels", "str_tokens")},
            "kl": List(Opt(Num()), 10_000),
            **{k: Opt(Num()) for k in ("target_before", "target_after", "loss_before",
                                       "loss_after")}}),
    })
    area = Qt.DockWidgetArea.BottomDockWidgetArea
    tab_with = "attributionDock"
    tooltip = "Sparse-autoencoder features: browse, attribute, intervene, train"

    def create_widget(self):
        panel = FeaturesPanel()
        self.folder = ""  # the loaded SAE
        self.pending: dict | None = None  # session state waiting for the model / SAE
        self._prompt_truncate = False
        sel = self.controller.selection
        panel.sig_choose_sae.connect(self.choose_sae)
        panel.sig_build_dashboards.connect(self.build_dashboards)
        panel.sig_position_selected.connect(sel.set_position)
        panel.sig_add_to_plan.connect(self.add_to_plan)
        panel.attribution.sig_run.connect(self.attribute)
        panel.intervene.sig_run.connect(self.intervene)
        panel.train.sig_load.connect(self.load_sae)
        sel.position_changed.connect(panel.show_position)
        self.controller.job_progress.connect(self._progress)
        self.widget = panel  # the training runner reads it
        self.training = TrainingRunner(self)
        self._refresh_choices()
        return panel

    # -- SAE choice -----------------------------------------------------------------------------
    def is_bundled_model(self) -> bool:
        info = self.controller.model_info
        return info is not None and info.source == "bundled" and info.name == BUNDLED_NAME

    def _recent(self) -> list[str]:
        value = QSettings().value(RECENT_KEY, [])
        if isinstance(value, str):
            value = [value]
        return [v for v in (value or []) if isinstance(v, str) and v][:MAX_RECENT]

    def remember_sae(self, folder: str) -> None:
        folder = str(Path(folder))
        recent = [folder] + [f for f in self._recent() if f != folder]
        QSettings().setValue(RECENT_KEY, recent[:MAX_RECENT])
        self._refresh_choices()

    def _refresh_choices(self) -> None:
        choices = []
        if self.is_bundled_model() and (BUNDLED_SAE_DIR / "cfg.json").is_file():
            choices.append(("bundled SAE (residual stream)", str(BUNDLED_SAE_DIR)))
        for f in self._recent():
            if Path(f) != BUNDLED_SAE_DIR and Path(f, "cfg.json").is_file():
                choices.append((Path(f).name, f))
        self.widget.set_sae_choices(choices, self.folder)

    def choose_sae(self, folder: str) -> None:
        if not folder:
            folder = QFileDialog.getExistingDirectory(self.widget, "Open an SAE folder "
                                                      "(cfg.json + sae_weights.safetensors)")
            if not folder:
                self._refresh_choices()
                return
        self.load_sae(folder)

    def load_sae(self, folder: str) -> None:
        from engine.sae_prompt import SAELoadRequest, run_load_sae

        if self.controller.model_info is None:
            self.widget.show_message("Load a model first (Model > Load model…).")
            return
        self.widget.show_message("Loading the SAE…", error=False)
        self.controller.submit("features.sae", run_load_sae, SAELoadRequest(folder),
                               on_result=self._sae_loaded, on_error=self._sae_failed)

    def _sae_loaded(self, info) -> None:
        self.folder = info.folder
        self.widget.show_message("")
        self.widget.set_sae(info)
        if Path(info.folder) != BUNDLED_SAE_DIR.resolve():
            self.remember_sae(info.folder)
        self._refresh_choices()
        pending = self.pending or {}
        self.pending = None
        restored = pending.get("intervention_result")
        if restored is not None and pending.get("sae") and \
                Path(pending["sae"]).resolve() == Path(info.folder):
            self.widget.intervene.set_result(restored)  # saved with the session, same SAE
        dash = pending.get("dashboards") if isinstance(pending.get("dashboards"), dict) else None
        self.build_dashboards(dash or self.widget.dashboard_settings(), cache_only=dash is None)
        if self.controller.selection.prompt.strip():
            self.request_prompt_features()
        feature = pending.get("feature")
        if isinstance(feature, int) and not isinstance(feature, bool):
            self.widget.select_feature(feature)

    def _sae_failed(self, info) -> bool:
        self.widget.show_message(f"{info.message} {info.hint}".strip())
        self._refresh_choices()
        return info.kind in ("input", "model", "too_long")

    # -- dashboards -----------------------------------------------------------------------------
    def cache_dir(self) -> str:
        base = QStandardPaths.writableLocation(QStandardPaths.StandardLocation.CacheLocation)
        return str(Path(base) / "sae-dashboards")

    def dashboard_source(self, settings: dict, quiet: bool = False) -> TextSource | None:
        """The corpus for dashboards, or None (saying why unless ``quiet``)."""
        from engine.text_source import TextSource

        why = ""
        if settings.get("source_kind") == "file":
            path = self.widget.train.source_path.text().strip()
            if path:
                return TextSource("file", path)
            why = "choose a text file in the Train tab first."
        elif self.is_bundled_model():
            return TextSource("bundled")
        else:
            why = "the bundled corpus sample is the organism's text; for this model use a text " \
                  "file (Train tab)."
        self.widget.set_dash_status(("Not built yet: " if quiet else "Cannot build: ") + why)
        return None

    def build_dashboards(self, settings: dict, cache_only: bool = False) -> None:
        from engine.sae_features import DashboardRequest, run_dashboards

        if not self.folder:
            return
        source = self.dashboard_source(settings, quiet=cache_only)
        if source is None:
            return
        n_tokens = settings.get("n_tokens", 1_000_000)
        n_tokens = int(n_tokens) if isinstance(n_tokens, int) else 1_000_000
        context = min(128, int(self.controller.model_info.n_ctx))
        request = DashboardRequest(self.folder, source, max(1000, min(n_tokens, 10**8)),
                                   context_size=context, cache_dir=self.cache_dir(),
                                   cache_only=cache_only)
        folder = self.folder
        self.widget.set_dash_status("Looking for cached dashboards…" if cache_only else
                                    "Building dashboards…")
        self.controller.submit("features.dash", run_dashboards, request,
                               on_result=lambda r: self._stats(folder, r),
                               on_error=self._dash_failed,
                               on_cancel=lambda: self.widget.set_dash_status(
                                   "Cancelled; click Build dashboards to start again."))

    def _stats(self, folder: str, stats) -> None:
        if folder != self.folder:
            return
        if stats is None:
            self.widget.set_dash_status("Not built yet: click Build dashboards (one pass over "
                                        "the corpus, then cached).")
            return
        self.widget.set_stats(stats)

    def _dash_failed(self, info) -> bool:
        self.widget.set_dash_status(f"{info.message} {info.hint}".strip())
        return info.kind in ("input", "too_long")

    def _progress(self, channel: str, fraction: float, message: str) -> None:
        if channel == "features.dash":
            self.widget.set_dash_status(f"{message} ({fraction:.0%})")

    # -- the prompt -----------------------------------------------------------------------------
    def on_prompt_run(self, prompt: str, truncate: bool) -> None:
        """A new prompt: its features, and attribution / interventions shown again for it (a
        result for the previous prompt is never left on screen as current)."""
        self._prompt_truncate = truncate
        p = self.widget
        if p.prompt_features is not None and p.prompt_features.prompt != prompt:
            p.set_prompt_features(None)  # never the previous prompt's activations as current
        self.request_prompt_features()
        if p.attribution.result is not None and p.attribution.answer_edit.text():
            p.attribution.request_run()
        else:
            p.attribution.clear()
        if p.intervene.result is not None and p.intervene.result.prompt != prompt:
            if p.intervene.table.rowCount():
                p.intervene.request_run()
            else:
                p.intervene.clear_result()

    def request_prompt_features(self) -> None:
        from engine.sae_prompt import PromptFeaturesRequest, run_prompt_features

        prompt = self.controller.selection.prompt
        if not self.folder or not prompt.strip():
            return
        folder = self.folder
        self.controller.submit("features.prompt", run_prompt_features,
                               PromptFeaturesRequest(prompt, folder,
                                                     truncate=self._prompt_truncate),
                               on_result=lambda r: self._prompt_features(folder, r),
                               on_error=lambda info: info.kind in ("input", "too_long"))

    def _prompt_features(self, folder: str, pf) -> None:
        if folder == self.folder:
            self.widget.set_prompt_features(pf)
            self.widget.show_position(self.controller.selection.position)

    # -- attribution and interventions ----------------------------------------------------------
    def attribute(self, answer: str, counterfactual: str, position: int) -> None:
        from engine.sae_attribution import FeatureAttributionRequest, run_feature_attribution
        from engine.targets import Target

        view = self.widget.attribution
        prompt = self.controller.selection.prompt
        if not self.folder:
            view.show_message("Load an SAE first.")
            return
        if not prompt.strip():
            view.show_message("Run a prompt first.")
            return
        if not answer:
            view.show_message("The answer is empty: type a token, e.g. ' Paris' with its "
                              "leading space.")
            return
        request = FeatureAttributionRequest(prompt, self.folder,
                                            Target(answer, counterfactual, position),
                                            truncate=self._prompt_truncate)
        self.controller.submit("features.attr", run_feature_attribution, request,
                               on_result=view.set_result,
                               on_error=lambda info: self._view_error(view, info))

    def intervene(self, edits: list[dict], answer: str, counterfactual: str) -> None:
        from engine.sae_prompt import InterventionRequest, run_intervention
        from engine.sae_splice import FeatureEdit

        view = self.widget.intervene
        prompt = self.controller.selection.prompt
        if not self.folder:
            view.show_message("Load an SAE first.")
            return
        if not prompt.strip():
            view.show_message("Run a prompt first.")
            return
        request = InterventionRequest(
            prompt, self.folder,
            tuple(FeatureEdit(int(e["feature"]), e["mode"], float(e["value"]),
                              tuple(int(p) for p in e["positions"])) for e in edits),
            answer=answer, counterfactual=counterfactual if answer else "",
            truncate=self._prompt_truncate)
        self.controller.submit("features.intervene", run_intervention, request,
                               on_result=view.set_result,
                               on_error=lambda info: self._view_error(view, info))

    @staticmethod
    def _view_error(view, info) -> bool:
        if info.kind in ("input", "too_long"):
            view.show_message(f"{info.message} {info.hint}".strip())
            return True
        return False

    def add_to_plan(self, features: list[int]) -> None:
        """Put features on the activation-patching plan (denoise, every position)."""
        if not self.folder or self.widget.info is None:
            return
        layer = int(self.widget.info.hook_name.split(".")[1])
        items = [{"component": "feature", "layer": layer, "index": int(f), "positions": [],
                  "sae": self.folder, "mode": "denoise"} for f in features]
        for binding in getattr(self.window, "bindings", []):
            if binding.object_name == "patchingDock":
                binding.widget.plan.add_items(items)
                dock = self.window.docks.get("patchingDock")
                if dock is not None:
                    dock.raise_()
                self.widget.show_message(
                    f"Added {', '.join(f'F{f}' for f in features)} to the patch plan "
                    "(Activation patching panel).", error=False)
                return
        self.widget.show_message("The activation-patching panel is not open.")

    # -- model ----------------------------------------------------------------------------------
    def on_model_loaded(self, info) -> None:
        self.folder = ""
        self.widget.set_sae(None)
        self.widget.show_message("")
        self.training.on_model_loaded(info)
        combo = self.widget.corpus_combo
        combo.setCurrentIndex(combo.findData("bundled" if self.is_bundled_model() else "file"))
        self._refresh_choices()
        pending_sae = (self.pending or {}).get("sae")
        if isinstance(pending_sae, str) and pending_sae:
            self.load_sae(pending_sae)
        elif self.is_bundled_model() and (BUNDLED_SAE_DIR / "cfg.json").is_file():
            self.load_sae(str(BUNDLED_SAE_DIR))

    # -- session --------------------------------------------------------------------------------
    def session_state(self) -> dict:
        p = self.widget
        state = {"sae": self.folder, "feature": p.current_feature(), "tab": p.tabs.currentIndex(),
                 "train": p.train.settings(),
                 "attribution": {"answer": p.attribution.answer_edit.text(),
                                 "counterfactual": p.attribution.cf_edit.text(),
                                 "position": p.attribution.position_spin.value()},
                 "interventions": p.intervene.edits() or [],
                 "intervention_target": [p.intervene.answer_edit.text(),
                                         p.intervene.cf_edit.text()]}
        if p.stats is not None:
            state["dashboards"] = dict(p.dashboard_settings(), n_tokens=int(p.stats.n_tokens))
        r = p.intervene.result
        if r is not None:
            state["intervention_result"] = {
                "prompt": r.prompt, "labels": list(r.labels), "str_tokens": list(r.str_tokens),
                "before_tokens": list(r.before_tokens),
                "before_probs": [float(x) for x in r.before_probs],
                "after_tokens": list(r.after_tokens),
                "after_probs": [float(x) for x in r.after_probs],
                "kl": [float(x) for x in r.kl], "target_label": r.target_label,
                "target_before": _num(r.target_before), "target_after": _num(r.target_after),
                "loss_before": _num(r.loss_before), "loss_after": _num(r.loss_after)}
        return state

    def restore_session_state(self, state: dict) -> None:
        """Settings now; the SAE, its dashboards and the feature once the model is loaded."""
        if not isinstance(state, dict):
            return
        p = self.widget
        if isinstance(state.get("train"), dict):
            p.train.set_settings(state["train"])
        attr = state.get("attribution")
        if isinstance(attr, dict):
            p.attribution.answer_edit.setText(str(attr.get("answer", ""))[:200])
            p.attribution.cf_edit.setText(str(attr.get("counterfactual", ""))[:200])
            pos = attr.get("position", -1)
            p.attribution.position_spin.setValue(pos if isinstance(pos, int) else -1)
        edits = state.get("interventions")
        if isinstance(edits, list):
            p.intervene.set_edits([e for e in edits[:64] if _edit_ok(e)])
        target = state.get("intervention_target")
        if isinstance(target, list) and len(target) == 2:
            p.intervene.answer_edit.setText(str(target[0])[:200])
            p.intervene.cf_edit.setText(str(target[1])[:200])
        tab = state.get("tab")
        if isinstance(tab, int):
            p.tabs.setCurrentIndex(max(0, min(p.tabs.count() - 1, tab)))
        result = _intervention_result(state.get("intervention_result"))
        if result is not None:
            p.intervene.set_result(result)
        sae = state.get("sae")
        self.pending = {"sae": sae if isinstance(sae, str) else "",
                        "feature": state.get("feature"), "intervention_result": result,
                        "dashboards": state.get("dashboards")
                        if isinstance(state.get("dashboards"), dict) else None}
        if self.pending["sae"] and self.controller.model_info is not None \
                and not self.controller.busy:
            self.load_sae(self.pending["sae"])


def _num(x: float):
    return float(x) if np.isfinite(x) else None


def _edit_ok(e) -> bool:
    return (isinstance(e, dict) and isinstance(e.get("feature"), int)
            and e.get("mode") in ("ablate", "clamp", "steer")
            and isinstance(e.get("value", 0.0), (int, float))
            and isinstance(e.get("positions", []), list)
            and all(isinstance(q, int) for q in e.get("positions", [])))


def _intervention_result(d) -> SimpleNamespace | None:
    """A saved intervention result, checked field by field (sessions are hostile data)."""
    if not isinstance(d, dict):
        return None
    try:
        k = len(d["before_tokens"])
        if not (k == len(d["after_tokens"]) == len(d["before_probs"]) == len(d["after_probs"])
                and len(d["kl"]) == len(d["str_tokens"]) > 0 and k <= 100):
            return None

        def num(x):
            return float("nan") if x is None else float(x)

        return SimpleNamespace(
            prompt=str(d.get("prompt", "")), labels=tuple(str(s) for s in d["labels"]),
            str_tokens=tuple(str(s) for s in d["str_tokens"]),
            before_tokens=tuple(str(s) for s in d["before_tokens"]),
            before_probs=np.array(d["before_probs"], dtype=np.float32),
            after_tokens=tuple(str(s) for s in d["after_tokens"]),
            after_probs=np.array(d["after_probs"], dtype=np.float32),
            kl=np.array(d["kl"], dtype=np.float32), target_label=str(d.get("target_label", "")),
            target_before=num(d.get("target_before")), target_after=num(d.get("target_after")),
            loss_before=num(d.get("loss_before")), loss_after=num(d.get("loss_after")))
    except (KeyError, TypeError, ValueError):
        return None
