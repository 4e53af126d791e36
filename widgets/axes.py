"""Axis hygiene shared by every plot: no SI-prefix scaling, no "-0.000" tick labels.

pyqtgraph rescales small ranges with a label suffix such as "(x0.001)" and prints ticks that round
to zero from below as "-0.00". Both mislead on an empty or symmetric axis; :func:`tidy_axis` turns
them off on one axis, :func:`tidy_plot` on every axis of a plot item.
"""

from __future__ import annotations

import re

_NEG_ZERO = re.compile(r"^-(0+(\.0*)?)(e[+-]?\d+)?$")


def no_negative_zero(text: str) -> str:
    """'-0.000' -> '0.000'; anything else unchanged."""
    m = _NEG_ZERO.match(text.strip())
    return text.strip()[1:] if m else text


def fmt(value: float, digits: int = 3) -> str:
    """A fixed-point number that never reads "-0.000"."""
    return no_negative_zero(f"{float(value):.{digits}f}")


def tidy_axis(axis) -> None:
    """Turn off automatic SI-prefix scaling and negative-zero tick labels on a pg.AxisItem."""
    if getattr(axis, "_lensbench_tidy", False):
        return
    axis.enableAutoSIPrefix(False)
    original = axis.tickStrings

    def tick_strings(values, scale, spacing):
        return [no_negative_zero(s) for s in original(values, scale, spacing)]

    axis.tickStrings = tick_strings
    axis._lensbench_tidy = True


def tidy_plot(plot_item) -> None:
    for name in ("left", "bottom", "right", "top"):
        axis = plot_item.getAxis(name)
        if axis is not None:
            tidy_axis(axis)
