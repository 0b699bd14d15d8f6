"""diffusers', transformers' and peft's log output collected instead of printed while models load.

Their loaders report problems as log warnings ("weights ... newly initialized", "No LoRA keys ...",
"unexpected keys") and print progress bars. While a model loads, `captured_logs` collects those records
(and Python warnings) into a list, so that a loader can turn the ones that mean "this file does not fit"
into a one-line UserInputError, and a bad input never prints more than that one line.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import warnings
from collections.abc import Iterator


class _Collect(logging.Handler):
    def __init__(self, into: list[str]):
        super().__init__(logging.WARNING)
        self.into = into

    def emit(self, record: logging.LogRecord) -> None:
        self.into.append(record.getMessage())


@contextlib.contextmanager
def captured_logs() -> Iterator[list[str]]:
    """Collect WARNING+ records of diffusers, transformers and peft (and Python warnings) into the list
    this yields, with their default handlers and progress bars off; everything restored on exit."""
    messages: list[str] = []
    handler = _Collect(messages)
    undo = []
    for lib in ("diffusers", "transformers"):
        try:
            mod = importlib.import_module(f"{lib}.utils.logging")
        except ImportError:
            continue
        verbosity, bars = mod.get_verbosity(), mod.is_progress_bar_enabled()
        mod.disable_default_handler()
        mod.add_handler(handler)
        mod.set_verbosity(logging.WARNING)
        mod.disable_progress_bar()
        undo.append((mod, verbosity, bars))
    peft_logger = logging.getLogger("peft")
    peft_logger.addHandler(handler)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                yield messages
            finally:
                messages.extend(str(w.message) for w in caught)
    finally:
        peft_logger.removeHandler(handler)
        for mod, verbosity, bars in undo:
            mod.remove_handler(handler)
            mod.enable_default_handler()
            mod.set_verbosity(verbosity)
            if bars:
                mod.enable_progress_bar()


def first_line(exc: BaseException, limit: int = 240) -> str:
    """The informative first line of an exception's message ("Error(s) in ...:" headers skipped)."""
    lines = [ln.strip() for ln in str(exc).strip().splitlines() if ln.strip()]
    if not lines:
        return type(exc).__name__
    line = lines[1] if lines[0].endswith(":") and len(lines) > 1 else lines[0]
    return line if len(line) <= limit else line[: limit - 3] + "..."
