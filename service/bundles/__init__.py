"""Model bundles on disk: their manifests, the catalogs of a model directory, the ONNX Runtime loader.

- ``manifest``: ``read_manifest`` (checked with ``service.contract``), ``verify_files`` (sha256);
- ``catalog``: ``ManifestCatalog`` (API: manifests only) and ``BundleCatalog`` (workers: loaded bundles);
- ``bundle``: ``load_bundle`` and ``Bundle``, which opens the ``onnxruntime.InferenceSession`` and runs it.

Import from the modules; this file imports nothing, so the API (no onnxruntime) can read manifests.
"""
