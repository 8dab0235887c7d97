"""Doctest collection outside ``tests/`` (pyproject's testpaths list models/ and the contract).

The image modules import FrEIA and anomalib, which only the ``image`` extra installs; without
it they are not collected (they hold no doctests), so a plain ``pip install -e '.[dev]'``
still runs ``python -m pytest``.
"""

from __future__ import annotations

import importlib.util

IMAGE_EXTRA = all(importlib.util.find_spec(name) for name in ("anomalib", "FrEIA", "timm"))
collect_ignore_glob = [] if IMAGE_EXTRA else ["models/image/*.py"]
