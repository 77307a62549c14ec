"""Checked config values: :class:`ConfigError` and the checkers every config table is read with.

A checker is called with a value (from TOML or a request) and returns it, or raises
ValueError saying what was expected and what came (``must be an integer from 1 to 65535,
got '95x'``); :func:`_checked_table` prefixes the file and key.  Kept apart
from :mod:`zbroker.config`, which lays out the tables with them.
"""

from __future__ import annotations

from typing import Any, Callable

class ConfigError(ValueError):
    """A configuration problem; the message names the file (if any) and the key."""


# -- value checkers --------------------------------------------------------------
# A setting is declared as ``key: (default, checker)``.  A checker is called with a typed
# value (from TOML or from a request's msgpack) and returns it, or raises ValueError with
# a phrase that completes "KEY: ...", naming the expected type and the value it got.  It
# never converts: the string "1000" is not an integer.  Its ``from_text`` reads the text
# form a command line gives (``--config retention_ms=1000``), converting only the type.

INT64_MAX = 2**63 - 1  # every integer setting fits in Kafka's int64 (and in msgpack)
_SHOWN_CHARS = 60  # values are echoed in errors up to this many characters


def _show(v: Any) -> str:
    text = repr(v)
    if len(text) > _SHOWN_CHARS:
        text = f"{text[:_SHOWN_CHARS]}... ({type(v).__name__} of {len(v) if hasattr(v, '__len__') else '?'})"
    if isinstance(v, str) and v.strip() and _looks_numeric(v):
        text += " (a string)"
    return text


def _looks_numeric(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


class _Checker:
    expected = "a value"

    def __call__(self, v: Any) -> Any:
        if not self.fits(v):
            raise ValueError(f"must be {self.expected}, got {_show(v)}")
        return v

    def fits(self, v: Any) -> bool:
        raise NotImplementedError

    def from_text(self, text: str) -> Any:
        return text


class _Int(_Checker):
    def __init__(self, lo: int | None, hi: int | None) -> None:
        self.lo, self.hi = lo, hi
        self.expected = f"an integer{_range(lo, hi)}"

    def fits(self, v: Any) -> bool:
        if isinstance(v, bool) or not isinstance(v, int):
            return False
        return (self.lo is None or v >= self.lo) and v <= (INT64_MAX if self.hi is None else self.hi)

    def __call__(self, v: Any) -> int:
        if not self.fits(v) and isinstance(v, int) and not isinstance(v, bool) and v > INT64_MAX:
            raise ValueError(f"must be {self.expected}, got {_show(v)} (more than 2**63-1)")
        return super().__call__(v)

    def from_text(self, text: str) -> Any:
        t = text.strip()
        return int(t) if t.lstrip("-").isascii() and t.lstrip("-").isdigit() and t.count("-") <= 1 else text


def _int(lo: int | None = None, hi: int | None = None) -> _Int:
    return _Int(lo, hi)


def _range(lo: float | None, hi: float | None) -> str:
    if lo is not None and hi is not None:
        return f" from {lo} to {hi}"
    if lo is not None:
        return f" >= {lo}"
    return ""


class _Float(_Checker):
    def __init__(self, lo: float, hi: float) -> None:
        self.lo, self.hi = lo, hi
        self.expected = f"a number from {lo} to {hi}"

    def fits(self, v: Any) -> bool:
        return isinstance(v, (int, float)) and not isinstance(v, bool) and self.lo <= v <= self.hi

    def __call__(self, v: Any) -> float:
        return float(super().__call__(v))

    def from_text(self, text: str) -> Any:
        return float(text) if _looks_numeric(text) else text


def _float(lo: float, hi: float) -> _Float:
    return _Float(lo, hi)


class _Bool(_Checker):
    expected = "true or false"

    def fits(self, v: Any) -> bool:
        return isinstance(v, bool)

    def from_text(self, text: str) -> Any:
        return {"true": True, "false": False}.get(text.strip().lower(), text)


class _Choice(_Checker):
    def __init__(self, *options: str) -> None:
        self.options = options
        self.expected = f"one of {', '.join(repr(o) for o in options)}"

    def fits(self, v: Any) -> bool:
        return isinstance(v, str) and v in self.options


def _choice(*options: str) -> _Choice:
    return _Choice(*options)


class _Str(_Checker):
    expected = "a non-empty string"

    def fits(self, v: Any) -> bool:
        return isinstance(v, str) and bool(v)


_bool = _Bool()
_str = _Str()


class _Z85Key(_Checker):
    expected = "a CURVE public key: 40 characters of Z85 (`zbroker keys generate` prints it)"
    ALPHABET = frozenset("0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ.-:+=^!/*?&<>()[]{}@%$#")

    def fits(self, v: Any) -> bool:
        return isinstance(v, str) and len(v) == 40 and set(v) <= self.ALPHABET


class _StrList(_Checker):
    def __init__(self, item: Callable[[str], bool], expected: str) -> None:
        self.item = item
        self.expected = expected

    def fits(self, v: Any) -> bool:
        return isinstance(v, list) and all(isinstance(x, str) and self.item(x) for x in v) and len(set(v)) == len(v)


class _Secret(_Checker):
    expected = f"a string of at least {32} characters (e.g. `python3 -c 'import secrets; print(secrets.token_urlsafe(32))'`)"

    def fits(self, v: Any) -> bool:
        return isinstance(v, str) and len(v) >= 32


def _checked_table(table: Any, schema: dict, where: str, defaults: bool) -> dict[str, Any]:
    if not isinstance(table, dict):
        raise ConfigError(f"{where}: must be a table")
    out = {}
    for key, value in table.items():
        spec = schema.get(key)
        if spec is None:
            raise ConfigError(f"{where}.{key}: unknown key (known: {', '.join(sorted(schema))})")
        checker = spec[1] if isinstance(spec, tuple) else spec
        try:
            out[key] = checker(value)
        except ValueError as exc:
            raise ConfigError(f"{where}.{key}: {exc}") from None
    if defaults:
        for key, spec in schema.items():
            out.setdefault(key, spec[0])
    return out
