"""A strict CuPy stand-in: device-like arrays on the CPU, for the array-module tests.

This is not a GPU test. It proves that the array module flows through ermlab's code:
that every array a kernel makes comes from ``xp = backend.array_module(x)`` and that
no device array is handed to NumPy (or SciPy's BLAS) or mixed with a NumPy array.

``DeviceArray`` wraps a NumPy array and behaves like ``cupy.ndarray`` where that
matters for us. Reproduced:

* no implicit conversion: ``numpy.asarray(d)`` (``__array__``) raises CuPy's
  ``TypeError: Implicit conversion to a NumPy array is not allowed``, so SciPy, BLAS
  wrappers and anything that coerces with ``numpy.asarray`` fail loudly;
* no mixing: an operator or ufunc with a NumPy array operand raises CuPy's
  ``TypeError: Unsupported type <class 'numpy.ndarray'>`` (NumPy scalars and Python
  numbers are fine, as in CuPy);
* NumPy ufuncs and functions called on device arrays dispatch to the array module
  (CuPy's ``__array_ufunc__`` / ``__array_function__``), and fail where it lacks the
  function;
* ``isinstance(d, numpy.ndarray)`` is False; reductions and integer indexing give
  0-d device arrays, not scalars (``float(d)``, ``int(d)``, ``bool(d)``, ``d.item()``
  and ``d.get()`` copy to the host); NumPy index arrays and NumPy values in
  ``d[key] = value`` are accepted (CuPy copies them to the device);
* the module: ``get_array_module``, ``asnumpy``, ``ndarray``, ``asarray``/``array``
  (the only functions taking host arrays), ``lib.stride_tricks.as_strided`` and the
  NumPy-compatible functions, ufuncs and dtypes; ``__name__ == "cupy"``;
* ``flags`` has only ``c_contiguous``, ``f_contiguous`` and ``owndata``; there is no
  ``ctypes`` and no buffer protocol.

Not reproduced: GPU arithmetic (results are NumPy's, bit for bit, so tests compare
with ``==``; cuBLAS and CUDA kernels round differently), asynchronous execution and
streams, memory pools, ``cupy.random`` (absent here: ermlab draws from NumPy
Generators and copies with ``xp.asarray``), ``cupy.fuse``/``ElementwiseKernel``,
CuPy's differences in type promotion and in which NumPy functions exist (every NumPy
function of the names used is offered).
"""

from __future__ import annotations

import sys
import types
from typing import Any

import numpy

_IMPLICIT = ("Implicit conversion to a NumPy array is not allowed. "
             "Please use `.get()` to construct a NumPy array explicitly.")
# The functions that accept host (NumPy) arrays: they copy them to the device.
_HOST_INPUTS = {"asarray", "array", "asanyarray"}
# Attributes of the module that are not functions to wrap.
_MISSING = {"random", "errstate", "seterr", "geterr", "ctypeslib", "ma", "rec", "char",
            "memmap", "load", "save", "savez", "fromfile", "frombuffer"}


class DeviceFlags:
    """``cupy.ndarray.flags``: three read-only booleans."""

    __slots__ = ("c_contiguous", "f_contiguous", "owndata")

    def __init__(self, a: numpy.ndarray) -> None:
        self.c_contiguous = a.flags.c_contiguous
        self.f_contiguous = a.flags.f_contiguous
        self.owndata = a.flags.owndata


def _unwrap(value: Any, host_ok: bool, owners: dict[int, Any]) -> Any:
    if isinstance(value, DeviceArray):
        owners[id(value._a)] = value
        return value._a
    if isinstance(value, numpy.ndarray):
        if host_ok:
            return value
        raise TypeError(f"Unsupported type {type(value)}")
    if isinstance(value, (list, tuple)):
        return type(value)(_unwrap(v, host_ok, owners) for v in value)
    return value


def _wrap(value: Any, owners: dict[int, Any]) -> Any:
    if isinstance(value, numpy.ndarray):
        owner = owners.get(id(value))
        return DeviceArray(value) if owner is None else owner
    if isinstance(value, numpy.generic):
        return DeviceArray(numpy.asarray(value))
    if isinstance(value, tuple):
        return tuple(_wrap(v, owners) for v in value)
    if isinstance(value, list):
        return [_wrap(v, owners) for v in value]
    return value


def _call(function: Any, args: tuple, kwargs: dict) -> Any:
    owners: dict[int, Any] = {}
    args = _unwrap(args, False, owners)
    kwargs = {k: _unwrap(v, False, owners) for k, v in kwargs.items()}
    return _wrap(function(*args, **kwargs), owners)


class DeviceFunction:
    """A NumPy function (or ufunc) taking and returning device arrays."""

    def __init__(self, function: Any) -> None:
        self._function = function
        self.__name__ = getattr(function, "__name__", "function")

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return _call(self._function, args, kwargs)

    def __getattr__(self, name: str) -> Any:  # ufunc.reduce, .accumulate, .outer, .at ...
        attribute = getattr(self._function, name)
        return DeviceFunction(attribute) if callable(attribute) else attribute


def _binary(ufunc: Any, reflected: bool = False) -> Any:
    def operator(self: DeviceArray, other: Any) -> Any:
        args = (other, self) if reflected else (self, other)
        return _call(ufunc, args, {})
    return operator


def _inplace(ufunc: Any) -> Any:
    def operator(self: DeviceArray, other: Any) -> Any:
        _call(ufunc, (self, other), {"out": self})
        return self
    return operator


_METHODS = {"reshape", "transpose", "astype", "copy", "sum", "mean", "max", "min", "argmax",
            "argmin", "any", "all", "ravel", "flatten", "squeeze", "clip", "dot", "cumsum",
            "prod", "std", "var", "view", "repeat", "take", "swapaxes", "round", "conj",
            "argsort", "nonzero", "diagonal", "trace", "fill", "sort"}
_ATTRIBUTES = {"shape", "dtype", "ndim", "size", "strides", "itemsize", "nbytes"}


class DeviceArray:
    """An array on the (pretend) device; see the module docstring."""

    __slots__ = ("_a",)
    __hash__ = None  # type: ignore[assignment]
    __array_priority__ = 100

    def __init__(self, a: numpy.ndarray) -> None:
        if not isinstance(a, numpy.ndarray):
            raise TypeError(f"DeviceArray wraps a numpy.ndarray; got {type(a).__name__}")
        object.__setattr__(self, "_a", a)

    # -- the host boundary --------------------------------------------------------

    def __array__(self, *args: Any, **kwargs: Any) -> Any:
        raise TypeError(_IMPLICIT)

    def get(self) -> numpy.ndarray:
        """A NumPy copy on the host (``cupy.ndarray.get``)."""
        return self._a.copy()

    def item(self) -> Any:
        return self._a.item()

    def tolist(self) -> Any:
        return self._a.tolist()

    def __float__(self) -> float:
        return float(self._a)

    def __int__(self) -> int:
        return int(self._a)

    def __bool__(self) -> bool:
        return bool(self._a)

    def __format__(self, spec: str) -> str:
        return format(self._a.item() if self._a.ndim == 0 else self._a, spec)

    def __repr__(self) -> str:
        return "device" + repr(self._a)

    # -- NumPy's protocols: dispatch to the array module, as CuPy does ------------

    def __array_ufunc__(self, ufunc: Any, method: str, *inputs: Any, **kwargs: Any) -> Any:
        return _call(getattr(ufunc, method), inputs, kwargs)

    def __array_function__(self, func: Any, types_: Any, args: tuple, kwargs: dict) -> Any:
        if func.__name__ in _MISSING or not hasattr(numpy, func.__name__):
            return NotImplemented
        return _call(func, args, kwargs)

    # -- attributes and methods -----------------------------------------------------

    def __getattr__(self, name: str) -> Any:
        if name in _ATTRIBUTES:
            return getattr(self._a, name)
        if name in _METHODS:
            return DeviceFunction(getattr(self._a, name))
        raise AttributeError(f"the CuPy stand-in's ndarray has no attribute {name!r}")

    @property
    def T(self) -> DeviceArray:
        return DeviceArray(self._a.T)

    @property
    def flags(self) -> DeviceFlags:
        return DeviceFlags(self._a)

    @property
    def base(self) -> Any:
        return None if self._a.base is None else DeviceArray(self._a.base)

    def __len__(self) -> int:
        return len(self._a)

    def __iter__(self) -> Any:
        return (DeviceArray(numpy.asarray(row)) for row in self._a)

    def __getitem__(self, key: Any) -> DeviceArray:
        return DeviceArray(numpy.asarray(self._a[_unwrap(key, True, {})]))

    def __setitem__(self, key: Any, value: Any) -> None:
        self._a[_unwrap(key, True, {})] = _unwrap(value, True, {})

    __add__, __radd__, __iadd__ = _binary(numpy.add), _binary(numpy.add, True), _inplace(numpy.add)
    __sub__, __rsub__ = _binary(numpy.subtract), _binary(numpy.subtract, True)
    __isub__ = _inplace(numpy.subtract)
    __mul__, __rmul__ = _binary(numpy.multiply), _binary(numpy.multiply, True)
    __imul__ = _inplace(numpy.multiply)
    __truediv__, __rtruediv__ = _binary(numpy.true_divide), _binary(numpy.true_divide, True)
    __itruediv__ = _inplace(numpy.true_divide)
    __floordiv__, __rfloordiv__ = _binary(numpy.floor_divide), _binary(numpy.floor_divide, True)
    __mod__, __rmod__ = _binary(numpy.remainder), _binary(numpy.remainder, True)
    __pow__, __rpow__ = _binary(numpy.power), _binary(numpy.power, True)
    __ipow__ = _inplace(numpy.power)
    __matmul__, __rmatmul__ = _binary(numpy.matmul), _binary(numpy.matmul, True)
    __and__, __rand__ = _binary(numpy.bitwise_and), _binary(numpy.bitwise_and, True)
    __or__, __ror__ = _binary(numpy.bitwise_or), _binary(numpy.bitwise_or, True)
    __xor__, __rxor__ = _binary(numpy.bitwise_xor), _binary(numpy.bitwise_xor, True)
    __iand__, __ior__ = _inplace(numpy.bitwise_and), _inplace(numpy.bitwise_or)
    __eq__, __ne__ = _binary(numpy.equal), _binary(numpy.not_equal)  # type: ignore[assignment]
    __lt__, __le__ = _binary(numpy.less), _binary(numpy.less_equal)
    __gt__, __ge__ = _binary(numpy.greater), _binary(numpy.greater_equal)

    def __neg__(self) -> DeviceArray:
        return DeviceArray(-self._a)

    def __pos__(self) -> DeviceArray:
        return DeviceArray(+self._a)

    def __abs__(self) -> DeviceArray:
        return DeviceArray(abs(self._a))

    def __invert__(self) -> DeviceArray:
        return DeviceArray(~self._a)


def _to_device(x: Any, dtype: Any = None, **kwargs: Any) -> DeviceArray:
    """``cupy.asarray`` / ``cupy.array``: a device array as it is (or cast), anything else
    (NumPy arrays, lists, scalars) copied to the device."""
    if isinstance(x, DeviceArray):
        copy = kwargs.get("copy")
        same = dtype is None or numpy.dtype(dtype) == x.dtype
        return x if same and not copy else DeviceArray(x._a.astype(dtype or x.dtype))
    return DeviceArray(numpy.array(x, dtype=dtype, copy=True))


def _as_strided(x: DeviceArray, shape: Any = None, strides: Any = None) -> DeviceArray:
    if not isinstance(x, DeviceArray):
        raise TypeError(f"Unsupported type {type(x)}")
    return DeviceArray(numpy.lib.stride_tricks.as_strided(x._a, shape=shape, strides=strides))


class FakeCupy(types.ModuleType):
    """The stand-in module: ``ndarray``, ``get_array_module``, ``asnumpy`` and NumPy's
    functions, ufuncs, dtypes and constants over device arrays."""

    def __init__(self) -> None:
        super().__init__("cupy", "A strict CuPy stand-in (tests/backend/fake_cupy.py).")
        self.ndarray = DeviceArray
        self.lib = types.SimpleNamespace(
            stride_tricks=types.SimpleNamespace(as_strided=_as_strided))
        self.linalg = types.SimpleNamespace(
            **{name: DeviceFunction(getattr(numpy.linalg, name))
               for name in ("norm", "solve", "cholesky", "eigh", "inv", "qr", "svd", "det")})

    def get_array_module(self, *arrays: Any) -> Any:
        return self if any(isinstance(a, DeviceArray) for a in arrays) else numpy

    def asnumpy(self, x: Any) -> numpy.ndarray:
        return x.get() if isinstance(x, DeviceArray) else numpy.asarray(x)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") or name in _MISSING or not hasattr(numpy, name):
            raise AttributeError(f"the CuPy stand-in has no attribute {name!r}")
        value = getattr(numpy, name)
        if isinstance(value, type) or not callable(value):
            return value  # dtypes (float32, bool_), constants (pi, inf, newaxis)
        if name in ("finfo", "iinfo", "dtype", "result_type", "promote_types", "can_cast",
                    "issubdtype"):
            return value
        if name in _HOST_INPUTS:
            return _to_device
        return DeviceFunction(value)


def device(x: Any) -> DeviceArray:
    """``x`` copied to the pretend device (``cupy.asarray``)."""
    return DeviceArray(numpy.array(x, copy=True))


def host(x: Any) -> numpy.ndarray:
    """``x``, which must be a device array, copied back to NumPy (``x.get()``)."""
    assert isinstance(x, DeviceArray), f"expected a device array, got {type(x).__name__}"
    return x.get()


def fprop_bprop(module: Any, x: Any, grad_out: Any) -> tuple[Any, Any, list[Any]]:
    """``module``'s output, input gradient and parameter gradients for ``x`` and ``grad_out``."""
    y = module.forward(x)
    module.zero_grad()
    gx = module.backward(grad_out)
    return y, gx, [p.grad for p in module.parameters()]


def install(monkeypatch: Any) -> FakeCupy:
    """Make ermlab see the stand-in as CuPy (``ermlab.backend.cupy``); undone by
    ``monkeypatch``."""
    import ermlab.backend

    fake = FakeCupy()
    monkeypatch.setattr(ermlab.backend, "cupy", fake)
    for module in list(sys.modules.values()):
        if (getattr(module, "__name__", "").startswith("ermlab")
                and getattr(module, "cupy", None) is None and "cupy" in vars(module)):
            monkeypatch.setattr(module, "cupy", fake)
    return fake


def to_device(model: Any, xp: FakeCupy) -> Any:
    """Move ``model``'s parameters (zeroed gradients) and buffers to the stand-in device."""
    for param in model.parameters():
        param.data = xp.asarray(param.data)
        param.grad = xp.zeros_like(param.data)
        param.zero_grad()
    for _, module in model.named_modules():
        for name in module._buffers:
            object.__setattr__(module, name, xp.asarray(getattr(module, name)))
    return model
