"""Progress bars of the long-running ``usfad`` commands (tqdm, on stderr).

Off for library calls; the ``usfad`` command line turns them on for its run with
:func:`enabled`. Even then a bar is only drawn when stderr is a terminal, so logs and CI output
stay clean; ``USFAD_PROGRESS=1`` forces the bars on (``0`` forces them off).
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

from tqdm import tqdm

_ON: ContextVar[bool] = ContextVar("usfad_progress", default=False)


@contextmanager
def enabled() -> Iterator[None]:
    """Show progress bars for the duration of the block (the CLI wraps every command in it)."""
    token = _ON.set(True)
    try:
        yield
    finally:
        _ON.reset(token)


def _disable() -> bool | None:
    """tqdm's ``disable``: ``None`` means "only on a terminal"."""
    if not _ON.get():
        return True
    forced = os.environ.get("USFAD_PROGRESS")
    if forced in ("0", "1"):
        return forced == "0"
    return None


def bar(total: int | None, desc: str, unit: str = "it", leave: bool = True) -> tqdm:
    """A progress bar on stderr; call ``update``/``set_postfix_str`` and ``close`` (or use ``with``)."""
    # Steps here are coarse (an epoch, a benchmark run): draw every one (mininterval=0).
    return tqdm(
        total=total, desc=desc, unit=unit, leave=leave, file=sys.stderr, disable=_disable(), mininterval=0
    )


def write(line: str) -> None:
    """Print a log line to stderr above any open bar (plain ``print`` would tear the bar)."""
    tqdm.write(line, file=sys.stderr)


@contextmanager
def elapsed(desc: str) -> Iterator[None]:
    """An elapsed-time indicator for one long call that reports no steps of its own."""
    indicator = tqdm(
        total=None, desc=desc, bar_format="{desc}: {elapsed}", file=sys.stderr, disable=_disable()
    )  # tqdm draws no elapsed time without updates; the ticker thread below redraws it
    stop = threading.Event()

    def tick() -> None:
        while not stop.wait(0.5):
            indicator.refresh()

    ticker = threading.Thread(target=tick, daemon=True)
    ticker.start()
    try:
        yield
    finally:
        stop.set()
        ticker.join()
        indicator.close()
