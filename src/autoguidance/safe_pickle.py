"""A restricted unpickler: loads a pickle only if every global it names is on an allowlist.

Unpickling runs code: a pickle can name any importable callable (os.system, eval, ...) and call it. The
only thing that lets a pickle reach code is a global reference (the GLOBAL / STACK_GLOBAL opcodes, which
go through `Unpickler.find_class`) or a persistent id (`persistent_load`). Plain containers (dict, list,
tuple, set), strings, bytes and numbers need neither. So a pickle is safe to load when `find_class` hands
out only known, harmless globals and `persistent_load` refuses everything: that is this module.

`STATS_GLOBALS` admits plain containers and numpy arrays and scalars: enough for the reference statistics
that EDM2 publishes (a dict per detector holding `mu` and `sigma` arrays). Other readers pass a larger
allowlist: a set of (module, name) pairs resolved by import, or a mapping from (module, name) to the object
to hand out instead (a stand-in class, say), which lets a reader admit a name without importing the
module that defines it.
"""

from __future__ import annotations

import _compat_pickle
import importlib
import io
import os
import pickle
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any, BinaryIO

from .errors import UserInputError

# numpy moved its internals from numpy.core to numpy._core in 2.0; pickles name either.
NUMPY_GLOBALS: frozenset[tuple[str, str]] = frozenset(
    [("numpy", "ndarray"), ("numpy", "dtype")]
    + [
        (f"numpy.{core}.{module}", name)
        for core in ("core", "_core")
        for module, name in (
            ("multiarray", "_reconstruct"),
            ("multiarray", "scalar"),
            ("numeric", "_frombuffer"),
        )
    ]
)
# Plain containers that pickle by reference, and the helper protocol 2 uses to encode bytes.
CONTAINER_GLOBALS: frozenset[tuple[str, str]] = frozenset(
    [
        ("collections", "OrderedDict"),
        ("builtins", "set"),
        ("builtins", "frozenset"),
        ("builtins", "complex"),
        ("_codecs", "encode"),
    ]
)
STATS_GLOBALS: frozenset[tuple[str, str]] = NUMPY_GLOBALS | CONTAINER_GLOBALS

Allowlist = Collection[tuple[str, str]] | Mapping[tuple[str, str], Any]


class RefusedPickleError(UserInputError):
    """A pickle named something outside the allowlist (or was not a readable pickle). One line."""


class RestrictedUnpickler(pickle.Unpickler):
    """`pickle.Unpickler` whose `find_class` admits only `allowed` and whose `persistent_load` refuses.

    allowed: (module, name) pairs, imported on use; or a mapping from such pairs to the objects to return.
    source: how the file is named in error messages.
    """

    def __init__(self, file: BinaryIO, allowed: Allowlist = STATS_GLOBALS, source: str = "pickle"):
        super().__init__(file)
        self.allowed = allowed
        self.source = source

    def find_class(self, module: str, name: str) -> Any:
        # Protocols 0-2 write Python 2 names (__builtin__.set); map them as pickle's own find_class does.
        # The allowlist check comes after, on the Python 3 name.
        if (module, name) in _compat_pickle.NAME_MAPPING:
            module, name = _compat_pickle.NAME_MAPPING[(module, name)]
        module = _compat_pickle.IMPORT_MAPPING.get(module, module)
        key = (module, name)
        if isinstance(self.allowed, Mapping):
            if key in self.allowed:
                return self.allowed[key]
        elif key in self.allowed:
            return getattr(importlib.import_module(module), name)
        raise RefusedPickleError(
            f"refusing to load {self.source}: it references {module}.{name}, which is not on the allowlist "
            "(loading it could run code)"
        )

    def persistent_load(self, pid: Any) -> Any:
        raise RefusedPickleError(
            f"refusing to load {self.source}: it uses persistent ids, which are not allowed"
        )


def loads(data: bytes, allowed: Allowlist = STATS_GLOBALS, source: str = "pickle") -> Any:
    """Unpickle `data` with `RestrictedUnpickler`; RefusedPickleError (one line) for anything refused or
    malformed."""
    try:
        return RestrictedUnpickler(io.BytesIO(data), allowed, source).load()
    except RefusedPickleError:
        raise
    except Exception as e:  # truncated or corrupt data raises many types (UnpicklingError, EOFError, ...)
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise RefusedPickleError(f"cannot read {source} as a pickle: {first}") from None


def load(path: str | os.PathLike, allowed: Allowlist = STATS_GLOBALS) -> Any:
    """Read and restricted-unpickle the file at `path` (see `loads`)."""
    p = Path(path)
    try:
        data = p.read_bytes()
    except OSError as e:
        raise UserInputError(f"cannot read {str(p)!r}: {e.strerror or e}") from None
    return loads(data, allowed, source=repr(str(p)))
