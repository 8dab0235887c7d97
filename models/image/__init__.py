"""Image anomaly detectors: anomalib's FastFlow, CFlow and U-Flow with affine / additive / USF flows."""
