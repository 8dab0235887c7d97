"""Checks that an exported file holds a graph and tensors only, never arbitrary pickled objects.

``model.onnx`` is a protobuf (no pickle at all). ``model.pt`` is a TorchScript archive: its
``*.pkl`` entries are read by TorchScript's own restricted unpickler (``torch.jit.load``), not
by Python's ``pickle`` / ``torch.load``; this module additionally checks that every global they
name is a compiled TorchScript class or one of the few torch helpers used to rebuild tensors.
"""

from __future__ import annotations

import pickletools
import zipfile
from pathlib import Path

# Globals TorchScript writes for tensors and containers; anything else is refused.
ALLOWED_TORCHSCRIPT_GLOBALS = frozenset(
    {
        "torch._utils _rebuild_tensor_v2",
        "collections OrderedDict",
    }
)
_STORAGE_PREFIX = "torch "
_JIT_HELPER_PREFIX = "torch.jit._pickle "  # TorchScript's own list / tensor rebuild helpers
_COMPILED_CLASS_PREFIX = "__torch__."


class UnsafeArtifactError(ValueError):
    """An exported file references something other than a graph and tensors."""


def _is_allowed(global_name: str) -> bool:
    if global_name in ALLOWED_TORCHSCRIPT_GLOBALS or global_name.startswith(
        (_COMPILED_CLASS_PREFIX, _JIT_HELPER_PREFIX)
    ):
        return True
    return global_name.startswith(_STORAGE_PREFIX) and global_name.endswith("Storage")


def torchscript_pickle_globals(path: str | Path) -> set[str]:
    """Every ``module name`` global referenced by the pickle entries of a TorchScript archive.

    Hand-written with ``pickletools.genops``: it lists opcodes without executing any of them.
    """
    found: set[str] = set()
    with zipfile.ZipFile(path) as archive:
        for entry in archive.namelist():
            if not entry.endswith("pkl"):  # data.pkl, constants.pkl and the *.debug_pkl entries
                continue
            for opcode, argument, _ in pickletools.genops(archive.read(entry)):
                if opcode.name in ("GLOBAL", "INST"):
                    found.add(str(argument))
                elif opcode.name == "STACK_GLOBAL":
                    found.add("<STACK_GLOBAL>")  # TorchScript never writes it; refused below
    return found


def check_torchscript_archive(path: str | Path) -> None:
    """Raise :class:`UnsafeArtifactError` if the archive names any global outside the allow-list."""
    foreign = sorted(name for name in torchscript_pickle_globals(path) if not _is_allowed(name))
    if foreign:
        raise UnsafeArtifactError(
            f"{path}: references objects other than tensors and TorchScript code: {foreign}"
        )


def check_onnx_file(path: str | Path) -> None:
    """Raise :class:`UnsafeArtifactError` unless the file is a valid, self-contained ONNX model."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    try:
        onnx.checker.check_model(model, full_check=True)
    except onnx.checker.ValidationError as error:
        raise UnsafeArtifactError(f"{path}: not a valid ONNX model ({error})") from error
    external = [t.name for t in model.graph.initializer if t.data_location == onnx.TensorProto.EXTERNAL]
    if external:
        raise UnsafeArtifactError(f"{path}: tensors stored outside the file: {external[:5]}")
