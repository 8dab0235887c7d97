"""The model directory: which bundles exist, loaded and reloaded when they change.

``ManifestCatalog`` (API: manifests only, no onnxruntime) and ``BundleCatalog`` (workers:
ONNX Runtime sessions) share the scan. Only sub-directories with valid model names are
considered; a bundle that fails to load leaves the previously loaded version serving.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Generic, TypeVar

from service.bundles.manifest import (
    Manifest,
    bundle_signature,
    read_manifest,
    validate_model_name,
    verify_files,
)
from service.contract import is_valid_name
from service.errors import BundleError, ModelNotFound

LOG = logging.getLogger("usfad.catalog")
T = TypeVar("T")


def bundle_dirs(model_dir: Path) -> dict[str, Path]:
    """Sub-directories of ``model_dir`` whose names are valid model names and hold a manifest."""
    if not model_dir.is_dir():
        return {}
    found = {}
    for path in sorted(model_dir.iterdir()):
        if is_valid_name(path.name) and (path / "manifest.json").is_file():
            found[path.name] = path
    return found


class _Scanned(Generic[T]):
    """Loads each bundle directory with ``loader``; reloads on signature change; keeps the old on failure."""

    def __init__(
        self,
        model_dir: Path,
        loader: Callable[[Path], T],
        interval_s: float,
        on_failure: Callable[[str, Exception], None] | None = None,
        label: str = "bundle",
    ) -> None:
        self.model_dir = Path(model_dir)
        self._label = label
        self._loader = loader
        self._interval_s = interval_s
        self._on_failure = on_failure
        self._items: dict[str, T] = {}
        self._signatures: dict[str, tuple] = {}
        self._failed: dict[str, tuple[tuple, str]] = {}
        self._last_scan = float("-inf")
        self._lock = threading.Lock()

    def refresh(self, force: bool = False) -> None:
        """Rescan the model directory if ``interval_s`` passed since the last scan (or ``force``)."""
        now = time.monotonic()
        if not force and now - self._last_scan < self._interval_s:
            return
        with self._lock:
            if not force and now - self._last_scan < self._interval_s:
                return
            self._last_scan = now
            present = bundle_dirs(self.model_dir)
            for name in set(self._items) - set(present):
                LOG.info("model %s removed from %s", name, self.model_dir)
                self._items.pop(name)
                self._signatures.pop(name, None)
            for name, path in present.items():
                try:
                    signature = bundle_signature(path)
                except OSError:
                    continue
                if (
                    self._signatures.get(name) == signature
                    or self._failed.get(name, ((), ""))[0] == signature
                ):
                    continue
                try:
                    item = self._loader(path)
                except (BundleError, OSError, ValueError) as error:
                    self._failed[name] = (signature, str(error))
                    LOG.error(
                        "model %s: %s refused, %s: %s",
                        name,
                        self._label,
                        "keeping the loaded version" if name in self._items else "not served",
                        error,
                    )
                    if self._on_failure is not None:
                        self._on_failure(name, error)
                    continue
                self._failed.pop(name, None)
                self._items[name] = item
                self._signatures[name] = signature
                LOG.info("model %s: %s loaded from %s", name, self._label, path)

    def names(self) -> list[str]:
        """Names of the loaded models."""
        self.refresh()
        return sorted(self._items)

    def items(self) -> dict[str, T]:
        """A snapshot ``{name: loaded item}``."""
        self.refresh()
        return dict(self._items)

    def loaded(self) -> LoadedView[T]:
        """A view of what is loaded now that never rescans (for the event loop: no loading there)."""
        return LoadedView(self)

    def failures(self) -> dict[str, str]:
        """``{name: error}`` of bundles whose latest version was refused."""
        return {name: message for name, (_, message) in self._failed.items()}

    def get(self, name: str) -> T:
        """The loaded item; ``InputError`` for an invalid name, ``ModelNotFound`` for an unknown one."""
        if type(name) is not str or name not in self._items:  # loaded names are valid (``bundle_dirs``)
            validate_model_name(name)
        self.refresh()
        try:
            return self._items[name]
        except KeyError:
            raise ModelNotFound(
                f"model {name!r} is not loaded; GET /models lists the available models"
            ) from None


class LoadedView(Generic[T]):
    """``names`` / ``items`` / ``get`` of a catalog's loaded items, without ``refresh``.

    The embedded mode's inline batcher runs on the event loop, which must not stall on a
    model load; the worker thread's own calls keep the catalog rescanned.
    """

    def __init__(self, scanned: _Scanned[T]) -> None:
        self._scanned = scanned

    def names(self) -> list[str]:
        """Names of the loaded models."""
        return sorted(self._scanned._items)

    def items(self) -> dict[str, T]:
        """A snapshot ``{name: loaded item}``."""
        return dict(self._scanned._items)

    def get(self, name: str) -> T:
        """The loaded item; ``ModelNotFound`` (a ``LookupError``) when there is none."""
        try:
            return self._scanned._items[name]
        except KeyError:
            raise ModelNotFound(f"model {name!r} is not loaded") from None


def read_verified_manifest(bundle_dir: Path) -> Manifest:
    """``read_manifest`` plus the sha256 check, so the API refuses exactly what workers refuse."""
    manifest = read_manifest(bundle_dir)
    verify_files(bundle_dir, manifest)
    return manifest


class ManifestCatalog(_Scanned[Manifest]):
    """The API's view: verified manifests, without opening ONNX Runtime sessions."""

    def __init__(self, model_dir: Path, interval_s: float = 2.0) -> None:
        super().__init__(model_dir, read_verified_manifest, interval_s, label="manifest")


class BundleCatalog(_Scanned["Bundle"]):  # noqa: F821 - imported lazily to keep onnxruntime out of the API
    """A worker's loaded bundles (ONNX Runtime sessions), verified and reloaded on change."""

    def __init__(
        self,
        model_dir: Path,
        device: str = "auto",
        threads: int = 0,
        interval_s: float = 2.0,
        on_failure: Callable[[str, Exception], None] | None = None,
    ) -> None:
        from service.bundles.bundle import load_bundle

        super().__init__(
            model_dir,
            lambda path: load_bundle(path, device=device, threads=threads),
            interval_s,
            on_failure,
            "bundle",
        )


__all__ = ["BundleCatalog", "LoadedView", "ManifestCatalog", "bundle_dirs"]
