"""One sign convention for every signed quantity: blue is positive (or above the baseline), red
negative (below it), near-white none. The DLA heatmap, its bar charts, the patching heatmaps and
the plan's bars all use these colours (ColorBrewer's RdBu, as TransformerLens's demos plot)."""

from __future__ import annotations

import pyqtgraph as pg
from PySide6.QtGui import QColor

POSITIVE_RGB = (33, 102, 172)
NEUTRAL_RGB = (247, 247, 247)
NEGATIVE_RGB = (178, 24, 43)
POSITIVE = QColor(*POSITIVE_RGB)
NEGATIVE = QColor(*NEGATIVE_RGB)


def diverging() -> pg.ColorMap:
    """Red (low) → white (centre) → blue (high)."""
    return pg.ColorMap([0.0, 0.5, 1.0], [NEGATIVE_RGB, NEUTRAL_RGB, POSITIVE_RGB],
                       name="diverging")
