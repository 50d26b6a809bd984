"""Pickle-free serialization of a run's state: structure in JSON, tensors in safetensors.

A value is encoded as JSON where every object is a one-key tag, so nothing in the file is
interpreted beyond these tags:

* ``null``, booleans, numbers (floats exactly, via ``repr``; NaN and ±inf as JSON's
  ``NaN``/``Infinity``) and strings as themselves;
* ``{"list": [...]}``, ``{"tuple": [...]}``, ``{"frozenset": [...]}``;
* ``{"dict": [[key, value], ...]}`` (keys of any encodable type, e.g. client ids);
* ``{"tensor": "<n>"}``: the ``n``-th tensor of the safetensors part (dtype and shape kept);
* ``{"dataclass": "<module>.<name>", "fields": {...}}``: an instance of a dataclass from the
  explicit allow-list :data:`TYPES` (the server states of the algorithms, ``LoRASpec``,
  ``RoundRecord``, ``Checkpoint``); any other name is refused, so a file can only ever build
  these types, never run code (no ``eval``, no pickle, no import by name).

:func:`dumps` returns ``8-byte little-endian length of the JSON part | JSON | safetensors``.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import struct
from typing import Any

import torch
from safetensors.torch import load as load_tensors
from safetensors.torch import save as save_tensors

TYPES: dict[str, type] = {}


class SerialError(ValueError):
    """A value that cannot be encoded, or a payload that does not decode to allowed types."""


def allow(*classes: type) -> None:
    """Add dataclasses to the allow-list :data:`TYPES` (by ``module.qualname``)."""
    for cls in classes:
        if not dataclasses.is_dataclass(cls):
            raise TypeError(f"{cls!r} is not a dataclass")
        TYPES[f"{cls.__module__}.{cls.__qualname__}"] = cls


@functools.cache
def _register_ilora_types() -> None:
    """Fill the allow-list: every server state of the registered algorithms and the run records."""
    from ilora.algorithms._shared import FactorState
    from ilora.algorithms.ce_lora import CELoRAState
    from ilora.algorithms.fedlease import FedLEASEState
    from ilora.algorithms.fedsa_lora import FedSAState
    from ilora.algorithms.fl_tac import FLTACState
    from ilora.algorithms.flasc import FLASCState
    from ilora.algorithms.flexlora import FlexLoRAState
    from ilora.algorithms.frlora import FRLoRAState
    from ilora.algorithms.ilora import ILoRAState
    from ilora.engine.history import RoundRecord
    from ilora.lora.spec import LoRASpec

    allow(FactorState, CELoRAState, FedLEASEState, FedSAState, FLTACState, FLASCState)
    allow(FlexLoRAState, FRLoRAState, ILoRAState, RoundRecord, LoRASpec)


class _Encoder:
    def __init__(self) -> None:
        self.tensors: dict[str, torch.Tensor] = {}
        self.storages: set[int] = set()

    def tensor(self, t: torch.Tensor) -> dict[str, str]:
        t = t.detach().cpu()
        ptr = t.untyped_storage().data_ptr()
        shared = ptr in self.storages and t.numel() > 0
        self.storages.add(ptr)
        t = t.clone() if shared else t.contiguous()  # safetensors refuses shared storage
        name = str(len(self.tensors))
        self.tensors[name] = t
        return {"tensor": name}

    def encode(self, obj: Any) -> Any:
        if obj is None or isinstance(obj, bool | int | float | str):
            return obj
        if isinstance(obj, torch.Tensor):
            return self.tensor(obj)
        if isinstance(obj, list | tuple):
            return {type(obj).__name__: [self.encode(v) for v in obj]}
        if isinstance(obj, frozenset | set):
            return {"frozenset": [self.encode(v) for v in sorted(obj, key=repr)]}
        if isinstance(obj, dict):
            return {"dict": [[self.encode(k), self.encode(v)] for k, v in obj.items()]}
        if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
            name = f"{type(obj).__module__}.{type(obj).__qualname__}"
            _register_ilora_types()
            if TYPES.get(name) is not type(obj):
                raise SerialError(f"{name} is not in the checkpoint allow-list (serial.allow)")
            fields = {
                f.name: self.encode(getattr(obj, f.name)) for f in dataclasses.fields(obj) if f.init
            }
            return {"dataclass": name, "fields": fields}
        raise SerialError(f"cannot serialize a {type(obj).__name__} (no pickle fallback)")


def _decode(node: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if node is None or isinstance(node, bool | int | float | str):
        return node
    if not isinstance(node, dict) or not node:
        raise SerialError(f"unexpected JSON value {str(node)[:40]!r}")
    tag = next(iter(node))
    if tag == "tensor" and len(node) == 1:
        if node["tensor"] not in tensors:
            raise SerialError(f"missing tensor {node['tensor']!r}")
        return tensors[node["tensor"]]
    if tag in ("list", "tuple", "frozenset") and len(node) == 1:
        items = [_decode(v, tensors) for v in _as_list(node[tag])]
        return {"list": list, "tuple": tuple, "frozenset": frozenset}[tag](items)
    if tag == "dict" and len(node) == 1:
        return {_decode(k, tensors): _decode(v, tensors) for k, v in _pairs(node["dict"])}
    if tag == "dataclass" and set(node) == {"dataclass", "fields"}:
        return _dataclass(node, tensors)
    raise SerialError(f"unexpected tag {tag!r}")


def _as_list(value: Any) -> list[Any]:
    if not isinstance(value, list):
        raise SerialError("expected a JSON list")
    return value


def _pairs(value: Any) -> list[tuple[Any, Any]]:
    pairs = _as_list(value)
    if not all(isinstance(p, list) and len(p) == 2 for p in pairs):
        raise SerialError("a dict must be a list of [key, value] pairs")
    return [(p[0], p[1]) for p in pairs]


def _dataclass(node: dict[str, Any], tensors: dict[str, torch.Tensor]) -> Any:
    _register_ilora_types()
    cls = TYPES.get(str(node["dataclass"]))
    if cls is None:
        raise SerialError(f"type {str(node['dataclass'])[:80]!r} is not allowed in a checkpoint")
    raw = node["fields"]
    names = {f.name for f in dataclasses.fields(cls) if f.init}
    if not isinstance(raw, dict) or not set(raw) <= names:
        raise SerialError(f"fields of {cls.__qualname__} do not match its definition")
    return cls(**{k: _decode(v, tensors) for k, v in raw.items()})


def dumps(obj: Any) -> bytes:
    """Return ``obj`` encoded (see the module docstring)."""
    _register_ilora_types()
    enc = _Encoder()
    head = json.dumps(enc.encode(obj), separators=(",", ":")).encode()
    return struct.pack("<Q", len(head)) + head + save_tensors(enc.tensors)


def loads(data: bytes) -> Any:
    """Return the value :func:`dumps` encoded in ``data``.

    Raises:
        SerialError: if ``data`` is malformed or names a type outside the allow-list.

    """
    if len(data) < 8:
        raise SerialError("truncated payload")
    (size,) = struct.unpack("<Q", data[:8])
    if size > len(data) - 8:
        raise SerialError("truncated payload")
    try:
        head = json.loads(data[8 : 8 + size])
        tensors = load_tensors(data[8 + size :])
    except Exception as err:  # any JSON or safetensors parse error (SafetensorError included)
        raise SerialError(f"malformed payload ({type(err).__name__})") from None
    return _decode(head, tensors)
