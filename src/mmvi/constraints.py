"""Constraints on settings, declared once beside the parameter they constrain.

A class (or function) lists its parameters' constraints in a ``constraints`` attribute::

    class MultiPrediction(Objective):
        constraints = {"mask_rate": Interval(0, 1), "mf_steps": Interval(1, integer=True), ...}

:func:`check_params` checks given values against them; the pre-flight check
(:mod:`mmvi.config_check`) reads them from every ``_target_`` of a config before any data are read,
and constructors call :func:`check_params` on their own arguments, so the rule lives in one place
(as scikit-learn's ``_parameter_constraints``). Each failure is one :class:`~mmvi.errors.ConfigError`
naming the key and what is allowed.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from mmvi.errors import ConfigError


class Constraint(ABC):
    """One setting's rule: :meth:`problem` says what is wrong with a value (None: it is allowed)."""

    allow_none: bool = False

    @abstractmethod
    def problem(self, value: Any) -> str | None:
        """What is wrong with ``value`` (e.g. ``is out of range``), or None when it is allowed."""

    @abstractmethod
    def describe(self) -> str:
        """What is allowed, for the error message."""


def _is_number(x: Any) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool)


@dataclass(frozen=True)
class Interval(Constraint):
    """A number in [low, high] (``closed``: which ends belong to it); ``integer`` for whole numbers."""

    low: float | None = None
    high: float | None = None
    closed: str = "both"  # both | left | right | neither
    integer: bool = False
    allow_none: bool = False

    def contains(self, x: float) -> bool:
        lo_ok = self.low is None or (x >= self.low if self.closed in ("both", "left") else x > self.low)
        hi_ok = self.high is None or (x <= self.high if self.closed in ("both", "right") else x < self.high)
        return lo_ok and hi_ok and (not self.integer or x == int(x))

    def problem(self, value: Any) -> str | None:
        if not _is_number(value):
            return "has the wrong type"
        if not math.isfinite(float(value)) or not self.contains(float(value)):
            return "is out of range"
        return None

    def describe(self) -> str:
        kind = "an integer" if self.integer else "a number"
        if self.low is not None and self.high is None:
            text = f"{kind} {'>=' if self.closed in ('both', 'left') else '>'} {self.low:g}"
        elif self.low is None and self.high is not None:
            text = f"{kind} {'<=' if self.closed in ('both', 'right') else '<'} {self.high:g}"
        elif self.low is None:
            text = kind
        else:
            left = "[" if self.closed in ("both", "left") else "("
            right = "]" if self.closed in ("both", "right") else ")"
            text = f"{kind} in {left}{self.low:g}, {self.high:g}{right}"
        return text + (" (or null)" if self.allow_none else "")


@dataclass(frozen=True)
class Options(Constraint):
    """One of the listed values."""

    values: tuple
    allow_none: bool = False

    def problem(self, value: Any) -> str | None:
        return None if value in self.values else "is not allowed"

    def describe(self) -> str:
        return ", ".join(str(v) for v in self.values) + (" (or null)" if self.allow_none else "")


@dataclass(frozen=True)
class Flag(Constraint):
    """true or false."""

    allow_none: bool = False

    def problem(self, value: Any) -> str | None:
        return None if isinstance(value, bool) else "has the wrong type"

    def describe(self) -> str:
        return "true, false"


@dataclass(frozen=True)
class NumberList(Constraint):
    """A non-empty list of numbers, each allowed by ``item``."""

    item: Interval = field(default_factory=Interval)
    allow_none: bool = False

    def problem(self, value: Any) -> str | None:
        if not isinstance(value, list | tuple) or not value:
            return "is not allowed"
        return "is not allowed" if any(self.item.problem(x) for x in value) else None

    def describe(self) -> str:
        return f"a non-empty list of numbers{self.item.describe().removeprefix('a number')}"


@dataclass(frozen=True)
class OptionList(Constraint):
    """A non-empty list of distinct values, each one of ``values``."""

    values: tuple
    allow_none: bool = False

    def problem(self, value: Any) -> str | None:
        if not isinstance(value, list | tuple) or not value or len(set(map(str, value))) != len(value):
            return "is not allowed"
        return None if all(v in self.values for v in value) else "is not allowed"

    def describe(self) -> str:
        return "a non-empty list of distinct values of " + ", ".join(str(v) for v in self.values)


@dataclass(frozen=True)
class NameList(Constraint):
    """A non-empty list of names (e.g. modalities)."""

    allow_none: bool = False
    what: str = "names"

    def problem(self, value: Any) -> str | None:
        ok = isinstance(value, list | tuple) and value and all(isinstance(x, str) for x in value)
        return None if ok else "is not allowed"

    def describe(self) -> str:
        return f"a non-empty list of {self.what}" + (", or null (all)" if self.allow_none else "")


@dataclass(frozen=True)
class LoggedMeasure(Constraint):
    """The name of a per-epoch measure the training logs (``val/...`` or ``train/...``), or with
    ``many`` a list of them."""

    many: bool = False
    allow_none: bool = False

    def problem(self, value: Any) -> str | None:
        if self.many and not isinstance(value, list | tuple):
            return "is not allowed"
        items = value if self.many else [value]
        ok = all(isinstance(m, str) and m.startswith(("val/", "train/")) for m in items)
        return None if ok else "is not allowed"

    def describe(self) -> str:
        what = "logged per-epoch measure"
        return (
            f"a list of {what}s (val/..., train/...)"
            if self.many
            else f"a {what} (val/..., e.g. val/cond_ce/sum, or train/...)"
        )


@dataclass(frozen=True)
class Settings(Constraint):
    """A mapping of known keys, each with its own constraint (``open``: other keys allowed)."""

    keys: Mapping[str, Constraint | None]
    open: bool = False
    allow_none: bool = False
    what: str = "a mapping of settings"
    wrong: str = "has the wrong type"  # what a value that is no mapping is said to be

    def problem(self, value: Any) -> str | None:
        return None if isinstance(value, Mapping) else self.wrong

    def describe(self) -> str:
        return self.what


@dataclass(frozen=True)
class MappingOf(Constraint):
    """A mapping whose every value is allowed by ``value`` (keys: any names)."""

    value: Constraint
    allow_none: bool = False
    example: str = ""

    def problem(self, value: Any) -> str | None:
        return None if isinstance(value, Mapping) else "is not allowed"

    def describe(self) -> str:
        return "a mapping" + (f", e.g. {self.example}" if self.example else "")


INT0 = Interval(0, integer=True)
INT1 = Interval(1, integer=True)
POSITIVE = Interval(0, closed="neither")
NON_NEGATIVE = Interval(0)
PROBABILITY = Interval(0, 1)


def check(where: str, value: Any, constraint: Constraint | None) -> None:
    """Raise a one-line :class:`ConfigError` when ``value`` breaks ``constraint`` (nested settings too).

    Raises:
        ConfigError: ``<where>=<value> is out of range; allowed: <what is allowed>``.
    """
    if constraint is None or (value is None and constraint.allow_none):
        return
    problem = "is not allowed" if value is None else constraint.problem(value)
    if problem:
        raise ConfigError(f"{where}={value!r} {problem}; allowed: {constraint.describe()}")
    if isinstance(constraint, Settings):
        if not constraint.open:
            unknown = sorted(set(value) - set(constraint.keys))
            if unknown:
                raise ConfigError(
                    f"{where}.{unknown[0]} is not a setting; allowed: {', '.join(constraint.keys)}"
                )
        check_params(where, value, constraint.keys)
    elif isinstance(constraint, MappingOf):
        for k, v in value.items():
            check(f"{where}.{k}", v, constraint.value)


def check_params(where: str, params: Mapping[str, Any], constraints: Mapping[str, Constraint | None]) -> None:
    """Check each of ``params`` that ``constraints`` names (``where``: the dotted prefix of the keys)."""
    for key, constraint in constraints.items():
        if key in params:
            check(f"{where}.{key}" if where else key, params[key], constraint)


def declared(target: Any) -> dict[str, Constraint | None]:
    """The constraints a class declares (merged along its bases, the most derived winning) or a
    function declares (its ``constraints`` attribute); empty when none."""
    if isinstance(target, type):
        out: dict[str, Constraint | None] = {}
        for cls in reversed(target.__mro__):
            out.update(cls.__dict__.get("constraints") or {})
        return out
    return dict(getattr(target, "constraints", None) or {})


def check_arguments(obj: Any, **params: Any) -> None:
    """A constructor's check of its own arguments against its class's declared constraints."""
    check_params(type(obj).__name__, params, declared(type(obj)))
