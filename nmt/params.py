"""params.yaml -> :class:`nmt.config.Params`: parse, coerce, check, and name every problem at once.

Loading rejects unknown keys, wrong types and out-of-range values, and reports *all* problems
together, each naming its dotted key (``train.lr: expected float, got 'abc'``), before any work
starts (exit 2 through :class:`~nmt.errors.ConfigError`).
"""

from __future__ import annotations

import dataclasses
import math
import typing
from pathlib import Path
from typing import Any, Literal

import yaml

from nmt.config import DECODING_KEYS, DEFAULT_PARAMS, EvaluateConfig, Params
from nmt.errors import ConfigError

MAX_INT = 2**63 - 1  # no option needs more, and a bigger integer breaks float() and str()


def _show(value: Any) -> str:
    """``repr(value)`` for a message, cut short: a pasted blob or a 5000-digit number must not flood it."""
    try:
        text = repr(value)
    except ValueError:  # an integer over Python's 4300-digit limit, maybe inside a list
        text = f"<a {type(value).__name__} holding an integer too long to print>"
    return text if len(text) <= 80 else f"{text[:77]}..."


def _type_name(tp: Any) -> str:
    if typing.get_origin(tp) is Literal:
        return " | ".join(repr(a) for a in typing.get_args(tp))
    return getattr(tp, "__name__", str(tp))


def _coerce(value: Any, tp: Any, key: str, problems: list[str]) -> Any:
    """Return ``value`` as type ``tp``, or record a problem and return None."""
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, f"{key}.", problems)
    if typing.get_origin(tp) is Literal:
        if value in typing.get_args(tp):
            return value
        problems.append(f"{key}: expected one of {_type_name(tp)}, got {_show(value)}")
        return None
    ok = False
    if tp is bool:
        ok = isinstance(value, bool)
    elif tp is int:
        ok = isinstance(value, int) and not isinstance(value, bool) and abs(value) <= MAX_INT
    elif tp is float:
        if isinstance(value, (str, int)) and not isinstance(value, bool):
            # YAML 1.1 reads `1e-3` (no dot) as a string; accept any numeric spelling. An int too
            # large for a float (10**400) stays an int and is rejected below.
            try:
                value = float(value)
            except (ValueError, OverflowError):
                pass
        ok = isinstance(value, float) and math.isfinite(value)
    elif tp is str:
        ok = isinstance(value, str)
    if not ok:
        problems.append(f"{key}: expected {_type_name(tp)}, got {_show(value)}")
        return None
    return value


def _build(cls: type, raw: Any, prefix: str, problems: list[str]) -> Any:
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        problems.append(f"{prefix.rstrip('.') or '(top level)'}: expected a mapping, got {_show(raw)}")
        return cls()
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for key in raw:
        if key not in fields:
            known = ", ".join(fields)
            problems.append(f"{prefix}{key}: unknown key (known keys here: {known})")
    kwargs = {}
    n_before = len(problems)
    for name, f in fields.items():
        if name not in raw:
            continue
        key = f"{prefix}{name}"
        value = _coerce(raw[name], hints[name], key, problems)
        if value is None:
            continue
        check = f.metadata.get("check")
        if check is not None and not check(value):
            problems.append(f"{key}: {f.metadata['rule']}, got {_show(value)}")
            continue
        kwargs[name] = value
    obj = cls(**kwargs)
    if len(problems) == n_before and hasattr(obj, "validate"):
        problems.extend(obj.validate())
    return obj


def params_from_dict(raw: Any, source: str = "params.yaml") -> Params:
    """Validate a parsed params mapping; raise :class:`ConfigError` listing every problem."""
    problems: list[str] = []
    params = _build(Params, raw, "", problems)
    if problems:
        raise ConfigError(problems, source)
    return params


def load_params(path: str | Path = DEFAULT_PARAMS) -> Params:
    """Read and validate ``params.yaml``."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(["file not found (run from the repository root, or pass its path)"], str(path))
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, ValueError) as e:  # ValueError: a number over Python's 4300 digits
        raise ConfigError([f"not valid YAML: {e}"], str(path)) from e
    return params_from_dict(raw, str(path))


def to_dict(obj: Any) -> dict:
    return dataclasses.asdict(obj)


def flatten(d: dict, prefix: str = "") -> dict[str, Any]:
    """``{"model": {"d_model": 256}}`` -> ``{"model.d_model": 256}``."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, f"{key}."))
        else:
            out[key] = v
    return out


def describe(cls: type = Params, prefix: str = "") -> list[tuple[str, str, str]]:
    """(key, default, help) for every option: the source of `nmt params` and the README table."""
    rows = []
    for f in dataclasses.fields(cls):
        key = f"{prefix}{f.name}"
        tp = typing.get_type_hints(cls)[f.name]
        if dataclasses.is_dataclass(tp):
            rows.extend(describe(tp, f"{key}."))
        else:
            rows.append((key, repr(f.default), f.metadata.get("help", "")))
    return rows


def decoding_from_dict(raw: Any, prefix: str, problems: list[str]) -> dict[str, Any]:
    """Validate a (possibly partial) decoding mapping with the evaluate section's types and ranges."""
    if not isinstance(raw, dict):
        problems.append(f"{prefix.rstrip('.')}: expected a mapping, got {_show(raw)}")
        return {}
    problems.extend(f"{prefix}{key}: unknown key (known keys here: {', '.join(DECODING_KEYS)})"
                    for key in raw if key not in DECODING_KEYS)
    cfg = _build(EvaluateConfig, {k: v for k, v in raw.items() if k in DECODING_KEYS}, prefix, problems)
    return {key: getattr(cfg, key) for key in DECODING_KEYS if key in raw}
