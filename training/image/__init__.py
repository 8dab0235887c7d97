"""Training, evaluation, benchmarks and the demo for the image detectors."""
