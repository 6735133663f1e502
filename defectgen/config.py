"""Configs are dataclasses; YAML files and ``--set key=value`` only override their fields.

Every run folder gets the effective config as ``config.yaml`` so that a run can be repeated.
Unknown keys and wrongly typed values are refused with the key named in the error, and two rules
hold for every config: a number is finite (``.inf``/``.nan`` would train or score nothing), and a
seed (a key named ``seed``, ``seeds`` or ``*_seed``) is a non-negative integer, as numpy's
``SeedSequence`` requires.
"""
from __future__ import annotations

import dataclasses
import math
import re
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

from defectgen.errors import ConfigError
from defectgen.io import atomic_write_text

T = TypeVar("T")

# The largest image side a config or flag may name: its square is about PIL's decompression-bomb limit
# (178,956,970 pixels), above which no image is read, so a larger side is a typo rather than a wish.
MAX_SIDE = 13377
MAX_TIMESTEPS = 100_000  # a diffusion schedule longer than this is a typo (DDPM uses 1000)
MAX_PAIRS = 10_000_000  # pairs one sample folder may hold (two files each); more is a typo


def need(ok: bool, key: str, rule: str, value: Any) -> None:
    """Refuse a config value, naming the key (or a ``--flag``), the rule and the value (for ``check()`` methods)."""
    if not ok:
        where = key if key.startswith("--") else f"config key '{key}'"
        raise ConfigError(f"{where}: {rule}, got {value!r}")


def is_seed_key(key: str) -> bool:
    """Whether a config key holds a seed (``seed``, ``seeds``, ``sample_seed``, ``seeds[2]`` ...)."""
    name = re.sub(r"\[\d+\]$", "", key.rsplit(".", 1)[-1])
    return name in ("seed", "seeds") or name.endswith("_seed")


def need_side(value: int, key: str) -> None:
    """An image side in pixels: at least 8, at most ``MAX_SIDE``."""
    need(value >= 8, key, "must be at least 8 pixels", value)
    need(value <= MAX_SIDE, key, f"must be at most {MAX_SIDE} pixels (a larger image is refused as a decompression bomb)",
         value)


def _coerce(value: Any, hint: Any, key: str) -> Any:
    value = _coerce_type(value, hint, key)
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"config key '{key}': must be a finite number, got {value!r}")
    if isinstance(value, int) and not isinstance(value, bool) and value < 0 and is_seed_key(key):
        raise ConfigError(f"config key '{key}': a seed must not be negative, got {value!r}")
    return value


def _coerce_type(value: Any, hint: Any, key: str) -> Any:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        arms = [a for a in args if a is not type(None)]
        if len(arms) == 1:  # X | None: X's own error says more than "fits none of"
            return _coerce_type(value, arms[0], key)
        errors = []
        for arg in arms:
            try:
                return _coerce_type(value, arg, key)
            except ConfigError as err:
                errors.append(str(err))
        raise ConfigError(f"config key '{key}': {value!r} fits none of {hint}")
    if dataclasses.is_dataclass(hint):
        if not isinstance(value, dict):
            raise ConfigError(f"config key '{key}': expected a mapping, got {value!r}")
        return from_dict(hint, value, prefix=f"{key}.")
    if origin in (tuple, list):
        if isinstance(value, str):
            value = yaml.safe_load(value) if value.strip().startswith("[") else [v for v in value.split(",") if v]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"config key '{key}': expected a list, got {value!r}")
        item = args[0] if args else Any
        items = [_coerce(v, item, f"{key}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if hint is Any:
        return value
    if hint is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
            return value.lower() in ("true", "1", "yes")
        raise ConfigError(f"config key '{key}': expected true/false, got {value!r}")
    if hint is int:
        if isinstance(value, bool):
            raise ConfigError(f"config key '{key}': expected an integer, got {value!r}")
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                return int(float(value)) if float(value).is_integer() else int(value)
            except ValueError:
                pass
        raise ConfigError(f"config key '{key}': expected an integer, got {value!r}")
    if hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
        raise ConfigError(f"config key '{key}': expected a number, got {value!r}")
    if hint is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        raise ConfigError(f"config key '{key}': expected a string, got {value!r}")
    if typing.get_origin(hint) is typing.Literal:
        if isinstance(value, bool):  # YAML 1.1 reads a bare no/off/yes/on as a boolean
            value = next((w for w in (("no", "off", "false") if not value else ("yes", "on", "true")) if w in args), value)
        if value not in args:
            raise ConfigError(f"config key '{key}': {value!r} is not one of {list(args)}")
        return value
    return value


def from_dict(cls: type[T], data: dict[str, Any], prefix: str = "") -> T:
    """Build dataclass ``cls`` from a (possibly partial) mapping, checking keys and types."""
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(f"unknown config key '{prefix}{unknown[0]}' (known: {', '.join(sorted(names))})")
    kwargs = {k: _coerce(v, hints[k], prefix + k) for k, v in data.items()}
    return cls(**kwargs)


def to_dict(cfg: Any) -> dict[str, Any]:
    """Plain-YAML-safe mapping of a config dataclass (tuples become lists)."""

    def plain(v: Any) -> Any:
        if isinstance(v, (list, tuple)):
            return [plain(x) for x in v]
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        return v

    return plain(dataclasses.asdict(cfg))


def parse_overrides(pairs: list[str] | None) -> dict[str, Any]:
    """Turn ``["a.b=1", "c=x"]`` into a nested mapping; values are parsed as YAML scalars."""
    nested: dict[str, Any] = {}
    for pair in pairs or []:
        if "=" not in pair:
            raise ConfigError(f"override '{pair}' is not of the form key=value")
        key, raw = pair.split("=", 1)
        value = yaml.safe_load(raw) if raw != "" else ""
        node = nested
        parts = key.strip().split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    return nested


def merge(base: dict[str, Any], override: dict[str, Any], cls: type | None = None) -> dict[str, Any]:
    """Override ``base`` key by key. With ``cls``, only nested configs (dataclass fields) merge and a
    mapping-valued field is replaced whole (a file's ``sources:`` replaces the default); without it,
    mappings merge too (``--set sources.a=x`` changes one entry)."""
    hints = typing.get_type_hints(cls) if cls is not None else {}
    out = dict(base)
    for k, v in override.items():
        sub = hints.get(k)
        nested = cls is None or dataclasses.is_dataclass(sub)
        if isinstance(v, dict) and isinstance(out.get(k), dict) and nested:
            out[k] = merge(out[k], v, sub if cls is not None else None)
        else:
            out[k] = v
    return out


def load_config(cls: type[T], path: str | Path | None = None, overrides: list[str] | None = None) -> T:
    """Defaults of ``cls``, then the YAML file at ``path``, then ``key=value`` overrides.

    A config class with a ``check()`` method has it called on the result, so that values that
    cannot work are refused before any output is written. An empty YAML file is refused.
    """
    data: dict[str, Any] = to_dict(cls())
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        try:
            loaded = yaml.safe_load(path.read_text())
        except (yaml.YAMLError, UnicodeDecodeError) as err:
            raise ConfigError(f"{path}: not valid YAML: {err}") from err
        if loaded is None:  # an empty file is more likely a mistake than a wish for every default
            raise ConfigError(f"{path}: the config file is empty; leave out --config to use the built-in defaults")
        if not isinstance(loaded, dict):
            raise ConfigError(f"{path}: expected a mapping at the top level")
        try:
            from_dict(cls, loaded)  # reports unknown keys against the file
        except ConfigError as err:
            raise ConfigError(f"{path}: {err}") from err
        data = merge(data, loaded, cls)
    data = merge(data, parse_overrides(overrides))
    cfg = from_dict(cls, data)
    if callable(getattr(cfg, "check", None)):
        cfg.check()
    return cfg


def save_config(cfg: Any, path: str | Path) -> None:
    atomic_write_text(Path(path), yaml.safe_dump(to_dict(cfg), sort_keys=False))
