"""Progress for long steps: a bar on a terminal, a short line every few seconds everywhere else.

A bar drawn into a log file or a pipe is noise (or nothing at all until the step ends), so when stderr is not
a terminal a background thread prints ``ingest zerank-docs: 512/1,033 chunks (50%), 12 s, 43 chunks/s, ETA 12 s``
every ``interval`` seconds while the step runs, and a last line when it ends. Steps shorter than the interval
print nothing, so quick commands and one-line errors stay clean.
"""

from __future__ import annotations

import sys
import threading
import time
from types import TracebackType
from typing import Any, TextIO

#: Seconds between progress lines when stderr is not a terminal.
INTERVAL_S = 5.0


class Progress:
    """``with Progress(total, "ingest docs", "document") as bar: ... bar.update(n)``; thread-safe.

    ``total=None`` is a step without a count (e.g. loading a model): off a terminal it still reports that it
    is alive every ``interval`` seconds.
    """

    def __init__(
        self,
        total: int | None,
        desc: str,
        unit: str,
        *,
        stream: TextIO | None = None,
        interval: float | None = None,
    ) -> None:
        self.total = total
        self.desc = desc
        self.unit = unit
        self.stream = stream if stream is not None else sys.stderr
        self.interval = INTERVAL_S if interval is None else interval
        self._done = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._started = time.monotonic()
        self._printed = False
        self._finished = False
        self._bar: Any = None
        self._thread: threading.Thread | None = None

    def __enter__(self) -> Progress:
        self._started = time.monotonic()
        if _is_terminal(self.stream):
            if self.total is not None:
                from tqdm.auto import tqdm

                self._bar = tqdm(total=self.total, desc=self.desc, unit=self.unit, file=self.stream, leave=False)
        else:
            self._thread = threading.Thread(target=self._report_periodically, name="zerank-progress", daemon=True)
            self._thread.start()
        return self

    def advance_to(self, done: int, total: int) -> None:
        """Absolute progress: ``done`` of ``total`` (the total may become known only once the work is planned)."""
        with self._lock:
            if self.total != total:
                self.total = total
                self._started = time.monotonic()  # the rate counts from when the counted work starts
                if self._bar is not None:
                    self._bar.reset(total=total)
            step = done - self._done
        if self._bar is None and self._thread is None and _is_terminal(self.stream) and total:
            from tqdm.auto import tqdm

            self._bar = tqdm(total=total, desc=self.desc, unit=self.unit, file=self.stream, leave=False)
        if step > 0:
            self.update(step)

    def update(self, n: int = 1) -> None:
        with self._lock:
            self._done += n
            complete = self.total is not None and self._done >= self.total
        if self._bar is not None:
            self._bar.update(n)
        elif complete and self._thread is not None:
            self._stop.set()  # done: the last line (if the step was long enough to report) comes now
            self._finish()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stop.set()
        if self._thread is not None and exc_type is None:
            self._finish()
        if self._bar is not None:
            self._bar.close()

    def _finish(self) -> None:
        """Print the last line once, if the step was long enough to have printed any."""
        with self._lock:
            if self._finished:
                return
            self._finished = True
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join()
        if self._printed:
            self._write(final=True)

    def _report_periodically(self) -> None:
        while not self._stop.wait(self.interval):
            self._write(final=False)

    def _write(self, *, final: bool) -> None:
        with self._lock:
            done = self._done
        elapsed = time.monotonic() - self._started
        units = self.unit if (self.total if self.total is not None else done) == 1 else _plural(self.unit)
        if self.total is None:
            state = "done" if final else "working"
            line = f"{self.desc}: {state}, {elapsed:.0f} s"
        else:
            percent = 100.0 * done / self.total if self.total else 100.0
            line = f"{self.desc}: {done:,}/{self.total:,} {units} ({percent:.0f}%), {elapsed:.0f} s"
            if done and elapsed > 0 and not final:
                rate = done / elapsed
                line += f", {rate:,.1f} {_plural(self.unit)}/s, ETA {max(0, self.total - done) / rate:,.0f} s"
        try:
            print(line, file=self.stream, flush=True)
        except (OSError, ValueError):  # stderr closed under us: progress is not worth a crash
            return
        self._printed = True


def _plural(unit: str) -> str:
    return unit[:-1] + "ies" if unit.endswith("y") and unit[-2:-1] not in "aeiou" else unit + "s"


def _is_terminal(stream: TextIO) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False
