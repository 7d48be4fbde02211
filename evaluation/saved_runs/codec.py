"""A safe format for checkpoints: JSON with type tags, which cannot run code when read.

An env's or agent's state (:meth:`~marketarena.agents.Resumable.get_state`,
:meth:`~marketarena.envs.PortfolioEnv.get_state`) is nested Python and numpy values. JSON
holds ``None``, bools, ints, floats (``NaN`` and infinities included), strings, lists and
dicts with string keys as they are; everything else is an object ``{"$t": TAG, ...}``:

=================  =============================================================
``tuple``          ``items``
``dict``           ``items`` as ``[key, value]`` pairs (keys that are not strings)
``set``            ``items``; ``frozenset`` likewise
``deque``          ``items`` and ``maxlen``
``bytes``          ``b64``
``nd``             a numpy array: ``dtype`` (``dtype.str``), ``shape``, ``order``
                   (``C`` or ``F``) and ``b64``, the raw bytes (never ``np.save``)
``nd_obj``         an object array: ``shape`` and its ``items`` in C order
``np``             a numpy scalar (``datetime64`` included): ``dtype`` and ``b64``
``rng``            a ``numpy.random.Generator``: ``bit_generator`` (its class name) and
                   ``state`` (``bit_generator.state``); ``bit_generator`` alone for a bare one
``random_state``   a legacy ``numpy.random.RandomState``: ``state`` (``get_state()``)
``enum``           ``cls`` and ``name``
``obj``            ``cls`` and ``state``: an instance of an allowlisted class (a dataclass or
                   a plain object), rebuilt with ``cls.__new__`` and ``__setstate__`` or its
                   ``__dict__``; its ``__init__`` is not called
``ref``            ``id``: the object first written with ``"$id": id`` (shared references
                   and cycles stay shared, as ``copy.deepcopy`` and pickle keep them)
=================  =============================================================

Classes are named by ``module.qualname`` and must be in :data:`ALLOWED_CLASSES` (or added
with :func:`allow_state_class`): reading a state that names any other (``os.system``) is an
:class:`UnsafeStateError`, and nothing named by the data is imported or called. Writing a
value of a type the codec does not know is a :class:`StateEncodeError` naming the type and
where it was in the state (``agent_state.prompts.settings``).
"""

from __future__ import annotations

import base64
import dataclasses
import enum
import importlib
import json
from collections import deque
from collections.abc import Callable
from typing import Any, Literal

import numpy as np

from marketarena.envs.errors import ConfigError, DataError

FORMAT = "json"  # checkpoints.format in the run store
VERSION = 1
_HEADER = "marketarena-state"
_TAG = "$t"

# the marketarena classes whose instances env and agent states hold: an LLM agent's decisions
# (a tool agent's, with their transcripts) and prompt builder (its settings, the news it
# loaded); an ensemble's or allocator's shadow
# returns and selections; the envs' states and the other agents' are plain values, arrays
# and numpy generators
ALLOWED_CLASSES: frozenset[str] = frozenset(
    {
        "marketarena.agents.llm_agent.Decision",
        "marketarena.agents.llm_prompt.PromptBuilder",
        "marketarena.agents.llm_tool_agent.ToolDecision",
        "marketarena.agents.llm_prompt.PromptSettings",
        "marketarena.envs.news.NewsEvents",
        "marketarena.evaluation.ensembles._ShadowReturns",
        "marketarena.evaluation.ensembles.Selection",
    }
)
_BIT_GENERATORS: dict[str, Callable[[], np.random.BitGenerator]] = {
    "PCG64": np.random.PCG64,
    "PCG64DXSM": np.random.PCG64DXSM,
    "MT19937": np.random.MT19937,
    "Philox": np.random.Philox,
    "SFC64": np.random.SFC64,
}
_registered: dict[str, type] = {}


class StateEncodeError(ConfigError):
    """A state holds a value the codec cannot write (the message names its type and where
    it was); nothing was stored."""


class UnsafeStateError(DataError):
    """A stored state that cannot be read safely or at all: a class outside the allowlist,
    an unknown tag, malformed data."""


def class_name(cls: type) -> str:
    """``module.qualname``, as states name classes (``marketarena.`` for the subpackages)."""
    return f"{cls.__module__}.{cls.__qualname__}"


def allow_state_class(cls: type) -> type:
    """Let states hold instances of ``cls`` (a plugin agent's own class); returns ``cls``,
    so it works as a class decorator."""
    _registered[class_name(cls)] = cls
    return cls


def dumps(state: Any, where: str = "state") -> bytes:
    """``state`` as UTF-8 JSON bytes; ``where`` names it in errors (default ``state``)."""
    encoder = _Encoder()
    encoder.count(state)
    value = encoder.encode(state, where)
    document = {"format": _HEADER, "version": VERSION, "value": value}
    return json.dumps(document, separators=(",", ":"), allow_nan=True).encode()


def loads(data: bytes, where: str = "state") -> Any:
    """The state :func:`dumps` wrote; ``where`` names it in errors (default ``state``)."""
    try:
        document = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UnsafeStateError(f"{where} is not a stored state: {exc}") from None
    if not (isinstance(document, dict) and document.get("format") == _HEADER):
        raise UnsafeStateError(f"{where} is not a stored state (no {_HEADER!r} header)")
    if document.get("version") != VERSION:
        raise UnsafeStateError(
            f"{where} has state version {document.get('version')!r}; this marketarena reads "
            f"version {VERSION}"
        )
    return _Decoder(where).decode(document.get("value"), where)


# --------------------------------------------------------------------------- writing
_PLAIN = frozenset({type(None), bool, int, float, str})  # written as they are
_LEAVES = (bytes, np.generic, enum.Enum)  # no identity to keep, nothing inside


def _tracked(value: Any) -> bool:
    """Values whose identity the state keeps (mutable or object-like)."""
    return not isinstance(value, (*_LEAVES, tuple, frozenset))


class _Encoder:
    def __init__(self) -> None:
        self.seen: dict[int, int] = {}  # id -> times reached
        self.keep: list[Any] = []  # holds every counted value, so that no id is reused
        self.ids: dict[int, int] = {}  # id of a shared value -> its "$id"

    # the first pass finds the values reached more than once
    def count(self, value: Any) -> None:
        if type(value) in _PLAIN or isinstance(value, _LEAVES):
            return
        if _tracked(value):
            key = id(value)
            self.seen[key] = self.seen.get(key, 0) + 1
            if self.seen[key] > 1:
                return
            self.keep.append(value)
        for child in _children(value):
            if type(child) not in _PLAIN:
                self.count(child)

    def encode(self, value: Any, path: str) -> Any:
        if type(value) in _PLAIN:
            return value
        if isinstance(value, np.generic):  # before the rest: date histories hold many
            if value.dtype.fields is not None or value.dtype.hasobject:
                raise self._refuse(value, path, "a structured or object numpy scalar")
            return {_TAG: "np", "dtype": value.dtype.str, "b64": _b64(value.tobytes())}
        key = id(value)
        if _tracked(value) and self.seen.get(key, 0) > 1:
            if key in self.ids:
                return {_TAG: "ref", "id": self.ids[key]}
            self.ids[key] = len(self.ids)
            node = self._node(value, path, shared=True)
            node["$id"] = self.ids[key]
            return node
        return self._node(value, path, shared=False)

    def _node(self, value: Any, path: str, *, shared: bool) -> Any:
        if type(value) is list:
            items = self._items(value, path)
            return {_TAG: "list", "items": items} if shared else items
        if type(value) is dict:
            if not shared and all(type(k) is str for k in value) and _TAG not in value:
                return {
                    k: v if type(v) in _PLAIN else self.encode(v, f"{path}[{k!r}]")
                    for k, v in value.items()
                }
            pairs = [
                [self.encode(k, f"{path} key {k!r}"), self.encode(v, f"{path}[{k!r}]")]
                for k, v in value.items()
            ]
            return {_TAG: "dict", "items": pairs}
        if isinstance(value, enum.Enum):
            return {_TAG: "enum", "cls": self._allowed(type(value), path), "name": value.name}
        if type(value) is tuple:
            return {_TAG: "tuple", "items": self._items(value, path)}
        if type(value) in (set, frozenset):
            tag = "set" if type(value) is set else "frozenset"
            return {_TAG: tag, "items": self._items(sorted(value, key=repr), path)}
        if type(value) is deque:
            return {_TAG: "deque", "items": self._items(value, path), "maxlen": value.maxlen}
        if type(value) is bytes:
            return {_TAG: "bytes", "b64": _b64(value)}
        if isinstance(value, np.ndarray) and type(value) is np.ndarray:
            return self._array(value, path)
        if type(value) is np.random.Generator:
            bits = value.bit_generator
            return {
                _TAG: "rng",
                "bit_generator": self._bit_generator(bits, path),
                "state": self.encode(bits.state, f"{path}.bit_generator.state"),
            }
        if isinstance(value, np.random.BitGenerator):
            return {
                _TAG: "rng",
                "bit_generator": self._bit_generator(value, path),
                "state": self.encode(value.state, f"{path}.state"),
                "bare": True,
            }
        if type(value) is np.random.RandomState:
            return {
                _TAG: "random_state",
                "state": self.encode(value.get_state(legacy=False), f"{path}.state"),
            }
        if isinstance(value, type):
            raise self._refuse(value, path, "a class")
        name = self._allowed(type(value), path)
        return {_TAG: "obj", "cls": name, "state": self.encode_state(value, path)}

    def encode_state(self, value: Any, path: str) -> Any:
        state = _object_state(value)
        if type(state) is dict and all(type(k) is str for k in state) and _TAG not in state:
            # the instance's own __dict__: not shared with anything, so written in place
            return {
                k: v if type(v) in _PLAIN else self.encode(v, f"{path}.{k}")
                for k, v in state.items()
            }
        return self.encode(state, f"{path}.__getstate__()")

    def _items(self, values: Any, path: str) -> list[Any]:
        # the path of an item is only written out where there is something to encode
        return [
            v if type(v) in _PLAIN else self.encode(v, f"{path}[{n}]") for n, v in enumerate(values)
        ]

    def _array(self, array: np.ndarray, path: str) -> dict[str, Any]:
        dtype = array.dtype
        if dtype.hasobject:
            if dtype != np.dtype(object):
                raise self._refuse(array, path, f"a structured array with objects ({dtype})")
            flat = array.reshape(-1)
            items = [self.encode(v, f"{path}[{n}]") for n, v in enumerate(flat)]
            return {_TAG: "nd_obj", "shape": list(array.shape), "items": items}
        if dtype.fields is not None or dtype.subdtype is not None:
            raise self._refuse(array, path, f"a structured array ({dtype})")
        order: Literal["C", "F"] = "C"
        if array.flags.f_contiguous and not array.flags.c_contiguous:
            order = "F"
        return {
            _TAG: "nd",
            "dtype": dtype.str,
            "shape": list(array.shape),
            "order": order,
            "b64": _b64(array.tobytes(order=order)),
        }

    def _bit_generator(self, bits: np.random.BitGenerator, path: str) -> str:
        name = type(bits).__name__
        if _BIT_GENERATORS.get(name) is not type(bits):
            raise self._refuse(bits, path, "a bit generator numpy does not ship")
        return name

    def _allowed(self, cls: type, path: str) -> str:
        name = class_name(cls)
        if name in ALLOWED_CLASSES or _registered.get(name) is cls:
            return name
        raise StateEncodeError(
            f"cannot store {path}: it is a {name}, which is not a class checkpoints may hold "
            "(marketarena.evaluation.saved_runs.codec.ALLOWED_CLASSES; a plugin's own class: "
            "allow_state_class)"
        )

    @staticmethod
    def _refuse(value: Any, path: str, what: str) -> StateEncodeError:
        name = class_name(type(value))
        return StateEncodeError(f"cannot store {path}: it is {what} ({name})")


def _children(value: Any) -> list[Any]:
    """What :meth:`_Encoder.encode` writes inside ``value`` (for counting references)."""
    if isinstance(value, dict) and type(value) is dict:
        return [*value.keys(), *value.values()]
    if type(value) in (list, tuple, set, frozenset, deque):
        return list(value)
    if isinstance(value, np.ndarray) and value.dtype == np.dtype(object):
        return list(value.reshape(-1))
    if (
        isinstance(value, (np.ndarray, np.generic, np.random.BitGenerator, enum.Enum, bytes))
        or type(value) in (np.random.Generator, np.random.RandomState)
        or isinstance(value, type)
    ):
        return []
    try:
        state = _object_state(value)
    except TypeError:
        return []  # encode() says what is wrong with it, and where
    if type(state) is dict:
        return list(state.values())
    return [state]


def _object_state(value: Any) -> Any:
    if dataclasses.is_dataclass(value) or hasattr(value, "__dict__") or hasattr(value, "__slots__"):
        return value.__getstate__()
    raise TypeError(type(value))


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


# --------------------------------------------------------------------------- reading
class _Decoder:
    def __init__(self, where: str) -> None:
        self.where = where
        self.shared: dict[int, Any] = {}

    def fail(self, path: str, message: str) -> UnsafeStateError:
        return UnsafeStateError(f"{path}: {message}")

    def decode(self, node: Any, path: str) -> Any:
        if node is None or type(node) in (bool, int, float, str):
            return node
        if type(node) is list:
            return [self.decode(v, f"{path}[{n}]") for n, v in enumerate(node)]
        if type(node) is not dict:
            raise self.fail(path, f"unexpected JSON value {node!r}")
        tag = node.get(_TAG)
        if tag is None:
            return {k: self.decode(v, f"{path}[{k!r}]") for k, v in node.items()}
        if tag == "ref":
            try:
                return self.shared[node["id"]]
            except (KeyError, TypeError):
                unknown = node.get("id")
                raise self.fail(path, f"a reference to an unknown value {unknown!r}") from None
        reader = _READERS.get(tag) if isinstance(tag, str) else None
        if reader is None:
            raise self.fail(path, f"unknown type tag {tag!r}")
        try:
            return reader(self, node, path)
        except UnsafeStateError:
            raise
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise self.fail(path, f"malformed {tag!r} value: {exc!r}") from None

    def share(self, node: dict[str, Any], value: Any) -> Any:
        """Remember ``value`` under the node's ``$id`` (before its contents, for cycles)."""
        if "$id" in node:
            self.shared[node["$id"]] = value
        return value

    def items(self, node: dict[str, Any], path: str) -> list[Any]:
        items = node["items"]
        if type(items) is not list:
            raise self.fail(path, "items must be a list")
        return [self.decode(v, f"{path}[{n}]") for n, v in enumerate(items)]

    def cls(self, node: dict[str, Any], path: str) -> type:
        name = node["cls"]
        if not isinstance(name, str):
            raise self.fail(path, f"a class name must be a string, got {name!r}")
        if name in _registered:
            return _registered[name]
        if name not in ALLOWED_CLASSES:
            raise self.fail(
                path,
                f"class {name!r} is not one checkpoints may hold: refused (nothing imported or "
                "called)",
            )
        module, _, qualname = name.rpartition(".")
        found: Any = importlib.import_module(module)
        for part in qualname.split("."):
            found = getattr(found, part)
        if not isinstance(found, type) or class_name(found) != name:
            raise self.fail(path, f"{name!r} is not a class")
        return found


def _read_list(d: _Decoder, node: dict[str, Any], path: str) -> list[Any]:
    out: list[Any] = d.share(node, [])
    out.extend(d.items(node, path))
    return out


def _read_dict(d: _Decoder, node: dict[str, Any], path: str) -> dict[Any, Any]:
    out: dict[Any, Any] = d.share(node, {})
    for n, pair in enumerate(node["items"]):
        key, value = pair
        out[d.decode(key, f"{path} key {n}")] = d.decode(value, f"{path}[{n}]")
    return out


def _read_deque(d: _Decoder, node: dict[str, Any], path: str) -> deque:
    maxlen = node["maxlen"]
    if maxlen is not None and type(maxlen) is not int:
        raise d.fail(path, f"maxlen must be a whole number, got {maxlen!r}")
    out: deque = d.share(node, deque(maxlen=maxlen))
    out.extend(d.items(node, path))
    return out


def _read_set(d: _Decoder, node: dict[str, Any], path: str) -> set | frozenset:
    kind = set if node[_TAG] == "set" else frozenset
    return d.share(node, kind(d.items(node, path)))


def _read_tuple(d: _Decoder, node: dict[str, Any], path: str) -> tuple:
    return d.share(node, tuple(d.items(node, path)))


def _read_bytes(d: _Decoder, node: dict[str, Any], path: str) -> bytes:
    return base64.b64decode(node["b64"], validate=True)


def _dtype(d: _Decoder, node: dict[str, Any], path: str) -> np.dtype:
    text = node["dtype"]
    if not isinstance(text, str):
        raise d.fail(path, f"a dtype must be a string, got {text!r}")
    dtype = np.dtype(text)
    if dtype.hasobject or dtype.fields is not None:
        raise d.fail(path, f"dtype {text!r} is not one arrays are stored with")
    return dtype


def _read_array(d: _Decoder, node: dict[str, Any], path: str) -> np.ndarray:
    dtype = _dtype(d, node, path)
    shape = node["shape"]
    if type(shape) is not list or not all(type(n) is int and n >= 0 for n in shape):
        raise d.fail(path, f"shape must be a list of whole numbers, got {shape!r}")
    order = node["order"]
    if order not in ("C", "F"):
        raise d.fail(path, f"order must be 'C' or 'F', got {order!r}")
    raw = base64.b64decode(node["b64"], validate=True)
    if len(raw) != int(np.prod(shape, dtype=np.int64)) * dtype.itemsize:
        raise d.fail(path, f"{len(raw)} bytes do not make an array of {shape} {dtype}")
    array = np.frombuffer(raw, dtype=dtype).reshape(shape, order=order).copy(order=order)
    return d.share(node, array)


def _read_object_array(d: _Decoder, node: dict[str, Any], path: str) -> np.ndarray:
    shape = node["shape"]
    if type(shape) is not list or not all(type(n) is int and n >= 0 for n in shape):
        raise d.fail(path, f"shape must be a list of whole numbers, got {shape!r}")
    items = d.items(node, path)
    flat = np.empty(len(items), dtype=object)
    for n, item in enumerate(items):
        flat[n] = item
    return d.share(node, flat.reshape(shape))


def _read_scalar(d: _Decoder, node: dict[str, Any], path: str) -> np.generic:
    dtype = _dtype(d, node, path)
    raw = base64.b64decode(node["b64"], validate=True)
    if len(raw) != dtype.itemsize:
        raise d.fail(path, f"{len(raw)} bytes are not one {dtype}")
    return np.frombuffer(raw, dtype=dtype)[0]


def _read_rng(d: _Decoder, node: dict[str, Any], path: str) -> Any:
    make = _BIT_GENERATORS.get(node["bit_generator"])
    if make is None:
        raise d.fail(path, f"unknown bit generator {node['bit_generator']!r}")
    bits = make()
    bits.state = d.decode(node["state"], f"{path}.state")
    return d.share(node, bits if node.get("bare") else np.random.Generator(bits))


def _read_random_state(d: _Decoder, node: dict[str, Any], path: str) -> np.random.RandomState:
    legacy = np.random.RandomState()
    legacy.set_state(d.decode(node["state"], f"{path}.state"))
    return d.share(node, legacy)


def _read_enum(d: _Decoder, node: dict[str, Any], path: str) -> enum.Enum:
    cls = d.cls(node, path)
    if not issubclass(cls, enum.Enum):
        raise d.fail(path, f"{class_name(cls)} is not an enum")
    return cls[node["name"]]


def _read_object(d: _Decoder, node: dict[str, Any], path: str) -> Any:
    cls: Any = d.cls(node, path)
    instance = d.share(node, cls.__new__(cls))
    state = d.decode(node["state"], f"{path}.state")
    if hasattr(cls, "__setstate__") and _custom(cls, "__setstate__"):
        instance.__setstate__(state)
    elif type(state) is tuple and len(state) == 2:  # (__dict__ or None, slots) from __getstate__
        own, slots = state
        if own:
            vars(instance).update(own)
        for name, value in (slots or {}).items():
            object.__setattr__(instance, name, value)
    elif type(state) is dict:
        vars(instance).update(state)
    elif state is not None:
        raise d.fail(path, f"{class_name(cls)} has no __setstate__ for {type(state).__name__}")
    return instance


def _custom(cls: type, method: str) -> bool:
    return getattr(cls, method, None) is not getattr(object, method, None)


_READERS: dict[str, Callable[[_Decoder, dict[str, Any], str], Any]] = {
    "list": _read_list,
    "dict": _read_dict,
    "tuple": _read_tuple,
    "set": _read_set,
    "frozenset": _read_set,
    "deque": _read_deque,
    "bytes": _read_bytes,
    "nd": _read_array,
    "nd_obj": _read_object_array,
    "np": _read_scalar,
    "rng": _read_rng,
    "random_state": _read_random_state,
    "enum": _read_enum,
    "obj": _read_object,
}
