"""One progress convention for every long job: a bar on a terminal, periodic log lines otherwise.

A bar (tqdm) is drawn only when stderr is a terminal; in a log file or a pipe the same progress comes as
one line every `every_s` seconds (and one at the end), so that long runs under nohup or a scheduler stay
readable. `enabled=False` (the commands' --no-progress) silences both.
"""

from __future__ import annotations

import sys
import time
from typing import Any

from tqdm.auto import tqdm


class Progress:
    def __init__(
        self, desc: str, total: int, initial: int = 0, unit: str = "it", enabled: bool = True, every_s=30.0
    ):
        self.desc, self.total, self.n, self.unit = desc, total, initial, unit
        self.enabled = enabled
        self.terminal = enabled and sys.stderr.isatty()
        self.every_s = every_s
        self.postfix: dict[str, Any] = {}
        self.start = self.last = time.perf_counter()
        self.start_n = initial
        self.bar = tqdm(total=total, initial=initial, unit=unit, desc=desc, disable=not self.terminal)

    def update(self, n: int = 1) -> None:
        self.n += n
        self.bar.update(n)
        if self.enabled and not self.terminal and time.perf_counter() - self.last >= self.every_s:
            self._log()

    def set_postfix(self, **values: Any) -> None:
        self.postfix = values
        self.bar.set_postfix(**values)

    def _log(self) -> None:
        now = time.perf_counter()
        rate = (self.n - self.start_n) / max(now - self.start, 1e-9)
        extra = "".join(f", {k} {v}" for k, v in self.postfix.items())
        share = f" ({100 * self.n / self.total:.0f}%)" if self.total else ""
        print(
            f"{self.desc}: {self.n}/{self.total} {self.unit}{share}, {rate:.2f} {self.unit}/s{extra}",
            file=sys.stderr,
            flush=True,
        )
        self.last = now

    def close(self) -> None:
        # A closing line only for jobs long enough to have had periodic lines: short pieces stay quiet.
        long = time.perf_counter() - self.start >= self.every_s
        if self.enabled and not self.terminal and self.n > self.start_n and long:
            self._log()
        self.bar.close()
