"""What every guide derived from the main network shares: it holds that network (shared, not copied), says
what it denoises as the network does, and attaches hooks to the network's modules only while the guide
itself is evaluated."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

from torch import nn

from ..denoiser import Signature, signature
from ..errors import UserInputError


class DerivedGuide(nn.Module):
    """Base: holds the main network (shared, not copied) and mirrors its config and signature."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    @property
    def config(self):  # the guide denoises the same images with the same conditioning
        return self.net.config

    @property
    def signature(self) -> Signature:
        return signature(self.net)


@contextlib.contextmanager
def hooked(register: Callable[[], list[Any]]) -> Iterator[None]:
    """Hooks on the shared network's modules for the duration of one guide evaluation only: the main
    model, which shares the modules, never sees them, and nothing stays attached afterwards."""
    handles = register()
    try:
        yield
    finally:
        for h in handles:
            h.remove()


def named_modules(root: nn.Module, names: list[str], what: str, hint: list[str]) -> dict[str, nn.Module]:
    """The modules of `root` called `names` (its own module names); a one-line error naming `what` guide
    and a few names from `hint` for a name that is not there."""
    modules = dict(root.named_modules())
    unknown = [n for n in names if n not in modules or n == ""]
    if unknown:
        listed = ", ".join(hint[:8]) or "(none)"
        raise UserInputError(f"{what}: no module named {unknown[0]!r}; blocks include {listed}")
    return {n: modules[n] for n in names}


def split_names(text: str) -> list[str]:
    """'a+b' -> ['a', 'b'] (blank parts dropped): the module names of a weak guide's spec."""
    return [n.strip() for n in text.split("+") if n.strip()]
