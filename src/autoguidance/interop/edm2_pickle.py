"""Read EDM2's released network pickles without executing anything they contain.

EDM2 (Karras et al. 2024) saves networks with a "persistent class" mechanism: each network object is
pickled as a call `torch_utils.persistence._reconstruct_persistent_obj(meta)` where `meta` holds the
source code of the defining module, the class name and the object's state (its `__dict__`: constructor
arguments, parameters, buffers, child modules). Loading such a file with `pickle.load` imports that
module source and runs it, i.e. executes whatever the file's author put there.

`read_edm2_pickle` never does. Its unpickler resolves a short allow-list of globals to inert stand-ins:
a persistent object becomes a `PersistentRecord` (class name + state; the source text is kept only as a
hash), plain torch containers become `PlainRecord`s, tensors are rebuilt through `torch.load(...,
weights_only=True)`, numpy arrays and dtypes kept as records of plain numbers and bytes (no object
arrays, no dtype flags taken from the file) until `ArrayRecord.to_numpy`. Any other
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


class NDArrayType:
    """Stands for numpy.ndarray, the subtype argument of numpy's array reconstructor."""


class DTypeRecord:
    """A numpy dtype as pickled: numpy.dtype(spec, align, copy) then BUILD with its state tuple. Kept as
    data (never a real dtype whose pickled flags could misdescribe memory) until `to_numpy`."""

    def __init__(self, spec: Any, align: Any = False, copy: Any = False):
        self.spec = str(spec)
        self.byteorder = "="

    def __setstate__(self, state: Any) -> None:
        if not isinstance(state, tuple) or len(state) < 2 or state[1] not in ("<", ">", "|", "="):
            raise UserInputError("EDM2 pickle: bad numpy dtype state")
        self.byteorder = state[1]

    def to_numpy(self) -> np.dtype:
        if self.spec not in _NUMERIC_DTYPES:
            raise UserInputError(
                f"EDM2 pickle: numpy dtype {self.spec!r} is not allowed (plain numbers only)"
            )
        dt = np.dtype(self.spec)
        return dt.newbyteorder(self.byteorder) if self.byteorder in "<>" else dt


class ArrayRecord:
    """A numpy array as pickled (reconstruct, then BUILD with (version, shape, dtype, fortran, bytes));
    `to_numpy` copies the bytes into a fresh array of a plain numeric dtype."""

    def __setstate__(self, state: Any) -> None:
        if isinstance(state, tuple) and len(state) == 5:
            state = state[1:]
        if not (isinstance(state, tuple) and len(state) == 4 and isinstance(state[1], DTypeRecord)):
            raise UserInputError("EDM2 pickle: bad numpy array state")
        self.shape, self.dtype, self.fortran, self.data = state

    def to_numpy(self) -> np.ndarray:
        raw = self.data.encode("latin1") if isinstance(self.data, str) else self.data
        if not isinstance(raw, bytes):
            raise UserInputError("EDM2 pickle: numpy array data is not a byte string")
        shape = tuple(int(d) for d in self.shape)
        dt = self.dtype.to_numpy()
        if len(raw) != dt.itemsize * int(np.prod(shape)):
            raise UserInputError("EDM2 pickle: numpy array data does not match its shape")
        return np.frombuffer(raw, dtype=dt).reshape(shape, order="F" if self.fortran else "C").copy()


_NUMERIC_DTYPES = frozenset(
    {"b1", "i1", "i2", "i4", "i8", "u1", "u2", "u4", "u8", "f2", "f4", "f8", "c8", "c16", "bool"}
)


def _np_reconstruct(subtype: Any, shape: Any = None, dtype: Any = None) -> ArrayRecord:
    if subtype is not NDArrayType:
        raise UserInputError("EDM2 pickle: only plain numpy arrays are allowed")
    return ArrayRecord()


def _np_frombuffer(buffer: Any, dtype: Any, shape: Any, order: Any) -> ArrayRecord:
    """Protocol 5's array form: numpy's _frombuffer(bytes, dtype, shape, order)."""
    rec = ArrayRecord()
    if not isinstance(dtype, DTypeRecord) or order not in ("C", "F"):
        raise UserInputError("EDM2 pickle: bad numpy array")
    rec.shape, rec.dtype, rec.fortran = shape, dtype, order == "F"
    rec.data = bytes(buffer) if isinstance(buffer, (bytes, bytearray)) else buffer
    return rec


def _np_scalar(dtype: Any, data: Any = None) -> Any:
    if not isinstance(dtype, DTypeRecord) or not isinstance(data, (bytes, str)):
        raise UserInputError("EDM2 pickle: bad numpy scalar")
    raw = data.encode("latin1") if isinstance(data, str) else data
    dt = dtype.to_numpy()
    if len(raw) != dt.itemsize:
        raise UserInputError("EDM2 pickle: bad numpy scalar")
    return np.frombuffer(raw, dtype=dt, count=1)[0].item()


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
    ("numpy", "ndarray"): NDArrayType,
    ("numpy", "dtype"): DTypeRecord,
    **{(m, "_reconstruct"): _np_reconstruct for m in _NUMPY_MODULES},
    **{(m, "scalar"): _np_scalar for m in _NUMPY_MODULES},
    **{(m, "_frombuffer"): _np_frombuffer for m in ("numpy.core.numeric", "numpy._core.numeric")},
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
