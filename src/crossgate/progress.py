"""Progress bars: tqdm on a terminal; in a log (stderr not a terminal) one line per bar, when it ends."""
from __future__ import annotations

import sys
import threading
import time
from contextlib import contextmanager


def progress(total: int | None = None, desc: str = "", unit: str = "it", enabled: bool = True, initial: int = 0,
             milestones: bool = False, **tqdm_options):
    """A bar to `update(n)` and close (a context manager). A terminal gets tqdm (with its measured time
    left); a log gets one line at the end ("desc: 2,640 img in 58.1 s"), instead of a redraw per update,
    and with `milestones` one at each quarter of `total` with the time left at the rate so far."""
    if enabled and sys.stderr.isatty():
        from tqdm.auto import tqdm

        return tqdm(total=total, desc=desc, unit=unit, initial=initial, dynamic_ncols=True, **tqdm_options)
    return _LogLine(desc, unit, enabled, total if milestones else None)


class _LogLine:
    def __init__(self, desc: str, unit: str, enabled: bool, total: int | None = None):
        self.desc, self.unit, self.enabled, self.total = desc, unit, enabled, total
        self.n, self._start = 0, time.perf_counter()  # the work of this run: resumed work is not counted
        self._said = 0  # quarters said

    def update(self, n: int = 1) -> None:
        self.n += n
        if self.enabled and self.total and self.n < self.total and 4 * self.n // self.total > self._said:
            self._said = 4 * self.n // self.total
            seconds = time.perf_counter() - self._start
            if seconds < 10:  # a short job needs no interim word
                return
            left = seconds * (self.total - self.n) / self.n
            print(f"{self.desc}: {self.n:,} of {self.total:,} in {seconds:.0f} s, about {left:.0f} s left",
                  file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.enabled and self.n:
            seconds = time.perf_counter() - self._start
            unit = self.unit + ("s" if self.unit == "run" and self.n != 1 else "")
            done = f"{self.n:,} {unit}" if self.unit != "B" else f"{self.n / 1e6:,.1f} MB"
            print(f"{self.desc}: {done} in {seconds:.1f} s", file=sys.stderr, flush=True)
        self.enabled = False

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False


@contextmanager
def working(desc: str, enabled: bool = True):
    """A long step with no parts to count (a fit): a terminal sees its seconds tick; a log gets one line
    when it starts and one when it ends."""
    if not enabled:
        yield
        return
    start = time.perf_counter()
    stop = threading.Event()
    ticker = None
    if sys.stderr.isatty():
        def tick():
            while not stop.wait(1.0):
                print(f"\r{desc}: {time.perf_counter() - start:.0f} s", end="", file=sys.stderr, flush=True)

        ticker = threading.Thread(target=tick, daemon=True)
        ticker.start()
    else:
        print(f"{desc} ...", file=sys.stderr, flush=True)
    try:
        yield
    finally:
        stop.set()
        if ticker is not None:
            ticker.join()
        back = "\r" if ticker is not None else ""  # over the ticking line
        print(f"{back}{desc}: done in {time.perf_counter() - start:.1f} s", file=sys.stderr, flush=True)
