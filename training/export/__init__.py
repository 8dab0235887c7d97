"""Model bundles: export a run directory to TorchScript + ONNX with a checksummed manifest.

The bundle format is specified in ``docs/contracts.md``; ``service.bundles.bundle`` is its one loader.
"""
