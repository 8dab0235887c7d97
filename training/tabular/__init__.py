"""Training, saving and benchmarking of tabular one-class detectors."""
