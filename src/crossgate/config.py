"""Method configs as data: dataclasses whose fields carry help text and a parser, from which the CLI flags
(`--<prefix>-<field>`), BenchConfig, results rows and saved models are all derived.

    @dataclass
    class MyConfig:
        flag_prefix: ClassVar[str] = "my"       # optional: flags --my-<field>; default: the method's name
        steps: int = param(100, "full-batch steps")

A field's type annotation says how a flag's text is parsed: int, float, bool, str, `A | B` (the first
member that parses), `X | None` ("none" for None) and tuple[X, ...] (comma-separated).
"""
from __future__ import annotations

import math
import types
import typing
from dataclasses import MISSING, field, fields

from .errors import UserError


def param(default, help: str, *, choices: tuple | None = None, minimum: float | None = 0.0,
          positive: bool = False, below: float | None = None, length: int | None = None):
    """A config field: its default, one line of help, and what values it accepts (numbers: at least
    `minimum`, or > 0 when `positive`, and less than `below`; a list of exactly `length` items)."""
    return field(default=default, metadata={"help": help, "choices": choices, "minimum": minimum,
                                            "positive": positive, "below": below, "length": length})


def _hints(cls) -> dict:
    return typing.get_type_hints(cls)


def describe(tp, meta: dict) -> str:
    """What a flag of this type accepts, in words: 'a positive integer or all'."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return " or ".join("none" if m is type(None) else describe(m, meta) for m in typing.get_args(tp))
    if origin is tuple:
        count = f"{meta['length']} items, each " if meta.get("length") else ""
        return f"a comma-separated list of {count}{describe(typing.get_args(tp)[0], meta)}"
    if tp is bool:
        return "true or false"
    if tp is str:
        return ", ".join(map(str, meta["choices"])) if meta.get("choices") else "text"
    noun = "integer" if tp is int else "number"
    if meta.get("below") is not None:
        return f"a {noun} in [{meta.get('minimum') or 0:g}, {meta['below']:g})"
    if meta.get("positive"):
        return f"a positive {noun}"
    if meta.get("minimum") is not None:
        return f"a {noun} >= {meta['minimum']:g}"
    return f"a finite {noun}" if tp is float else "an integer"


def _parse(tp, text: str, meta: dict):
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        members = typing.get_args(tp)
        if type(None) in members and text.strip().lower() == "none":
            return None
        for member in (m for m in members if m is not type(None)):
            try:
                return _parse(member, text, meta)
            except ValueError:
                continue
        raise ValueError(f"expected {describe(tp, meta)}, got {text!r}")
    if origin is tuple:
        items = [t.strip() for t in text.split(",") if t.strip()]
        if not items or (meta.get("length") and len(items) != meta["length"]):
            raise ValueError(f"expected {describe(tp, meta)}, got {text!r}")
        return tuple(_parse(typing.get_args(tp)[0], t, meta) for t in items)
    if tp is bool:
        value = text.strip().lower()
        if value not in ("true", "false", "1", "0", "yes", "no"):
            raise ValueError(f"expected true or false, got {text!r}")
        return value in ("true", "1", "yes")
    if tp is str:
        if meta.get("choices") and text not in meta["choices"]:
            raise ValueError(f"expected one of {describe(tp, meta)}, got {text!r}")
        return text
    if tp in (int, float):
        try:
            value = tp(text)
            check_number(value, meta)
        except ValueError:
            raise ValueError(f"expected {describe(tp, meta)}, got {text!r}") from None
        return value
    raise TypeError(f"config fields of type {tp} cannot be parsed")


def check_number(value, meta: dict) -> None:
    if not math.isfinite(value):
        raise ValueError(f"expected a finite number, got {value!r}")
    if meta.get("positive") and value <= 0:
        raise ValueError(f"expected a positive number, got {value!r}")
    if meta.get("minimum") is not None and value < meta["minimum"]:
        raise ValueError(f"expected a number >= {meta['minimum']}, got {value!r}")
    if meta.get("below") is not None and value >= meta["below"]:
        raise ValueError(f"expected a number below {meta['below']}, got {value!r}")


def parse_field(cls, name: str, text: str):
    """The value of field `name` of config class `cls` given as text (a ValueError names what was expected)."""
    f = next(f for f in fields(cls) if f.name == name)
    return _parse(_hints(cls)[name], text, dict(f.metadata))


def flag_prefix(cls, method: str) -> str:
    return getattr(cls, "flag_prefix", None) or method


def config_fields(cls) -> list:
    return [f for f in fields(cls) if f.init]


def default_text(f) -> str:
    value = f.default if f.default is not MISSING else f.default_factory()
    if isinstance(value, tuple) and len(value) > 8:  # a long grid: its size and ends, not 60 numbers
        return f"{len(value)} values from {value[0]} to {value[-1]}"
    if isinstance(value, tuple):
        return ",".join(map(str, value))
    return str(value).lower() if isinstance(value, bool) or value is None else str(value)


def config_from_dict(cls, values: dict, what: str):
    """A config rebuilt from saved JSON values, each checked by re-parsing its text form; unknown or
    malformed values are a UserError naming `what` (e.g. the model file)."""
    if not isinstance(values, dict):
        raise UserError(f"{what}: the method's config must be a JSON object, got {type(values).__name__}")
    known = {f.name for f in config_fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise UserError(f"{what}: unknown config field {unknown[0]!r} for {cls.__name__}")
    kwargs = {}
    for name, value in values.items():
        text = ",".join(map(str, value)) if isinstance(value, (list, tuple)) else \
            ("none" if value is None else str(value).lower() if isinstance(value, bool) else str(value))
        try:
            kwargs[name] = parse_field(cls, name, text)
        except (ValueError, TypeError) as err:
            raise UserError(f"{what}: config field {name!r} = {value!r} is invalid: {err}") from None
    return cls(**kwargs)



def checked_config(config, what: str):
    """`config` with every field checked as a flag's text would be (a config built in Python skips the
    parser: APEConfig(weights=(1, 2, 3)) is refused here, not an IndexError in a fit)."""
    from dataclasses import asdict

    return config_from_dict(type(config), asdict(config), what)
