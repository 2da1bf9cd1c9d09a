"""Deterministic fingerprints for datasets and the transforms applied to them.

A map/filter result is cached under a key made from the input dataset's fingerprint,
the function (its code, defaults, closure values and the globals it reads) and the
call's arguments. Everything is hashed by value, so the same call in a new process
finds the same key; a value that cannot be hashed is an error that names it, never a
random key that silently disables the cache.
"""

import builtins
import hashlib
import pickle
import types



class UnhashableError(TypeError):
    """A function or argument of map/filter whose value cannot be hashed for the cache."""


def _update_with(h, value, path: str, seen: set):
    """Feed `value` into hash `h`; `path` names it in errors ("fn.closure['tok']")."""
    if isinstance(value, types.FunctionType):
        _update_function(h, value, path, seen)
    elif isinstance(value, types.MethodType):
        h.update(b"method")
        _update_with(h, value.__func__, f"{path}.__func__", seen)
        _update_with(h, value.__self__, f"{path}.__self__", seen)
    elif isinstance(value, types.ModuleType):
        h.update(b"module:" + value.__name__.encode())
    elif isinstance(value, types.CodeType):
        _update_code(h, value, path, seen)
    elif isinstance(value, (types.BuiltinFunctionType, type)):
        h.update(f"{type(value).__name__}:{getattr(value, '__module__', '')}.{value.__qualname__}".encode())
    elif isinstance(value, (list, tuple)):
        h.update(f"{type(value).__name__}:{len(value)}".encode())
        for i, item in enumerate(value):
            _update_with(h, item, f"{path}[{i}]", seen)
    elif isinstance(value, dict):
        h.update(f"dict:{len(value)}".encode())
        for key in sorted(value, key=repr):
            h.update(repr(key).encode())
            _update_with(h, value[key], f"{path}[{key!r}]", seen)
    elif isinstance(value, (set, frozenset)):
        h.update(f"{type(value).__name__}:{len(value)}".encode())
        for digest in sorted(hash_value(item, f"{path} item") for item in value):
            h.update(digest.encode())
    elif isinstance(value, (str, bytes, int, float, bool, complex, type(None))):
        h.update(f"{type(value).__name__}:{value!r}".encode())
    elif isinstance(getattr(value, "_fingerprint", None), str):
        h.update(b"fingerprint:" + value._fingerprint.encode())
    elif hasattr(value, "__dict__") and not isinstance(value, type) and type(value).__reduce__ is object.__reduce__:
        # A plain Python object: its class and attributes by value (a pickle of one may hold
        # sets whose order changes between processes).
        if id(value) in seen:
            h.update(b"cycle")
            return
        h.update(f"object:{type(value).__module__}.{type(value).__qualname__}".encode())
        _update_with(h, {k: v for k, v in vars(value).items()}, path, seen | {id(value)})
    else:
        try:
            h.update(pickle.dumps(value, protocol=4))
        except Exception as err:
            raise UnhashableError(
                f"cannot hash {path} (a {type(value).__name__}) for the dataset cache: {err}. Pass it as an "
                "argument that can be pickled, or use load_from_cache_file=False / new_fingerprint=..."
            ) from None


def _update_code(h, code: types.CodeType, path: str, seen: set):
    h.update(code.co_code)
    h.update(repr(code.co_names).encode())
    h.update(repr(code.co_varnames).encode())
    for i, const in enumerate(code.co_consts):
        if isinstance(const, types.CodeType):
            _update_code(h, const, f"{path}.<{const.co_name}>", seen)
        else:
            h.update(repr(const).encode())


def _global_names(code: types.CodeType) -> set:
    names = set(code.co_names)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names |= _global_names(const)
    return names


def _update_function(h, fn: types.FunctionType, path: str, seen: set):
    if id(fn) in seen:  # recursion (a function that calls itself through a global)
        h.update(b"recursive:" + fn.__qualname__.encode())
        return
    seen = seen | {id(fn)}
    h.update(b"function:" + fn.__qualname__.encode())
    _update_code(h, fn.__code__, path, seen)
    _update_with(h, fn.__defaults__ or (), f"{path}.__defaults__", seen)
    _update_with(h, fn.__kwdefaults__ or {}, f"{path}.__kwdefaults__", seen)
    for name, cell in zip(fn.__code__.co_freevars, fn.__closure__ or ()):
        try:
            value = cell.cell_contents
        except ValueError:  # an empty cell (a name assigned later in the outer function)
            value = None
        h.update(name.encode())
        _update_with(h, value, f"{path} closure variable {name!r}", seen)
    for name in sorted(_global_names(fn.__code__)):
        if name in fn.__globals__:
            h.update(b"global:" + name.encode())
            _update_with(h, fn.__globals__[name], f"{path} global {name!r}", seen)
        elif not hasattr(builtins, name):
            h.update(b"attr:" + name.encode())  # an attribute name (obj.name), part of the code


def hash_value(value, name: str = "value") -> str:
    """Hex digest of `value` (a function, arguments, ...) by content."""
    h = hashlib.sha256()
    _update_with(h, value, name, set())
    return h.hexdigest()[:16]


def combine(*parts) -> str:
    """Fingerprint of a transform: the input's fingerprint plus hashes of its arguments."""
    h = hashlib.sha256()
    for part in parts:
        h.update(str(part).encode())
        h.update(b"\0")
    return h.hexdigest()[:16]
