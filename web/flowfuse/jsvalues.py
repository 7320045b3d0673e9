"""Values as upstream's JavaScript reads them, where its answers depend on that (pure):
truthiness, `Number(text)` and `parseInt(text)`, and decimal text as SQLite's numeric affinity
reads it."""

from __future__ import annotations

import math
import re

# StrWhiteSpaceChar: what Number() and parseInt() skip around (or before) a number
SPACE = " \t\n\v\f\r\u00a0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a" \
        "\u2028\u2029\u202f\u205f\u3000\ufeff"
SQLITE_SPACE = " \t\n\v\f\r"  # what SQLite's affinity conversion skips around a number
DECIMAL = re.compile(r"[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?", re.ASCII)
_NON_DECIMAL = re.compile(r"0([xX][0-9a-fA-F]+|[oO][0-7]+|[bB][01]+)", re.ASCII)
MAX_ARRAY_INDEX = 2**32 - 2  # a larger number names a property, as any text does
_INT_START = re.compile(r"[+-]?(0[xX][0-9a-fA-F]*|[0-9]+)", re.ASCII)


def falsy(value: object) -> bool:
    """`!value` for a JSON value: null, false, 0 and "" (an empty array or object is true)."""
    return value is None or value is False or value == "" or (type(value) in (int, float) and value == 0)


def number(text: str) -> float | None:
    """`Number(text)`; None where JavaScript gives NaN."""
    text = text.strip(SPACE)
    if not text:
        return 0
    if text.lstrip("+-") == "Infinity" and text.count("+") + text.count("-") <= 1:
        return -math.inf if text.startswith("-") else math.inf
    if _NON_DECIMAL.fullmatch(text):
        return int(text[2:], {"x": 16, "o": 8, "b": 2}[text[1].lower()])
    return float(text) if DECIMAL.fullmatch(text) else None


def parse_int(text: str) -> int | None:
    """`parseInt(text)`: the integer its start spells (hex after 0x); None where it gives NaN."""
    found = _INT_START.match(text.lstrip(SPACE))
    if found is None:
        return None
    digits = found.group(0)
    sign = -1 if digits.startswith("-") else 1
    digits = digits.lstrip("+-")
    if digits[:2].lower() == "0x":
        return sign * int(digits[2:], 16) if len(digits) > 2 else None  # "0x" alone: NaN
    return sign * int(digits)


def sqlite_number(text: str) -> float | None:
    """The number SQLite compares decimal text as (an INTEGER column against text); None for
    text it compares as text."""
    text = text.strip(SQLITE_SPACE)
    if not DECIMAL.fullmatch(text):
        return None
    return float(text) if "." in text or "e" in text.lower() else int(text)


def in_key_order(value: object) -> object:
    """`value` with each object's keys in JavaScript's order, as upstream stores and lists
    them: keys that are array indices ("0", "7", not "07") first, ascending, then the others
    as they were set."""
    if isinstance(value, list):
        return [in_key_order(item) for item in value]
    if not isinstance(value, dict):
        return value
    indices = sorted((index, key) for key in value if (index := array_index(key)) is not None)
    ordered = {key: in_key_order(value[key]) for _, key in indices}
    ordered.update((key, in_key_order(item)) for key, item in value.items() if key not in ordered)
    return ordered


def array_index(key: str | int) -> int | None:
    """The array index `key` is to JavaScript: a number, or the digits of one ("7", not "07"),
    up to MAX_ARRAY_INDEX; None for any other key."""
    if isinstance(key, str):
        # ten digits at most: any more are past the range (and past int()'s limit, at 4300)
        if not (key.isascii() and key.isdigit() and len(key) <= 10 and str(int(key)) == key):
            return None
        key = int(key)
    return key if 0 <= key <= MAX_ARRAY_INDEX else None
