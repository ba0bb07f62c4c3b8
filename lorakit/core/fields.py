"""Range and type rules for argument fields, declared once per field and checked the same way everywhere.

A rule sits in a field's metadata (``field(default=…, metadata={"help": …, "rule": Range(low=1)})``), or, for fields
a dataclass inherits from a library (the Trainer's), in a table handed to `check_fields`. Whatever the rules say,
NaN and ±inf are refused in every float field (and every float of a list field) unless its rule allows infinity.
"""

import dataclasses
import math
from dataclasses import dataclass

from lorakit.core.errors import ConfigError


@dataclass(frozen=True)
class Range:
    """The values a number may take: within [low, high] (an end left out is open-ended; `low_open`/`high_open` make
    an end exclusive), an integer if `integer`, None if `optional`, +inf if `allow_inf`, or one of `also`."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    integer: bool = False
    optional: bool = False
    allow_inf: bool = False
    also: tuple = ()

    def describe(self) -> str:
        if self.integer and self.low in (0, 1) and self.high is None:
            said = "must be a positive integer" if self.low == 1 else "must be a non-negative integer"
        elif self.low is not None and self.high is not None:
            left, right = "(" if self.low_open else "[", ")" if self.high_open else "]"
            said = f"must be {'an integer ' if self.integer else ''}in {left}{self.low:g}, {self.high:.10g}{right}"
        elif self.low is not None:
            said = f"must be {'an integer ' if self.integer else ''}{'>' if self.low_open else '≥'} {self.low:g}"
        else:
            said = "must be a finite number"
        extra = [str(v) for v in self.also] + ["inf"] * self.allow_inf + ["unset"] * self.optional
        return said + (f" (or {', '.join(extra)})" if extra else "")

    def allows(self, value) -> bool:
        if value is None:
            return self.optional
        if isinstance(value, bool) or not isinstance(value, int | float):
            return False
        if value in self.also or (self.allow_inf and value == math.inf):
            return True
        if isinstance(value, float) and not math.isfinite(value):
            return False
        if self.integer and not isinstance(value, int):  # 2.0 is not a count
            return False
        if self.low is not None and (value < self.low or (self.low_open and value == self.low)):
            return False
        return self.high is None or (value < self.high or (not self.high_open and value == self.high))


POSITIVE_INT = Range(low=1, integer=True)
COUNT = Range(low=0, integer=True)
POSITIVE = Range(low=0, low_open=True)
NON_NEGATIVE = Range(low=0)
PROBABILITY = Range(low=0, high=1, high_open=True)
FRACTION = Range(low=0, high=1, low_open=True, high_open=True)
SEED = Range(low=0, high=2**32 - 1, integer=True)


def rule_of(cls, name: str, rules: dict[str, Range]) -> Range | None:
    """A field's rule: in its own metadata, else in the metadata of the same field of a base dataclass (a subclass
    that changes a default keeps the rule), else in `rules`."""
    for klass in cls.__mro__:
        spec = getattr(klass, "__dataclass_fields__", {}).get(name)
        if spec is not None and "rule" in spec.metadata:
            return spec.metadata["rule"]
    return rules.get(name)


def check_fields(obj, rules: dict[str, Range] | None = None) -> None:
    """Check every init field of the dataclass `obj` against its rule (`rule_of`) and refuse non-finite floats
    in the others; raise ConfigError naming the first bad field."""
    for spec in dataclasses.fields(obj):
        if not spec.init:
            continue
        value = getattr(obj, spec.name, None)
        rule = rule_of(type(obj), spec.name, rules or {})
        values = value if isinstance(value, list | tuple) else [value]
        for item in values:
            if rule is not None and not rule.allows(item):
                raise ConfigError(f"{spec.name}: {rule.describe()}, got {item!r}")
            if rule is None and isinstance(item, float) and not math.isfinite(item):
                raise ConfigError(f"{spec.name}: must be a finite number, got {item!r}")


def no_duplicates(name: str, values: list) -> None:
    """Each value of a list setting at most once (a width or seed given twice would be trained and counted twice)."""
    seen = set()
    for value in values:
        if value in seen:
            raise ConfigError(f"{name}: {value!r} is given twice")
        seen.add(value)
