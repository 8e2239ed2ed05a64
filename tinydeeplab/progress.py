"""The progress display of long work (training epochs, evaluation, dataset checks).

On a terminal the line is redrawn in place with ``\\r``. When the stream is not a terminal (a CI
log, ``> run.log``), carriage returns would make one endless line, so whole lines are written
instead, at most one every ``interval`` seconds (and always the last one). ``done()`` ends the
line; it is also called on errors (``with Progress(...) as bar:``), so an error message that
follows never lands on the end of a progress line.

>>> import io
>>> log = io.StringIO()
>>> with Progress(stream=log, interval=0) as bar:
...     bar.show("step 1/2")
...     bar.show("step 2/2")
>>> log.getvalue()
'step 1/2\\nstep 2/2\\n'
"""
from __future__ import annotations

import sys
import time


class Progress:
    """One status line on ``stream`` (default stderr): in-place on a terminal, whole lines otherwise."""

    def __init__(self, enabled: bool = True, stream=None, interval: float = 10.0):
        self.enabled = bool(enabled)
        self.stream = stream
        self.interval = float(interval)
        self._width = 0           # width of the open in-place line (terminal mode)
        self._last = None         # time of the last whole line (log mode)
        self._pending = None      # the newest text not yet written (log mode)

    @property
    def _out(self):
        return self.stream if self.stream is not None else sys.stderr

    def _is_terminal(self) -> bool:
        try:
            return bool(self._out.isatty())
        except (AttributeError, ValueError):
            return False

    def show(self, text: str) -> None:
        """Display ``text`` as the current status."""
        if not self.enabled:
            return
        out = self._out
        if self._is_terminal():
            out.write("\r" + text.ljust(self._width))
            self._width = len(text)
            out.flush()
            return
        now = time.monotonic()
        if self._last is None or now - self._last >= self.interval:
            out.write(text + "\n")
            out.flush()
            self._last, self._pending = now, None
        else:
            self._pending = text

    def write(self, text: str) -> None:
        """Write a message (ending the status line first)."""
        if self.enabled:
            self.done()
            self._out.write(text)
            self._out.flush()

    def done(self) -> None:
        """End the status line: a newline on a terminal, the last pending line in a log."""
        if not self.enabled:
            return
        if self._width:
            self._out.write("\n")
            self._width = 0
            self._out.flush()
        if self._pending is not None:
            self._out.write(self._pending + "\n")
            self._pending = None
            self._out.flush()
        self._last = None

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc) -> None:
        self.done()
