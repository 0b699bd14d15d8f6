"""Read EDM2's released network pickles without executing anything they contain.

EDM2 (Karras et al. 2024) saves networks with a "persistent class" mechanism: each network object is
pickled as a call `torch_utils.persistence._reconstruct_persistent_obj(meta)` where `meta` holds the
source code of the defining module, the class name and the object's state (its `__dict__`: constructor
arguments, parameters, buffers, child modules). Loading such a file with `pickle.load` imports that
module source and runs it, i.e. executes whatever the file's author put there.

`read_edm2_pickle` never does. Its unpickler resolves a short allow-list of globals to inert stand-ins:
a persistent object becomes a `PersistentRecord` (class name + state; the source text is kept only as a
hash), plain torch containers become `PlainRecord`s, tensors are rebuilt through `torch.load(...,
weights_only=True)`, numpy arrays through numpy's own reconstructors (object arrays refused). Any other
global (os.system, builtins.eval, an unknown class) raises `UserInputError` naming it, before it could
be called. Turning the records into the package's network is `edm2_convert.py`'s job.
"""

from __future__ import annotations

import _compat_pickle
import collections
import hashlib
import io
import os
import pickle
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..errors import UserInputError

# Classes of EDM2's networks and encoders that we know how to turn into our own objects.
KNOWN_PERSISTENT_CLASSES = frozenset(
    {"Precond", "UNet", "Block", "MPConv", "MPFourier", "StabilityVAEEncoder", "StandardRGBEncoder"}
)
# Plain torch containers that may appear between persistent modules (by their own pickling).
_PLAIN_CLASSES = {
    ("torch.nn.modules.container", "ModuleDict"),
    ("torch.nn.modules.container", "ModuleList"),
    ("dnnlib.util", "EasyDict"),
}


@dataclass
class PersistentRecord:
    """What a persistent EDM2 object becomes: its class name and pickled state, no code."""

    class_name: str
    state: dict[str, Any]
    source_sha256: str
    version: Any = None

    @property
    def init_kwargs(self) -> dict[str, Any]:
        return dict(self.state.get("_init_kwargs") or {})

    @property
    def init_args(self) -> tuple:
        return tuple(self.state.get("_init_args") or ())


class PlainRecord:
    """A plain torch container (ModuleDict, ModuleList) or EasyDict: its pickled state and items.

    The unpickler hands out one subclass per allowed type name, so that NEWOBJ (which needs a real
    class) creates a record instead of the torch object."""

    type_name = "?"

    def __setstate__(self, state: Any) -> None:  # BUILD: keep the state, run nothing
        self.state = state

    def __setitem__(self, key: Any, value: Any) -> None:  # SETITEMS of a dict subclass (EasyDict)
        self.__dict__.setdefault("items", {})[key] = value

    @property
    def modules(self) -> dict[str, Any]:
        """The child modules of a ModuleDict / ModuleList (in order)."""
        state = getattr(self, "state", None) or {}
        return dict(state.get("_modules") or {}) if isinstance(state, dict) else {}

    @property
    def mapping(self) -> dict[Any, Any]:
        return dict(self.__dict__.get("items", {}))


_PLAIN_TYPES = {key: type(key[1], (PlainRecord,), {"type_name": key[1]}) for key in _PLAIN_CLASSES}


def _reconstruct_persistent(meta: Any) -> PersistentRecord:
    if not isinstance(meta, dict) or meta.get("type") != "class":
        raise UserInputError("EDM2 pickle: a persistent object without a class record")
    name = meta.get("class_name")
    if name not in KNOWN_PERSISTENT_CLASSES:
        known = ", ".join(sorted(KNOWN_PERSISTENT_CLASSES))
        raise UserInputError(f"EDM2 pickle: unknown class {name!r}; loadable classes: {known}")
    state = meta.get("state")
    if not isinstance(state, dict):
        raise UserInputError(f"EDM2 pickle: class {name} has no state dictionary")
    src = meta.get("module_src")
    digest = hashlib.sha256(src.encode() if isinstance(src, str) else b"").hexdigest()
    return PersistentRecord(name, state, digest, meta.get("version"))


def _reconstructor(cls: Any, base: Any, state: Any = None) -> PlainRecord:
    """copyreg._reconstructor (pickle protocols 0 and 1) restricted to our record types."""
    if not (isinstance(cls, type) and issubclass(cls, PlainRecord)) or base is not object:
        raise UserInputError("EDM2 pickle: refusing to reconstruct an object of an unknown type")
    return cls.__new__(cls)


def _load_storage_bytes(data: Any) -> Any:
    """A storage saved by torch in its legacy format: read by torch's own weights-only loader."""
    if not isinstance(data, bytes):
        raise UserInputError("EDM2 pickle: a tensor storage is not a byte string")
    try:
        return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as exc:  # torch's restricted loader refuses anything but storages and tensors
        raise UserInputError(f"EDM2 pickle: unreadable tensor storage ({type(exc).__name__})") from None


def _rebuild_tensor(storage: Any, offset: Any, size: Any, stride: Any, *rest: Any) -> torch.Tensor:
    if not isinstance(storage, (torch.TypedStorage, torch.UntypedStorage)):
        raise UserInputError("EDM2 pickle: a tensor without a storage")
    return torch._utils._rebuild_tensor(storage, offset, size, stride)


def _rebuild_parameter(data: Any, requires_grad: Any = False, *rest: Any) -> torch.Tensor:
    if not isinstance(data, torch.Tensor):
        raise UserInputError("EDM2 pickle: a parameter without tensor data")
    return data  # a plain tensor: we only read the values


def _np_reconstruct(subtype: Any, shape: Any, dtype: Any) -> np.ndarray:
    if subtype is not np.ndarray:
        raise UserInputError("EDM2 pickle: only plain numpy arrays are allowed")
    return np.ndarray.__new__(np.ndarray, shape, dtype)


def _np_dtype(spec: Any, align: Any = False, copy: Any = False) -> np.dtype:
    dt = np.dtype(spec)
    if dt.hasobject:
        raise UserInputError("EDM2 pickle: numpy arrays of Python objects are not allowed")
    return dt


def _np_scalar(dtype: Any, data: Any = None) -> Any:
    if not isinstance(dtype, np.dtype) or dtype.hasobject or not isinstance(data, bytes):
        raise UserInputError("EDM2 pickle: bad numpy scalar")
    return np.frombuffer(data, dtype=dtype, count=1)[0]


def _latin1_bytes(text: Any, encoding: Any = "latin1") -> bytes:
    """Protocol 2 writes bytes as _codecs.encode(text, 'latin1'); nothing else is accepted."""
    if not isinstance(text, str) or encoding != "latin1":
        raise UserInputError("EDM2 pickle: unexpected use of _codecs.encode")
    return text.encode("latin1")


_NUMPY_MODULES = ("numpy.core.multiarray", "numpy._core.multiarray")
_ALLOWED: dict[tuple[str, str], Any] = {
    ("torch_utils.persistence", "_reconstruct_persistent_obj"): _reconstruct_persistent,
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch.storage", "_load_from_bytes"): _load_storage_bytes,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): _np_dtype,
    **{(m, "_reconstruct"): _np_reconstruct for m in _NUMPY_MODULES},
    **{(m, "scalar"): _np_scalar for m in _NUMPY_MODULES},
    ("copyreg", "_reconstructor"): _reconstructor,
    ("_codecs", "encode"): _latin1_bytes,
    ("torch", "Size"): lambda dims=(): tuple(int(d) for d in dims),
    **_PLAIN_TYPES,
}


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that resolves only `_ALLOWED` globals and never imports a module by itself."""

    def find_class(self, module: str, name: str) -> Any:
        if module in _compat_pickle.IMPORT_MAPPING:  # Python 2 names, written by protocols 0-2
            module, name = _compat_pickle.NAME_MAPPING.get((module, name), (module, name))
            module = _compat_pickle.IMPORT_MAPPING.get(module, module)
        target = _ALLOWED.get((module, name))
        if target is None:
            raise UserInputError(f"refusing to load {module}.{name}: not part of an EDM2 network pickle")
        return target

    def persistent_load(self, pid: Any) -> Any:
        raise UserInputError("EDM2 pickle: persistent ids are not used by EDM2 pickles")


def _loads(data: bytes) -> Any:
    return RestrictedUnpickler(io.BytesIO(data)).load()


def read_edm2_pickle(path: str | os.PathLike) -> Any:
    """Unpickle an EDM2 file into records (see module docstring). One-line UserInputError if refused."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as exc:
        raise UserInputError(f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        return _loads(data)
    except UserInputError as exc:
        raise UserInputError(f"{path}: {exc}") from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError) as exc:
        raise UserInputError(f"{path} is not a readable EDM2 pickle ({type(exc).__name__}: {exc})") from None
