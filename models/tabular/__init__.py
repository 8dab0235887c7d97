"""Tabular one-class detectors (pure PyTorch)."""
