"""The Features panel: an SAE's features, browsed, attributed, edited and trained.

Assembles small views: the SAE picker (top), and tabs *Browse* (feature list with search, the
features firing at the selected token, and the selected feature's dashboard), *Attribution*
(``features_attribution``), *Intervene* (``features_intervene``) and *Train*
(``features_train``). A pure view: the binding (``app.panels.features``) runs the jobs and
passes results in; everything here is drawn from plain arrays and strings.
"""

from __future__ import annotations

from html import escape

import numpy as np
from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QComboBox,
    QHBoxLayout,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QPushButton,
    QSpinBox,
    QSplitter,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from widgets.features_attribution import FeatureAttributionView
from widgets.features_dashboard import FeatureDashboard
from widgets.features_intervene import FeatureInterventionView
from widgets.features_list import FeatureList, promotes_text
from widgets.features_train import FeatureTrainView
from widgets.token_strip import visible

ROLE = Qt.ItemDataRole.UserRole


class FeaturesPanel(QWidget):
    sig_choose_sae = Signal(str)  # a folder; "" asks for one
    sig_build_dashboards = Signal(object)  # {"source_kind", "source_path", "n_tokens"}
    sig_position_selected = Signal(int)
    sig_add_to_plan = Signal(object)  # list of feature indices

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.setObjectName("FeaturesPanel")
        self.info = None  # SAEInfo
        self.stats = None  # FeatureStats
        self.prompt_features = None  # PromptFeatures
        self.position = -1
        self._build_top()
        self.list = FeatureList()
        self.dashboard = FeatureDashboard()
        self.attribution = FeatureAttributionView()
        self.intervene = FeatureInterventionView()
        self.train = FeatureTrainView()
        self.tabs = QTabWidget()
        self.tabs.setObjectName("featuresTabs")
        self.tabs.addTab(self._browse_tab(), "Browse")
        self.tabs.addTab(self.attribution, "Attribution")
        self.tabs.addTab(self.intervene, "Intervene")
        self.tabs.addTab(self.train, "Train")
        self.tabs.setTabToolTip(0, "Every feature, its dashboard, and the features at a token")
        self.tabs.setTabToolTip(1, "Each feature's direct effect on an answer")
        self.tabs.setTabToolTip(2, "Ablate, clamp or steer features and see predictions change")
        self.tabs.setTabToolTip(3, "Train a new SAE on this model")
        lay = QVBoxLayout(self)
        lay.setContentsMargins(4, 4, 4, 4)
        lay.addLayout(self._top)
        lay.addWidget(self.message)
        lay.addWidget(self.tabs, 1)
        self.list.sig_feature_selected.connect(self._feature_selected)
        self.dashboard.sig_add_to_plan.connect(self._add_to_plan)
        self.dashboard.sig_intervene.connect(self._intervene_on)
        self.dashboard.sig_position_clicked.connect(self.sig_position_selected)
        self.attribution.sig_feature_clicked.connect(self.select_feature)
        self.intervene.sig_add_requested.connect(
            lambda: self.intervene.add_edit(self.current_feature() or 0))
        self.at_token.itemClicked.connect(lambda it: self.select_feature(int(it.data(ROLE))))
        self.set_sae(None)

    # -- construction -------------------------------------------------------------------------
    def _build_top(self) -> None:
        self.sae_combo = QComboBox()
        self.sae_combo.setObjectName("saeCombo")
        self.sae_combo.setMinimumContentsLength(18)
        self.sae_combo.setSizeAdjustPolicy(
            QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        self.sae_combo.setToolTip("The sparse autoencoder whose features are shown")
        self.sae_combo.activated.connect(
            lambda i: self.sig_choose_sae.emit(self.sae_combo.itemData(i) or ""))
        self.open_button = QPushButton("Open SAE folder…")
        self.open_button.setObjectName("saeOpen")
        self.open_button.setToolTip("Load an SAE saved in SAELens's layout (cfg.json + "
                                    "sae_weights.safetensors), e.g. a folder of a published "
                                    "release")
        self.open_button.clicked.connect(lambda: self.sig_choose_sae.emit(""))
        self.description = QLabel()
        self.description.setObjectName("saeDescription")
        self.description.setStyleSheet("color: #444;")
        self._top = QHBoxLayout()
        self._top.addWidget(QLabel("SAE"))
        self._top.addWidget(self.sae_combo)
        self._top.addWidget(self.open_button)
        self._top.addWidget(self.description, 1)
        self.message = QLabel()
        self.message.setObjectName("featuresMessage")
        self.message.setWordWrap(True)
        self.message.hide()

    def _browse_tab(self) -> QWidget:
        self.corpus_combo = QComboBox()
        self.corpus_combo.setObjectName("dashCorpus")
        self.corpus_combo.addItem("bundled corpus sample", "bundled")
        self.corpus_combo.addItem("the training text file", "file")
        self.corpus_combo.setToolTip("The text the top-activating contexts come from")
        self.dash_tokens = QSpinBox()
        self.dash_tokens.setObjectName("dashTokens")
        self.dash_tokens.setRange(1_000, 100_000_000)
        self.dash_tokens.setSingleStep(100_000)
        self.dash_tokens.setValue(1_000_000)
        self.dash_tokens.setGroupSeparatorShown(True)
        self.dash_tokens.setSuffix(" tokens")
        self.build_button = QPushButton("Build dashboards")
        self.build_button.setObjectName("dashBuild")
        self.build_button.setToolTip("One batched pass over the corpus: every feature's top "
                                     "contexts, histogram and density (cached on disk, so the "
                                     "same SAE and corpus load instantly next time)")
        self.build_button.clicked.connect(self._build_clicked)
        self.dash_status = QLabel()
        self.dash_status.setObjectName("dashStatus")
        self.dash_status.setStyleSheet("color: #555;")
        row = QHBoxLayout()
        row.addWidget(QLabel("Dashboards from"))
        row.addWidget(self.corpus_combo)
        row.addWidget(self.dash_tokens)
        row.addWidget(self.build_button)
        row.addWidget(self.dash_status, 1)
        self.at_token_label = QLabel("Features at the selected token")
        self.at_token_label.setObjectName("atTokenLabel")
        self.at_token_label.setWordWrap(True)
        self.at_token = QListWidget()
        self.at_token.setObjectName("atTokenList")
        self.at_token.setToolTip("The features firing most at the token selected in any panel; "
                                 "click one to see its dashboard")
        self.at_token.setMaximumHeight(120)
        left = QWidget()
        ll = QVBoxLayout(left)
        ll.setContentsMargins(0, 0, 0, 0)
        ll.addWidget(self.list, 1)
        ll.addWidget(self.at_token_label)
        ll.addWidget(self.at_token)
        split = QSplitter(Qt.Orientation.Horizontal)
        split.addWidget(left)
        split.addWidget(self.dashboard)
        split.setStretchFactor(0, 2)
        split.setStretchFactor(1, 5)
        split.setChildrenCollapsible(False)
        split.setSizes([330, 800])
        tab = QWidget()
        lay = QVBoxLayout(tab)
        lay.setContentsMargins(0, 2, 0, 0)
        lay.addLayout(row)
        lay.addWidget(split, 1)
        return tab

    # -- the SAE ------------------------------------------------------------------------------
    def set_sae_choices(self, choices: list[tuple[str, str]], current: str = "") -> None:
        """``choices``: (label, folder) pairs for the combo box."""
        self.sae_combo.blockSignals(True)
        self.sae_combo.clear()
        if not current or current not in [f for _, f in choices]:
            self.sae_combo.addItem("(no SAE loaded)", "")
        for label, folder in choices:
            self.sae_combo.addItem(label, folder)
            self.sae_combo.setItemData(self.sae_combo.count() - 1, folder,
                                       Qt.ItemDataRole.ToolTipRole)
        i = self.sae_combo.findData(current)
        self.sae_combo.setCurrentIndex(max(0, i))
        self.sae_combo.blockSignals(False)

    def show_message(self, text: str, error: bool = True) -> None:
        self.message.setStyleSheet("color: #b00020;" if error else "color: #333;")
        self.message.setText(text)
        self.message.setVisible(bool(text))

    def set_sae(self, info) -> None:
        """Show an SAEInfo (None: no SAE loaded)."""
        self.info, self.stats = info, None
        self.prompt_features = None
        self.attribution.clear()
        self.intervene.clear_result()
        enabled = info is not None
        for w in (self.build_button, self.attribution.run_button, self.intervene.run_button):
            w.setEnabled(enabled)
        if info is None:
            self.description.setText("No SAE loaded: open a folder, or train one (Train tab).")
            self.list.clear()
            self.dashboard.clear("No SAE loaded.")
            self.dash_status.setText("")
            self._show_at_token()
            return
        trained_on = info.cfg.get("model_name") or ""
        other = f" · trained on {trained_on}" if trained_on and trained_on != info.model_name \
            else ""
        self.description.setText(f"{info.name}: {info.description}{other}")
        self.description.setToolTip(f"{info.folder}\n{info.cfg}")
        self.intervene.set_n_features(info.d_sae)
        layer = int(info.hook_name.split(".")[1])
        self.list.set_plan_context(info.folder, layer)
        self.dash_status.setText("Not built yet: contexts and histograms need one pass over "
                                 "the corpus.")
        self._fill_list()
        self.dashboard.clear("Pick a feature from the list.")
        self.list.select(0)

    def _fill_list(self) -> None:
        info, stats = self.info, self.stats
        if info is None:
            return
        vocab = info.vocab
        promotes = [promotes_text(vocab, ids) for ids in info.logits.top_ids]
        density = max_act = contexts = None
        if stats is not None:
            density, max_act = stats.density, stats.max_act
            c = stats.window_center
            contexts = [" ".join(vocab[int(t)] for t, a in zip(stats.window_tokens[f, :, c],
                                                               stats.top_acts[f], strict=True)
                                 if a > 0 and t >= 0) for f in range(info.d_sae)]
        elif info.log_sparsity is not None:
            density = np.power(10.0, np.asarray(info.log_sparsity, dtype=np.float64))
        self.list.set_features(density, max_act, info.logits.top_values[:, 0], promotes,
                               contexts)

    def set_stats(self, stats) -> None:
        """The dashboards of every feature (a FeatureStats)."""
        self.stats = stats
        how = "loaded from the cache" if stats.from_cache else f"built in {stats.seconds:.0f} s"
        self.dash_status.setText(f"{stats.n_tokens:,} tokens of {stats.source_label}, {how}.")
        self._fill_list()
        self._refresh_dashboard()

    def set_dash_status(self, text: str) -> None:
        self.dash_status.setText(text)

    def dashboard_settings(self) -> dict:
        return {"source_kind": self.corpus_combo.currentData(),
                "n_tokens": self.dash_tokens.value()}

    def _build_clicked(self) -> None:
        self.sig_build_dashboards.emit(self.dashboard_settings())

    # -- the prompt ---------------------------------------------------------------------------
    def set_prompt_features(self, pf) -> None:
        """Feature activations on the current prompt (a PromptFeatures, or None)."""
        self.prompt_features = pf
        self.dashboard.set_prompt(list(pf.str_tokens) if pf is not None else None)
        self._refresh_dashboard()
        self._show_at_token()

    def show_position(self, position: int) -> None:
        self.position = position
        self._show_at_token()
        self.dashboard.strip.set_selected(self._resolved_position())

    def _resolved_position(self) -> int:
        pf = self.prompt_features
        if pf is None:
            return -1
        n = len(pf.str_tokens)
        return self.position % n if -n <= self.position < n else -1

    def _show_at_token(self) -> None:
        self.at_token.clear()
        pf = self.prompt_features
        p = self._resolved_position()
        if pf is None or p < 0:
            self.at_token_label.setText("Features at the selected token: run a prompt, then "
                                        "click a token in any panel.")
            return
        top = pf.top_at(p, 12)
        err = float(pf.error_norm[p]) / max(float(pf.act_norm[p]), 1e-9)
        self.at_token_label.setText(
            f"At pos {p} ({escape(visible(pf.str_tokens[p]))}): {len(top)} features shown; "
            f"the SAE leaves {err:.0%} of the activation's norm unexplained")
        vocab = self.info.vocab if self.info is not None else None
        for f, a in top:
            extra = ""
            if vocab is not None:
                extra = "  → " + promotes_text(vocab, self.info.logits.top_ids[f])
            item = QListWidgetItem(f"F{f}  {a:.3g}{extra}")
            item.setData(ROLE, f)
            self.at_token.addItem(item)

    # -- selection ----------------------------------------------------------------------------
    def select_feature(self, feature: int) -> None:
        if self.info is not None and self.list.select(feature):
            self._feature_selected(feature)

    def current_feature(self) -> int | None:
        return self.dashboard.feature

    def _feature_selected(self, feature: int) -> None:
        if self.info is None or not 0 <= feature < self.info.d_sae:
            return
        pf = self.prompt_features
        self.dashboard.show_feature(
            feature, vocab=self.info.vocab, logits=self.info.logits, stats=self.stats,
            prompt_acts=pf.acts if pf is not None else None)

    def _refresh_dashboard(self) -> None:
        if self.dashboard.feature is not None:
            self._feature_selected(self.dashboard.feature)

    def _add_to_plan(self, feature: int) -> None:
        chosen = self.list.selected_features()
        self.sig_add_to_plan.emit(chosen if feature in chosen else [feature])

    def _intervene_on(self, feature: int) -> None:
        self.intervene.add_edit(feature)
        self.tabs.setCurrentWidget(self.intervene)
