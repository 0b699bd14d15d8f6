"""THE restricted unpickler: a pickle becomes inert records; nothing it names is imported or run.

Unpickling runs code: a pickle can name any importable callable (os.system, builtins.eval) and call it,
and EDM2's "persistent classes" carry their module's source text, which `pickle.load` would execute. The
only ways a pickle reaches code are global references (GLOBAL / STACK_GLOBAL, through `find_class`) and
persistent ids (`persistent_load`). Here `find_class` hands out stand-ins from a fixed table and never
imports a module; `persistent_load` refuses. What comes out is plain Python data plus:

- `PersistentRecord`: an EDM2 persistent object of *any* class (a network module, a loss, an encoder, a
  user's own class): its class name and pickled state, the source text kept only as a SHA-256.
- `ObjectRecord`: a plain container pickled by class (torch's ModuleDict / ModuleList): its state.
  `EasyDictRecord`, a dict subclass: dnnlib's EasyDict, the top level of every EDM2 snapshot.
- torch tensors, rebuilt only after their storage's dtype, size, strides and offset have been checked
  against the bytes actually present (`_rebuild_tensor`), so a short file cannot ask for terabytes.
- `ArrayRecord` / `DTypeRecord`: numpy arrays as bytes + shape + a plain numeric dtype (`to_numpy`).

Any other global raises `RefusedPickleError` (a `UserInputError`: one line, exit status 2) before it could
be called. `to_plain` turns records of containers and arrays into dicts, lists and numpy arrays (EDM2's
reference statistics); `edm2_network` (io/edm2_files.py) reads networks out of the records.
"""

from __future__ import annotations

import _compat_pickle
import collections
import hashlib
import io
import math
import os
import pickle
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import UserInputError

MAX_DEPTH = 200  # deeper nesting than any network or statistics file has: refused, never recursed into


class RefusedPickleError(UserInputError):
    """A pickle named something outside the table, or was not a readable pickle. One line."""


@dataclass
class PersistentRecord:
    """What an EDM2 persistent object becomes: its class name and pickled state, no code."""

    class_name: str
    state: dict[str, Any]
    source_sha256: str
    version: Any = None

    @property
    def init_kwargs(self) -> dict[str, Any]:
        kwargs = self.state.get("_init_kwargs")
        return dict(kwargs) if isinstance(kwargs, dict) else {}

    @property
    def init_args(self) -> tuple:
        args = self.state.get("_init_args")
        return tuple(args) if isinstance(args, (tuple, list)) else ()

    @property
    def modules(self) -> dict[str, Any]:
        """Child modules (a torch module's `_modules`), in order."""
        return _modules_of(self.state)

    def attributes(self) -> dict[str, Any]:
        """The object's own plain attributes: its state without torch's module bookkeeping."""
        inner = (PersistentRecord, torch.Tensor)
        return {
            k: v
            for k, v in self.state.items()
            if not k.startswith("_") and k != "training" and not isinstance(v, inner)
        }


class ObjectRecord:
    """A plain container pickled by class (NEWOBJ / copyreg._reconstructor, then BUILD): its state."""

    type_name = "?"
    state: Any = None  # NEWOBJ creates the object without __init__; BUILD then sets this

    def __setstate__(self, state: Any) -> None:  # BUILD: keep the state, run nothing
        self.state = state

    @property
    def modules(self) -> dict[str, Any]:
        return _modules_of(self.state)


class EasyDictRecord(dict):
    """dnnlib.util.EasyDict (a dict subclass): a plain dict here."""

    type_name = "EasyDict"

    def __setstate__(self, state: Any) -> None:
        if state:  # EasyDict pickles its items through SETITEMS; a state dict would only repeat them
            if not isinstance(state, dict):
                raise RefusedPickleError("an EasyDict with a state that is not a dict")
            self.update(state)


def _modules_of(state: Any) -> dict[str, Any]:
    modules = state.get("_modules") if isinstance(state, dict) else None
    return dict(modules) if isinstance(modules, dict) else {}


_CONTAINER_TYPES = {
    ("torch.nn.modules.container", name): type(name, (ObjectRecord,), {"type_name": name})
    for name in ("ModuleDict", "ModuleList", "Sequential")
}
_CONTAINER_TYPES[("dnnlib.util", "EasyDict")] = EasyDictRecord


def _reconstruct_persistent(meta: Any) -> PersistentRecord:
    """EDM2's `persistence._reconstruct_persistent_obj(meta)`: a record instead of running meta's source."""
    if not isinstance(meta, dict) or meta.get("type") != "class":
        raise RefusedPickleError("a persistent object without a class record")
    name, state = meta.get("class_name"), meta.get("state")
    if not isinstance(name, str) or not isinstance(state, dict):
        raise RefusedPickleError("a persistent object without a class name and state dictionary")
    src = meta.get("module_src")
    digest = hashlib.sha256(src.encode() if isinstance(src, str) else b"").hexdigest()
    return PersistentRecord(name, state, digest, meta.get("version"))


def _reconstructor(cls: Any, base: Any, state: Any = None) -> Any:
    """copyreg._reconstructor (protocols 0 and 1), restricted to our container records."""
    if not (isinstance(cls, type) and issubclass(cls, (ObjectRecord, EasyDictRecord))):
        raise RefusedPickleError("refusing to reconstruct an object of an unknown type")
    if base is not object and not (cls is EasyDictRecord and base is dict):
        raise RefusedPickleError("refusing to reconstruct an object of an unknown type")
    return cls()


# --- tensors ----------------------------------------------------------------------------------------
# torch pickles a storage as `torch.storage._load_from_bytes(b)`, b being its legacy serialisation:
# four small pickles (magic number, protocol version, system info, the storage's persistent id) and the
# list of storage keys, then per key an int64 element count and the raw little-endian elements.
_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_LEGACY_PROTOCOL = 1001
_STORAGE_DTYPES = {
    "HalfStorage": torch.float16,
    "BFloat16Storage": torch.bfloat16,
    "FloatStorage": torch.float32,
    "DoubleStorage": torch.float64,
    "ByteStorage": torch.uint8,
    "CharStorage": torch.int8,
    "ShortStorage": torch.int16,
    "IntStorage": torch.int32,
    "LongStorage": torch.int64,
    "BoolStorage": torch.bool,
}
MAX_DIMS = 32


@dataclass(frozen=True)
class _StorageType:
    dtype: torch.dtype


class _StorageUnpickler(pickle.Unpickler):
    """Reads the small pickles inside a legacy storage: storage types only, one kind of persistent id."""

    def find_class(self, module: str, name: str) -> Any:
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(_STORAGE_DTYPES[name])
        raise RefusedPickleError(f"a tensor storage references {module}.{name}")

    def persistent_load(self, pid: Any) -> Any:
        ok = isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage"
        ok = ok and isinstance(pid[1], _StorageType) and isinstance(pid[2], str) and _is_int(pid[4])
        if not ok or (len(pid) > 5 and pid[5] is not None):
            raise RefusedPickleError("a tensor storage with an unknown persistent id")
        return pid[1].dtype, pid[2], int(pid[4])


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _load_storage_bytes(data: Any) -> torch.Tensor:
    """`torch.storage._load_from_bytes`: the storage as a flat tensor, its length checked against the
    bytes present before anything is allocated."""
    if not isinstance(data, bytes):
        raise RefusedPickleError("a tensor storage is not a byte string")
    f = io.BytesIO(data)
    try:
        header = [_StorageUnpickler(f).load() for _ in range(4)]
        keys = _StorageUnpickler(f).load()
    except RefusedPickleError:
        raise
    except Exception as exc:
        raise RefusedPickleError(f"an unreadable tensor storage ({type(exc).__name__})") from None
    magic, protocol, sys_info, (dtype, key, numel) = header[0], header[1], header[2], header[3]
    if magic != _LEGACY_MAGIC or protocol != _LEGACY_PROTOCOL or keys != [key]:
        raise RefusedPickleError("a tensor storage in an unknown format")
    if not isinstance(sys_info, dict) or sys_info.get("little_endian") is not True:
        raise RefusedPickleError("a tensor storage that is not little-endian")
    (count,) = struct.unpack("<q", f.read(8).ljust(8, b"\0"))
    itemsize = torch.empty((), dtype=dtype).element_size()
    raw = f.read()
    if count != numel or count < 0 or len(raw) != count * itemsize:
        raise RefusedPickleError(
            f"a tensor storage declares {numel} elements but holds {len(raw) // itemsize}"
        )
    if count == 0:
        return torch.empty(0, dtype=dtype)
    return torch.frombuffer(bytearray(raw), dtype=dtype)


def _rebuild_tensor(storage: Any, offset: Any, size: Any, stride: Any, *rest: Any) -> torch.Tensor:
    """torch._utils._rebuild_tensor_v2: the view (offset, size, stride) of a storage, checked to lie
    inside it (torch itself would grow the storage to fit, allocating whatever the file declares)."""
    if not isinstance(storage, torch.Tensor) or storage.ndim != 1:
        raise RefusedPickleError("a tensor without a storage")
    size, stride = tuple(size) if isinstance(size, (tuple, list)) else None, tuple(stride or ())
    ok = size is not None and len(size) == len(stride) <= MAX_DIMS and _is_int(offset) and offset >= 0
    ok = ok and all(_is_int(v) and v >= 0 for v in size + stride)
    if not ok:
        raise RefusedPickleError("a tensor with a malformed size, stride or offset")
    hooks = rest[1] if len(rest) > 1 else None
    if hooks:  # backward hooks are code: EDM2 never pickles any
        raise RefusedPickleError("a tensor with backward hooks")
    if math.prod(size) > 0:
        last = offset + sum((n - 1) * s for n, s in zip(size, stride, strict=True))
        if last >= storage.numel():
            raise RefusedPickleError(
                f"a tensor of size {list(size)} reaches element {last} of a storage of {storage.numel()}"
            )
    elif offset > storage.numel():
        raise RefusedPickleError("a tensor whose offset lies outside its storage")
    return torch.as_strided(storage, size, stride, offset).clone()


def _rebuild_parameter(data: Any, requires_grad: Any = False, hooks: Any = None, *rest: Any) -> torch.Tensor:
    if not isinstance(data, torch.Tensor) or hooks:
        raise RefusedPickleError("a parameter without tensor data, or with backward hooks")
    return data  # a plain tensor: only the values are read


# --- numpy ------------------------------------------------------------------------------------------
_NUMERIC_DTYPES = frozenset(
    {"b1", "i1", "i2", "i4", "i8", "u1", "u2", "u4", "u8", "f2", "f4", "f8", "c8", "c16", "bool"}
)


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
            raise RefusedPickleError("a bad numpy dtype state")
        self.byteorder = state[1]

    def to_numpy(self) -> np.dtype:
        if self.spec not in _NUMERIC_DTYPES:
            raise RefusedPickleError(f"numpy dtype {self.spec!r} is not allowed (plain numbers only)")
        dt = np.dtype(self.spec)
        return dt.newbyteorder(self.byteorder) if self.byteorder in "<>" else dt


class ArrayRecord:
    """A numpy array as pickled (reconstruct, then BUILD with (version, shape, dtype, fortran, bytes));
    `to_numpy` copies the bytes into a fresh array of a plain numeric dtype."""

    def __setstate__(self, state: Any) -> None:
        if isinstance(state, tuple) and len(state) == 5:
            state = state[1:]
        if not (isinstance(state, tuple) and len(state) == 4 and isinstance(state[1], DTypeRecord)):
            raise RefusedPickleError("a bad numpy array state")
        self.shape, self.dtype, self.fortran, self.data = state

    def to_numpy(self) -> np.ndarray:
        raw = self.data.encode("latin1") if isinstance(self.data, str) else self.data
        if not isinstance(raw, bytes):
            raise RefusedPickleError("numpy array data is not a byte string")
        if not isinstance(self.shape, tuple) or not all(_is_int(d) and d >= 0 for d in self.shape):
            raise RefusedPickleError("a numpy array with a malformed shape")
        dt = self.dtype.to_numpy()
        if len(raw) != dt.itemsize * math.prod(self.shape):
            raise RefusedPickleError("numpy array data does not match its shape")
        return np.frombuffer(raw, dtype=dt).reshape(self.shape, order="F" if self.fortran else "C").copy()


def _np_reconstruct(subtype: Any, shape: Any = None, dtype: Any = None) -> ArrayRecord:
    if subtype is not NDArrayType:
        raise RefusedPickleError("only plain numpy arrays are allowed")
    return ArrayRecord()


def _np_frombuffer(buffer: Any, dtype: Any, shape: Any, order: Any) -> ArrayRecord:
    """Protocol 5's array form: numpy's _frombuffer(bytes, dtype, shape, order)."""
    if not isinstance(dtype, DTypeRecord) or order not in ("C", "F"):
        raise RefusedPickleError("a bad numpy array")
    rec = ArrayRecord()
    rec.shape, rec.dtype, rec.fortran = tuple(shape), dtype, order == "F"
    rec.data = bytes(buffer) if isinstance(buffer, (bytes, bytearray)) else buffer
    return rec


def _np_scalar(dtype: Any, data: Any = None) -> Any:
    if not isinstance(dtype, DTypeRecord) or not isinstance(data, (bytes, str)):
        raise RefusedPickleError("a bad numpy scalar")
    raw = data.encode("latin1") if isinstance(data, str) else data
    dt = dtype.to_numpy()
    if len(raw) != dt.itemsize:
        raise RefusedPickleError("a bad numpy scalar")
    return np.frombuffer(raw, dtype=dt, count=1)[0].item()


def _latin1_bytes(text: Any, encoding: Any = "latin1") -> bytes:
    """Protocol 2 writes bytes as _codecs.encode(text, 'latin1'); nothing else is accepted."""
    if not isinstance(text, str) or encoding != "latin1":
        raise RefusedPickleError("an unexpected use of _codecs.encode")
    return text.encode("latin1")


def _torch_size(dims: Any = ()) -> tuple[int, ...]:
    if not isinstance(dims, (tuple, list)) or not all(_is_int(d) for d in dims):
        raise RefusedPickleError("a malformed torch.Size")
    return tuple(dims)


# numpy moved its internals from numpy.core to numpy._core in 2.0; pickles name either.
_NUMPY_CORES = ("numpy.core", "numpy._core")
ALLOWED: dict[tuple[str, str], Any] = {
    ("torch_utils.persistence", "_reconstruct_persistent_obj"): _reconstruct_persistent,
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("builtins", "complex"): complex,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch.storage", "_load_from_bytes"): _load_storage_bytes,
    ("torch", "Size"): _torch_size,
    ("numpy", "ndarray"): NDArrayType,
    ("numpy", "dtype"): DTypeRecord,
    **{(f"{core}.multiarray", "_reconstruct"): _np_reconstruct for core in _NUMPY_CORES},
    **{(f"{core}.multiarray", "scalar"): _np_scalar for core in _NUMPY_CORES},
    **{(f"{core}.numeric", "_frombuffer"): _np_frombuffer for core in _NUMPY_CORES},
    ("copyreg", "_reconstructor"): _reconstructor,
    ("_codecs", "encode"): _latin1_bytes,
    **_CONTAINER_TYPES,
}


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that resolves only `ALLOWED` globals, to stand-ins, and never imports a module."""

    def find_class(self, module: str, name: str) -> Any:
        # Protocols 0-2 write Python 2 names (__builtin__.set); map them as pickle's own find_class does.
        # The table lookup comes after, on the Python 3 name.
        if (module, name) in _compat_pickle.NAME_MAPPING:
            module, name = _compat_pickle.NAME_MAPPING[(module, name)]
        module = _compat_pickle.IMPORT_MAPPING.get(module, module)
        target = ALLOWED.get((module, name))
        if target is None:
            raise RefusedPickleError(f"it references {module}.{name}, which could run code")
        return target

    def persistent_load(self, pid: Any) -> Any:
        raise RefusedPickleError("it uses persistent ids, which no network or statistics file does")


def loads(data: bytes, source: str = "pickle") -> Any:
    """Unpickle `data` into records; RefusedPickleError (one line naming `source`) for anything refused
    or malformed."""
    if not data:
        raise RefusedPickleError(f"cannot read {source} as a pickle: the file is empty")
    try:
        obj = RestrictedUnpickler(io.BytesIO(data)).load()
        check_depth(obj)
        return obj
    except RefusedPickleError as exc:
        raise RefusedPickleError(f"refusing to load {source}: {exc}") from None
    except RecursionError:
        raise RefusedPickleError(f"refusing to load {source}: it is nested too deeply") from None
    except Exception as exc:  # truncated or corrupt data raises many types (UnpicklingError, EOFError, ...)
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise RefusedPickleError(f"cannot read {source} as a pickle: {first}") from None


def load(path: str | os.PathLike) -> Any:
    """Read and restricted-unpickle the file at `path` (see `loads`)."""
    p = Path(path)
    try:
        data = p.read_bytes()
    except OSError as exc:
        raise UserInputError(f"cannot read {str(p)!r}: {exc.strerror or exc}") from None
    return loads(data, source=str(p))


def _children(obj: Any) -> list[Any]:
    if isinstance(obj, dict):
        return [*obj.keys(), *obj.values()]
    if isinstance(obj, (list, tuple, set, frozenset)):
        return list(obj)
    if isinstance(obj, PersistentRecord):
        return [obj.state]
    if isinstance(obj, ObjectRecord):
        return [obj.state]
    return []


def check_depth(obj: Any, limit: int = MAX_DEPTH) -> None:
    """Refuse containers nested deeper than `limit` (walked without recursion), so that nothing later
    (a walk over the records, printing them) can exhaust the stack."""
    stack, seen = [(obj, 0)], set()
    while stack:
        item, depth = stack.pop()
        if id(item) in seen:
            continue
        seen.add(id(item))
        if depth > limit:
            raise RefusedPickleError(f"containers nested deeper than {limit} levels")
        stack.extend((child, depth + 1) for child in _children(item))


def to_plain(obj: Any) -> Any:
    """Records of containers and arrays -> dicts, lists, tuples and numpy arrays (statistics files)."""
    if isinstance(obj, ArrayRecord):
        return obj.to_numpy()
    if isinstance(obj, dict):
        return {k: to_plain(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [to_plain(v) for v in obj]
    if isinstance(obj, tuple):
        return tuple(to_plain(v) for v in obj)
    return obj


def to_json(obj: Any, depth: int = 0) -> Any:
    """A JSON-able description of records, for people (`autoguidance info`) and provenance: persistent
    objects as their class, constructor arguments and plain attributes; tensors and arrays by shape."""
    if depth > 8:
        return "..."
    if isinstance(obj, PersistentRecord):
        out: dict[str, Any] = {"class": obj.class_name}
        if obj.init_args:
            out["init_args"] = to_json(list(obj.init_args), depth + 1)
        if obj.init_kwargs:
            out["init_kwargs"] = to_json(obj.init_kwargs, depth + 1)
        if obj.attributes():
            out["attributes"] = to_json(obj.attributes(), depth + 1)
        return out
    if isinstance(obj, ObjectRecord):
        return {"type": obj.type_name}
    if isinstance(obj, ArrayRecord):
        arr = obj.to_numpy()
        return arr.tolist() if arr.size <= 16 else f"array {list(arr.shape)} {arr.dtype}"
    if isinstance(obj, torch.Tensor):
        return obj.tolist() if obj.numel() <= 16 else f"tensor {list(obj.shape)} {obj.dtype}"
    if isinstance(obj, dict):
        return {str(k): to_json(v, depth + 1) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set, frozenset)):
        return [to_json(v, depth + 1) for v in obj]
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    if isinstance(obj, bytes):
        return f"<{len(obj)} bytes>"
    return str(obj)
