"""Strict loading: YAML files, includes and ``--set`` overrides checked against the dataclasses."""

from __future__ import annotations

import copy
import dataclasses
import difflib
import types
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from typing import Literal

import yaml

from ilora.config.experiment import ExperimentConfig
from ilora.config.yaml_text import ConfigError
from ilora.config.yaml_text import parse_yaml
from ilora.config.yaml_text import yaml_problem


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp))


def _coerce(value: Any, tp: Any, path: str) -> Any:
    """Check ``value`` against the annotation ``tp`` (the YAML subset we use) and convert it."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        if not isinstance(value, dict):
            raise ConfigError(f"{path} must be a mapping, got {value!r}")
        return build(tp, value, path)
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{path} must be one of {list(args)}, got {value!r}")
        return value
    if origin in (types.UnionType, typing.Union):
        for arg in args:
            try:
                return _coerce(value, arg, path)
            except ConfigError:
                continue
        raise ConfigError(f"{path}: {value!r} fits none of {[_type_name(a) for a in args]}")
    if origin is tuple:
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{path} must be a list, got {value!r}")
        return tuple(_coerce(v, args[0], f"{path}[{i}]") for i, v in enumerate(value))
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{path} must be a mapping, got {value!r}")
        return dict(value)
    if tp is type(None):
        if value is not None:
            raise ConfigError(f"{path} must be null")
        return None
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        try:
            return float(value)
        except OverflowError:
            raise ConfigError(f"{path} = {value} is too large for a float") from None
    if tp in (int, float, str, bool):
        if not isinstance(value, tp) or (tp is int and isinstance(value, bool)):
            raise ConfigError(f"{path} must be {tp.__name__}, got {value!r}")
        return value
    return value


def build(cls: type[Any], data: dict[str, Any], path: str = "") -> Any:
    """Build dataclass ``cls`` from a mapping, strictly (unknown keys and wrong types raise).

    Raises:
        ConfigError: naming the dotted path, with a did-you-mean for unknown keys.

    """
    hints = typing.get_type_hints(cls)
    fields = {f.name for f in dataclasses.fields(cls)}
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        dotted = f"{path}.{key}" if path else str(key)
        if key not in fields:
            close = difflib.get_close_matches(str(key), fields, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ConfigError(
                f"unknown config key {dotted!r}{hint} (valid: {', '.join(sorted(fields))})"
            )
        kwargs[key] = _coerce(value, hints[key], dotted)
    try:
        return cls(**kwargs)
    except ConfigError:
        raise
    except (ValueError, TypeError) as err:
        message = str(err)
        raise ConfigError(
            message if message.startswith(path) else f"{path or 'config'}: {message}"
        ) from None


def set_dotted(data: dict[str, Any], dotted: str, raw: str) -> None:
    """Apply one ``key.path=value`` override to a nested mapping (value parsed as YAML)."""
    *parents, last = dotted.split(".")
    node = data
    for p in parents:
        child = node.setdefault(p, {})
        if not isinstance(child, dict):
            raise ConfigError(f"--set {dotted}: {p!r} is not a section")
        node = child
    try:
        node[last] = parse_yaml(raw)
    except yaml.YAMLError as err:
        raise ConfigError(
            f"--set {dotted}: {raw!r} is not a YAML value ({yaml_problem(err)})"
        ) from None


def load(path: str | Path | None, overrides: list[str] | tuple[str, ...] = ()) -> ExperimentConfig:
    """Read a YAML config (or the defaults when ``path`` is None) and apply ``k=v`` overrides.

    Raises:
        ConfigError: for a missing file, bad YAML, an unknown key or an invalid value.

    """
    data: dict[str, Any] = {}
    if path is not None:
        p = Path(path)
        if p.is_dir():
            raise ConfigError(f"config file {str(p)!r} is a directory; give a YAML file")
        if not p.is_file():
            raise ConfigError(f"config file {str(p)!r} does not exist")
        try:
            loaded = parse_yaml(p.read_text(encoding="utf-8")) or {}
        except (OSError, UnicodeDecodeError) as err:
            raise ConfigError(f"config file {str(p)!r} cannot be read: {err}") from None
        except yaml.YAMLError as err:
            raise ConfigError(
                f"config file {str(p)!r} is not valid YAML: {yaml_problem(err)}"
            ) from None
        if not isinstance(loaded, dict):
            raise ConfigError(f"config file {str(p)!r} must hold a mapping at the top level")
        data = _with_includes(loaded, p.parent)
    data = _with_overrides(_with_own_training(_with_overrides(data, overrides), data), overrides)
    cfg: ExperimentConfig = build(ExperimentConfig, data)
    if cfg.eval.split == "validation" and cfg.data.validation_fraction == 0.0:
        raise ConfigError(
            "eval.split: validation needs a validation split; set data.validation_fraction "
            "(e.g. 0.1)"
        )
    check_personal_validation(cfg)
    return cfg


LABEL_SKEW = ("iid", "dirichlet", "dirichlet-clients", "shards")  # a label mix reproduces these


def check_personal_validation(cfg: ExperimentConfig) -> None:
    """Refuse validation shares for clients whose distribution a label mix cannot reproduce.

    Under ``eval.split: validation`` each client's own model is evaluated on held-out examples
    drawn with its label mix (``engine.personal_validation``); a ``by_group`` partition skews
    features too.
    """
    ev, data = cfg.eval, cfg.data
    if (
        ev.split == "validation"
        and data.local_test_fraction > 0
        and data.partition not in LABEL_SKEW
    ):
        raise ConfigError(
            f"data.partition {data.partition!r} with eval.split: validation: the clients' "
            "validation shares are drawn by label mix, which reproduces only "
            f"{', '.join(LABEL_SKEW)}; use one of them or set data.local_test_fraction: 0"
        )


def _with_includes(
    data: dict[str, Any], base: Path, seen: frozenset[Path] = frozenset()
) -> dict[str, Any]:
    """Return ``data`` merged over the files its top-level ``include`` names (relative paths).

    ``include: PATH`` (or a list) reads each file as a config fragment, deep-merged under the
    including file (the including file wins), e.g. the tuned learning rates that
    ``ilora bench protocol --phase tune`` writes as ``per_algorithm: {name: {train: {lr}}}``.
    The resolved config (what ``config.yaml`` stores) holds the merged values, not the ``include``.
    """
    names = data.pop("include", None)
    if names is None:
        return data
    merged: dict[str, Any] = {}
    for name in [names] if isinstance(names, str) else list(names):
        path = (base / str(name)).resolve()
        if not path.is_file():
            raise ConfigError(f"include {str(path)!r}: no such file")
        if path in seen:
            raise ConfigError(f"include {str(path)!r} includes itself; remove the cycle")
        fragment = parse_yaml(path.read_text(encoding="utf-8")) or {}
        if not isinstance(fragment, dict):
            raise ConfigError(f"include {str(path)!r} must hold a mapping at the top level")
        merged = _deep_merge(merged, _with_includes(fragment, path.parent, seen | {path}))
    return _deep_merge(merged, data)


def _deep_merge(under: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """Return ``under`` updated by ``over``, mappings merged key by key."""
    out = dict(under)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def _with_overrides(data: dict[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """Return a copy of ``data`` with the ``key.path=value`` overrides applied."""
    out = copy.deepcopy(data)
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--set takes key.path=value, got {item!r}")
        set_dotted(out, key.strip(), raw)
    return out


def _with_own_training(resolved: dict[str, Any], data: dict[str, Any]) -> dict[str, Any]:
    """Return ``data`` with the running algorithm's ``per_algorithm.<name>.train`` merged in.

    ``resolved`` (``data`` with the overrides) names the algorithm; the section goes over the
    file's ``train`` and under the overrides, so ``--set train.lr=...`` still wins. Every
    ``train`` section is then dropped from ``per_algorithm``, and a section left empty with it:
    the resolved config (and so a stored ``config.yaml``) depends only on the running
    algorithm's own rate, not on which other methods a tuned-rates file lists.
    """
    name = resolved.get("algorithm", ExperimentConfig.algorithm)
    sections = resolved.get("per_algorithm") or {}
    own = sections.get(name) if isinstance(sections, dict) and isinstance(name, str) else None
    train = own.get("train", {}) if isinstance(own, dict) else {}
    if not isinstance(train, dict):
        raise ConfigError(f"per_algorithm.{name}.train must be a mapping, got {train!r}")
    out = copy.deepcopy(data)
    if train:
        out["train"] = {**(out.get("train") or {}), **train}
    sections_out = out.get("per_algorithm") or {}
    for key, section in list(sections_out.items()):
        if isinstance(section, dict):  # consumed: the resolved config keeps only cfg.train
            section.pop("train", None)
            if not section:  # nothing left to say: as if absent, whatever else is tuned
                del sections_out[key]
    return out
