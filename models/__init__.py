"""usfad models: flow layers, tabular and image anomaly detectors. Pure PyTorch, no I/O."""
