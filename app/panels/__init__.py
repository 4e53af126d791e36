"""The panel registry: each entry is a PanelBinding class; the main window docks them in order.

Adding a panel = one view in widgets/, one binding module here, one line in PANELS.
"""

from __future__ import annotations

from app.panels.attention import AttentionBinding
from app.panels.attribution import AttributionBinding
from app.panels.features import FeaturesBinding
from app.panels.induction import InductionBinding
from app.panels.patching import PatchingBinding
from app.panels.predictions import PredictionsBinding

PANELS = [
    PredictionsBinding,
    AttributionBinding,
    AttentionBinding,
    InductionBinding,
    PatchingBinding,
    FeaturesBinding,
]
