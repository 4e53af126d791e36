"""The feature list: every SAE feature with its density, max activation and logit effect.

A sortable table (click a header) behind a search box: a number finds that feature, text finds
features whose promoted tokens or top-activating tokens contain it. Rows can be dragged onto the
patch plan (the payload is a ``feature`` plan item, ``widgets.component_palette.MIME_TYPE``).
"""

from __future__ import annotations

import numpy as np
from PySide6.QtCore import QSortFilterProxyModel, Qt, Signal
from PySide6.QtGui import QStandardItem, QStandardItemModel
from PySide6.QtWidgets import (
    QAbstractItemView,
    QHeaderView,
    QLabel,
    QLineEdit,
    QTableView,
    QVBoxLayout,
    QWidget,
)

from widgets.component_palette import component_mime
from widgets.token_strip import visible

SORT_ROLE = Qt.ItemDataRole.UserRole
SEARCH_ROLE = Qt.ItemDataRole.UserRole + 1
COLUMNS = ("#", "density", "max", "logit", "promotes")
COLUMN_TIPS = (
    "The feature's index in the SAE",
    "Fraction of corpus tokens on which the feature fires (from the dashboards; before they "
    "are built, from the SAE file's own estimate when it has one)",
    "The feature's largest activation on the corpus",
    "The largest logit increase its decoder direction gives any token, through the unembedding",
    "The tokens its decoder direction promotes most",
)


class _Filter(QSortFilterProxyModel):
    def __init__(self) -> None:
        super().__init__()
        self.text = ""
        self.setSortRole(SORT_ROLE)

    def set_text(self, text: str) -> None:
        self.text = text.strip().lower()
        self.invalidateFilter()

    def filterAcceptsRow(self, row: int, parent) -> bool:  # noqa: N802 (Qt naming)
        if not self.text:
            return True
        index = self.sourceModel().index(row, 0, parent)
        if self.text.isdigit():
            return str(index.data(SORT_ROLE)) == self.text
        return self.text in (index.data(SEARCH_ROLE) or "")


class _Table(QTableView):
    """Starts a drag of the selected features as patch-plan items."""

    def __init__(self, owner: FeatureList) -> None:
        super().__init__()
        self.owner = owner

    def startDrag(self, actions) -> None:  # noqa: N802 (Qt naming)
        rows = {self.owner.proxy.mapToSource(i).row() for i in self.selectedIndexes()}
        features = sorted(int(self.owner.model.item(r, 0).data(SORT_ROLE)) for r in rows)
        mime = self.owner.plan_mime(features)
        if mime is None:
            return
        from PySide6.QtGui import QDrag

        drag = QDrag(self)
        drag.setMimeData(mime)
        drag.exec(Qt.DropAction.CopyAction)


class FeatureList(QWidget):
    sig_feature_selected = Signal(int)

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.search = QLineEdit()
        self.search.setObjectName("featureSearch")
        self.search.setPlaceholderText("Search: a feature number, or a token (e.g. Paris)")
        self.search.setClearButtonEnabled(True)
        self.search.setToolTip("A number shows that feature; text shows features whose promoted "
                               "or top-activating tokens contain it")
        self.model = QStandardItemModel(0, len(COLUMNS))
        self.model.setHorizontalHeaderLabels(list(COLUMNS))
        for c, tip in enumerate(COLUMN_TIPS):
            self.model.horizontalHeaderItem(c).setToolTip(tip)
        self.proxy = _Filter()
        self.proxy.setSourceModel(self.model)
        self.table = _Table(self)
        self.table.setObjectName("featureTable")
        self.table.setModel(self.proxy)
        self.table.setSortingEnabled(True)
        self.table.sortByColumn(0, Qt.SortOrder.AscendingOrder)  # by number until the user sorts
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.ExtendedSelection)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.setDragEnabled(True)
        self.table.setDragDropMode(QAbstractItemView.DragDropMode.DragOnly)
        self.table.verticalHeader().setVisible(False)
        self.table.verticalHeader().setDefaultSectionSize(20)
        header = self.table.horizontalHeader()
        header.setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        header.setStretchLastSection(True)
        self.table.setToolTip("Click a feature to see its dashboard; click a header to sort; drag "
                              "features onto the patch plan")
        self.count_label = QLabel()
        self.count_label.setObjectName("featureCount")
        self.count_label.setStyleSheet("color: #555;")
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.addWidget(self.search)
        lay.addWidget(self.table, 1)
        lay.addWidget(self.count_label)
        self.search.textChanged.connect(self._search)
        self.table.selectionModel().currentRowChanged.connect(self._current_changed)
        self._plan_context: tuple[str, int] | None = None

    # -- content ------------------------------------------------------------------------------
    def set_features(self, density: np.ndarray | None, max_act: np.ndarray | None,
                     logit_max: np.ndarray, promotes: list[str],
                     context_tokens: list[str] | None = None) -> None:
        """One row per feature. ``density``/``max_act`` may be None (no dashboards yet)."""
        selected = self.current_feature()
        self.table.setSortingEnabled(False)
        self.model.removeRows(0, self.model.rowCount())
        n = len(logit_max)
        rows = []
        for i in range(n):
            dens = None if density is None else float(density[i])
            mx = None if max_act is None else float(max_act[i])
            cells = [self._cell(str(i), i), self._cell(_pct(dens), -1 if dens is None else dens),
                     self._cell("" if mx is None else f"{mx:.3g}", -1 if mx is None else mx),
                     self._cell(f"{float(logit_max[i]):.2f}", float(logit_max[i])),
                     self._cell(promotes[i], promotes[i])]
            search = promotes[i] + " " + (context_tokens[i] if context_tokens else "")
            cells[0].setData(search.lower(), SEARCH_ROLE)
            rows.append(cells)
        for cells in rows:
            self.model.appendRow(cells)
        self.table.setSortingEnabled(True)
        self._update_count()
        if selected is not None and selected < n:
            self.select(selected)

    @staticmethod
    def _cell(text: str, sort_value) -> QStandardItem:
        item = QStandardItem(text)
        item.setData(sort_value, SORT_ROLE)
        if isinstance(sort_value, float) or isinstance(sort_value, int):
            item.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        return item

    def clear(self) -> None:
        self.model.removeRows(0, self.model.rowCount())
        self._update_count()

    def set_plan_context(self, sae_folder: str, layer: int) -> None:
        """What a dragged feature refers to (the SAE's folder and layer)."""
        self._plan_context = (sae_folder, layer)

    def plan_mime(self, features: list[int]):
        if not features or self._plan_context is None:
            return None
        folder, layer = self._plan_context
        return component_mime([{"component": "feature", "layer": layer, "index": f,
                                "positions": [], "sae": folder} for f in features])

    # -- selection ----------------------------------------------------------------------------
    def current_feature(self) -> int | None:
        index = self.table.currentIndex()
        if not index.isValid():
            return None
        return int(self.proxy.mapToSource(index).siblingAtColumn(0).data(SORT_ROLE))

    def selected_features(self) -> list[int]:
        rows = {self.proxy.mapToSource(i).row() for i in self.table.selectedIndexes()}
        return sorted(int(self.model.item(r, 0).data(SORT_ROLE)) for r in rows)

    def select(self, feature: int) -> bool:
        """Select ``feature`` (clearing a search that hides it)."""
        if not 0 <= feature < self.model.rowCount():
            return False
        source = self.model.index(feature, 0)
        index = self.proxy.mapFromSource(source)
        if not index.isValid():
            self.search.clear()
            index = self.proxy.mapFromSource(source)
        self.table.setCurrentIndex(index)
        self.table.selectRow(index.row())
        self.table.scrollTo(index)
        return True

    def row_of(self, feature: int) -> int:
        """The visible row showing ``feature`` (-1 when filtered out)."""
        index = self.proxy.mapFromSource(self.model.index(feature, 0))
        return index.row() if index.isValid() else -1

    def _current_changed(self, current, _previous) -> None:
        if current.isValid():
            self.sig_feature_selected.emit(
                int(self.proxy.mapToSource(current).siblingAtColumn(0).data(SORT_ROLE)))

    def _search(self, text: str) -> None:
        self.proxy.set_text(text)
        self._update_count()

    def _update_count(self) -> None:
        shown, total = self.proxy.rowCount(), self.model.rowCount()
        self.count_label.setText(f"{shown} of {total} features" if shown != total
                                 else f"{total} features")


def _pct(value: float | None) -> str:
    if value is None:
        return ""
    if value == 0:
        return "dead"
    return f"{value:.3%}" if value < 0.01 else f"{value:.2%}"


def promotes_text(vocab, ids) -> str:
    return " ".join(visible(vocab[int(i)]) for i in ids[:3])
