"""Lensbench views: one file per panel plus shared pieces. No torch, no model, no file I/O here."""
