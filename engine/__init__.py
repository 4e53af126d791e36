"""Lensbench engine: pure computation on TransformerLens 4, usable from a notebook.

Every analysis is a plain function ``run_x(host, request, ctx) -> XResult``. Nothing in this
package imports Qt; a test enforces it.
"""
