"""One feature's dashboard: top-activating contexts, activation histogram, logit effects, and
its activations on the current prompt (a token strip).

A pure view: ``show_feature`` takes plain arrays (the dashboards of every feature, the logit
effects, the vocabulary's token strings and the prompt's feature activations) and draws one
feature. Contexts highlight each token by the feature's activation on it (white to orange), the
top-activating token framed, as Neuronpedia does.
"""

from __future__ import annotations

from html import escape

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QHBoxLayout,
    QLabel,
    QPushButton,
    QSplitter,
    QTextBrowser,
    QVBoxLayout,
    QWidget,
)

from widgets.token_strip import TokenStrip, visible

ORANGE = (255, 140, 0)


class _LogAxis(pg.AxisItem):
    """Ticks at powers of ten for a log10 x axis."""

    def tickStrings(self, values, scale, spacing):  # noqa: N802 (pyqtgraph API)
        return [f"{10 ** v:.3g}" for v in values]


def _shade(a: float) -> str:
    a = min(max(a, 0.0), 1.0)
    r, g, b = (int(255 + (c - 255) * a) for c in ORANGE)
    return f"#{r:02x}{g:02x}{b:02x}"


def context_html(tokens: list[str], acts: np.ndarray, center: int, scale: float) -> str:
    """A context as HTML: each token's background by its activation / ``scale``."""
    out = []
    for i, (tok, a) in enumerate(zip(tokens, acts, strict=True)):
        if tok is None:
            continue
        style = (f"background-color:{_shade(float(a) / scale if scale > 0 else 0)}; "
                 "white-space:nowrap;")
        if i == center:
            style += "text-decoration:underline; font-weight:bold; color:#5a2000;"
        title = f"{a:.3g}"
        out.append(f"<span style='{style}' title='{title}'>{escape(visible(tok))}</span>")
    return "&#8203;".join(out)  # lines break between tokens, never inside one


class FeatureDashboard(QWidget):
    sig_add_to_plan = Signal(int)
    sig_intervene = Signal(int)
    sig_position_clicked = Signal(int)

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.feature: int | None = None
        self.header = QLabel("Pick a feature from the list.")
        self.header.setObjectName("featureHeader")
        self.header.setTextFormat(Qt.TextFormat.RichText)
        self.header.setWordWrap(True)
        self.plan_button = QPushButton("Add to patch plan")
        self.plan_button.setObjectName("featureToPlan")
        self.plan_button.setToolTip("Add this feature to the activation-patching plan: patch its "
                                    "activation from the clean run into the corrupted run (the "
                                    "SAE's error term kept, so only this feature changes)")
        self.intervene_button = QPushButton("Intervene…")
        self.intervene_button.setObjectName("featureIntervene")
        self.intervene_button.setToolTip("Ablate, clamp or steer this feature on the current "
                                         "prompt")
        for b in (self.plan_button, self.intervene_button):
            b.setEnabled(False)
        self.plan_button.clicked.connect(lambda: self._emit(self.sig_add_to_plan))
        self.intervene_button.clicked.connect(lambda: self._emit(self.sig_intervene))
        self.strip = TokenStrip()
        self.strip.setObjectName("featurePromptStrip")
        self.strip.setMaximumHeight(64)
        self.strip.setToolTip("The current prompt, coloured by this feature's activation on each "
                              "token. Click a token to see every feature that fires there.")
        self.strip.sig_position_clicked.connect(self.sig_position_clicked)
        self.contexts = QTextBrowser()
        self.contexts.setObjectName("featureContexts")
        self.contexts.setOpenLinks(False)
        self.contexts.setToolTip("Top-activating contexts from the corpus: each token shaded by "
                                 "the feature's activation, the top token framed")
        self.hist = pg.PlotWidget(background="w", axisItems={"bottom": _LogAxis("bottom")})
        self.hist.setObjectName("featureHistogram")
        self.hist.setMenuEnabled(False)
        self.hist.hideButtons()
        self.hist.setMouseEnabled(x=False, y=False)
        self.hist.setLabel("bottom", "activation (log scale)")
        self.hist.setLabel("left", "tokens")
        self.hist.setTitle("Activation histogram", size="9pt")
        self.hist.setMinimumHeight(110)
        self.hist.setToolTip("How often the feature fires at each activation, over the corpus")
        self.logits = QLabel()
        self.logits.setObjectName("featureLogits")
        self.logits.setTextFormat(Qt.TextFormat.RichText)
        self.logits.setAlignment(Qt.AlignmentFlag.AlignTop | Qt.AlignmentFlag.AlignLeft)
        self.logits.setToolTip("Logit effects: what the feature's decoder direction adds to each "
                               "token's logit through the unembedding (final LayerNorm scale "
                               "left out)")
        head = QHBoxLayout()
        head.addWidget(self.header, 1)
        head.addWidget(self.intervene_button)
        head.addWidget(self.plan_button)
        right = QWidget()
        rl = QVBoxLayout(right)
        rl.setContentsMargins(0, 0, 0, 0)
        rl.addWidget(self.hist, 3)
        rl.addWidget(self.logits, 2)
        split = QSplitter(Qt.Orientation.Horizontal)
        split.addWidget(self.contexts)
        split.addWidget(right)
        split.setStretchFactor(0, 3)
        split.setStretchFactor(1, 2)
        split.setChildrenCollapsible(False)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.addLayout(head)
        lay.addWidget(self.strip)
        lay.addWidget(split, 1)
        self._prompt = None
        self.strip.hide()

    def _emit(self, signal) -> None:
        if self.feature is not None:
            signal.emit(self.feature)

    # -- content ------------------------------------------------------------------------------
    def clear(self, message: str = "Pick a feature from the list.") -> None:
        self.feature = None
        self.header.setText(escape(message))
        self.contexts.clear()
        self.hist.clear()
        self.logits.clear()
        self.strip.set_values(None)
        for b in (self.plan_button, self.intervene_button):
            b.setEnabled(False)

    def set_prompt(self, str_tokens: list[str] | None) -> None:
        """The current prompt's tokens (None: no prompt run yet; the strip is hidden)."""
        self._prompt = str_tokens
        self.strip.set_tokens(list(str_tokens or []))
        self.strip.setVisible(bool(str_tokens))

    def show_feature(self, feature: int, *, vocab, logits, stats=None, prompt_acts=None,
                     n_tokens_label: str = "") -> None:
        """Draw ``feature``. ``logits``: top/bottom ids and values per feature; ``stats``:
        the dashboards (None until built); ``prompt_acts``: [pos, F] on the current prompt."""
        self.feature = feature
        for b in (self.plan_button, self.intervene_button):
            b.setEnabled(True)
        parts = [f"<b>Feature {feature}</b>"]
        if stats is not None:
            d = float(stats.density[feature])
            parts.append("never fires" if d == 0 else f"fires on {d:.3%} of tokens")
            parts.append(f"max {float(stats.max_act[feature]):.3g}")
            parts.append(f"mean when active {float(stats.mean_act[feature]):.3g}")
            if n_tokens_label:
                parts.append(escape(n_tokens_label))
        if prompt_acts is not None:
            here = prompt_acts[:, feature]
            parts.append(f"on this prompt: max {float(here.max()):.3g}" if here.max() > 0
                         else "silent on this prompt")
        self.header.setText(" · ".join(parts))
        self._show_prompt(feature, prompt_acts)
        self._show_contexts(feature, vocab, stats)
        self._show_hist(feature, stats)
        self._show_logits(feature, vocab, logits)

    def _show_prompt(self, feature: int, prompt_acts) -> None:
        if prompt_acts is None or self._prompt is None or len(self._prompt) != len(prompt_acts):
            self.strip.set_values(None)
            return
        acts = prompt_acts[:, feature]
        self.strip.set_values(acts, vmax=max(float(acts.max()), 1e-6), rgb=ORANGE)
        for i in range(self.strip.count()):
            self.strip.item(i).setToolTip(f"pos {i}: {self._prompt[i]!r} · feature {feature} = "
                                          f"{float(acts[i]):.3g}")

    def _show_contexts(self, feature: int, vocab, stats) -> None:
        if stats is None:
            self.contexts.setHtml("<p style='color:#666'>Top-activating contexts appear once the "
                                  "dashboards are built (button above the list).</p>")
            return
        acts = stats.top_acts[feature]
        scale = float(stats.max_act[feature]) or 1.0
        rows = []
        for k in range(len(acts)):
            if acts[k] <= 0:
                break
            ids = stats.window_tokens[feature, k]
            toks = [vocab[int(t)] if t >= 0 else None for t in ids]
            html = context_html(toks, stats.window_acts[feature, k], stats.window_center, scale)
            rows.append(f"<tr><td style='color:#a04000; padding-right:6px' align='right'>"
                        f"{float(acts[k]):.2f}</td><td>{html}</td></tr>")
        if not rows:
            self.contexts.setHtml("<p style='color:#666'>This feature never fires on the "
                                  "corpus.</p>")
            return
        self.contexts.setHtml("<table cellspacing='2'>" + "".join(rows) + "</table>")

    def _show_hist(self, feature: int, stats) -> None:
        self.hist.clear()
        if stats is None:
            return
        counts = stats.hist[feature].astype(float)
        if counts.sum() == 0:
            return
        edges = np.asarray(stats.hist_edges)
        nz = np.nonzero(counts)[0]
        lo, hi = max(0, nz[0] - 1), min(len(counts), nz[-1] + 2)
        width = float(edges[1] - edges[0])
        bars = pg.BarGraphItem(x=edges[lo:hi] + width / 2, height=counts[lo:hi], width=width,
                               brush=pg.mkBrush(*ORANGE), pen=pg.mkPen(160, 80, 0))
        self.hist.addItem(bars)
        self.hist.setXRange(float(edges[lo]), float(edges[hi]), padding=0.02)

    def _show_logits(self, feature: int, vocab, logits) -> None:
        def rows(ids, values, colour):
            return "".join(f"<tr><td><code>{escape(visible(vocab[int(i)]))}</code></td>"
                           f"<td align='right' style='color:{colour}'>{float(v):+.2f}</td></tr>"
                           for i, v in zip(ids, values, strict=True))

        n = 6
        self.logits.setText(
            "<table><tr><th align='left'>promotes</th><th></th><th width='12'></th>"
            "<th align='left'>suppresses</th><th></th></tr><tr><td colspan='2' valign='top'>"
            f"<table>{rows(logits.top_ids[feature][:n], logits.top_values[feature][:n], '#1a7f1a')}"
            "</table></td><td></td><td colspan='2' valign='top'><table>"
            f"{rows(logits.bottom_ids[feature][:n], logits.bottom_values[feature][:n], '#b00020')}"
            "</table></td></tr></table>")
