"""Node-RED property expressions (`a.b`, `a[0]`, `a["x.y"]`, `a['z']`) on JSON values: pure.

Parsing follows Node-RED's `normalisePropertyExpression`: dot-separated identifiers and
bracketed indices or quoted keys; anything else is `Invalid property expression: …`. A
segment of digits followed by a dot is an index there (`a.1.b` is `a[1].b`, so a missing `a`
is created as an array), one at the end is a name (`a.1`). As in JavaScript, a name that is
an index's digits (`"1"`, not `"01"`) names that element of an array.
"""

from __future__ import annotations

import math
from typing import Any

from .jsvalues import array_index

Path = list[str | int]


class InvalidExpression(ValueError):
    def __init__(self, detail: str):
        super().__init__(f"Invalid property expression: {detail}")


class PaddingTooLong(ValueError):
    """A set would pad an array with more nulls than it may."""


def parse_for_set(expr: str) -> Path:
    """A path as Node-RED's setMessageProperty takes it, which upstream sets with: a leading
    `msg.` is dropped first."""
    return parse(expr[4:] if isinstance(expr, str) and expr.startswith("msg.") else expr)


def parse(expr: str) -> Path:
    if not isinstance(expr, str) or expr == "":
        raise InvalidExpression("zero-length")
    parts: Path = []
    i, n = 0, len(expr)
    expect_name = True  # at the start and after a '.'
    while i < n:
        c = expr[i]
        if c == ".":
            if expect_name:
                raise InvalidExpression(f"unexpected . at position {i}")
            expect_name = True
            i += 1
        elif c == "[":
            if expect_name and parts:
                raise InvalidExpression(f"unexpected [ at position {i}")
            i = _bracket(expr, i, parts)
            expect_name = False
        elif c in "]\"'":
            raise InvalidExpression(f"unexpected {c} at position {i}")
        else:
            if not expect_name:
                raise InvalidExpression(f"unexpected {c} at position {i}")
            start = i
            while i < n and expr[i] not in ".[]\"'":
                if expr[i] in " {}":
                    raise InvalidExpression(f"unexpected {expr[i]} at position {i}")
                i += 1
            name = expr[start:i]
            before_dot = i < n and expr[i] == "."
            parts.append(int(name) if before_dot and name.isascii() and name.isdigit() else name)
            expect_name = False
    if expect_name:
        raise InvalidExpression("unterminated expression" if parts else "zero-length")
    return parts


def _bracket(expr: str, i: int, parts: Path) -> int:
    """Parse `[...]` starting at expr[i] == '['; returns the index after ']'."""
    n = len(expr)
    j = i + 1
    if j < n and expr[j] in "\"'":
        quote, j = expr[j], j + 1
        end = expr.find(quote, j)
        if end < 0:
            raise InvalidExpression(f"unterminated string starting at position {i + 1}")
        if end + 1 >= n or expr[end + 1] != "]":
            raise InvalidExpression(f"unexpected character at position {end + 1}")
        parts.append(expr[j:end])
        return end + 2
    end = expr.find("]", j)
    if end < 0:
        raise InvalidExpression(f"unterminated [ at position {i}")
    inner = expr[j:end]
    if not (inner.isascii() and inner.isdigit()):
        raise InvalidExpression(f"unexpected {inner[:1] or ']'} at position {j}")
    parts.append(int(inner))
    return end + 1


def get(obj: Any, path: Path) -> tuple[bool, Any]:
    """(found, value) at `path`; a path through a non-object is not found."""
    for key in path:
        index = _index(obj, key)
        if index is not None and index < len(obj):
            obj = obj[index]
        elif isinstance(obj, dict) and str(key) in obj:
            obj = obj[str(key)]
        else:
            return False, None
    return True, obj


def set_value(root: dict, path: Path, value: Any, max_padding: float = math.inf) -> int:
    """Set `value` at `path`, creating objects (or arrays, for an index) on the way; the nulls
    an index past an array's end padded it with (PaddingTooLong past `max_padding`: nothing
    is padded then). A path beneath a plain value sets nothing,
    as Node-RED's setObjectProperty "cannot create a property beneath" it (nothing has been
    created when one is met); beneath an object's null member neither. (Beneath an array's
    null, Node-RED throws; we create.)"""
    obj: Any = root
    padded = 0
    for key, following in zip(path, path[1:], strict=False):
        if _beneath_a_plain_value(obj, key):
            return 0
        child = _child(obj, key)
        if not isinstance(child, (dict, list)):
            child = [] if isinstance(following, int) else {}
            padded += _put(obj, key, child, max_padding - padded)
        obj = child
    return padded + _put(obj, path[-1], value, max_padding - padded)


def _beneath_a_plain_value(obj: Any, key: str | int) -> bool:
    if isinstance(obj, dict):
        return not isinstance(obj.get(str(key), {}), (dict, list))
    index = _index(obj, key)
    if index is not None and index < len(obj):
        return obj[index] is not None and not isinstance(obj[index], (dict, list))
    return False


def delete(root: dict, path: Path) -> None:
    """Node-RED's setObjectProperty with no value: an index (`a[1]`, `a.1.b`'s 1) is spliced
    out of its array, a name (`a.1`) deleted, which in an array leaves a hole (null in JSON)."""
    found, parent = get(root, path[:-1])
    if not found:
        return
    key, index = path[-1], _index(parent, path[-1])
    if isinstance(parent, dict):
        parent.pop(str(key), None)
    elif index is not None and index < len(parent):
        if isinstance(key, int):
            del parent[index]
        else:
            parent[index] = None


def _index(obj: Any, key: str | int) -> int | None:
    """The element of the array `obj` that `key` names, if it is an array and `key` an index."""
    return array_index(key) if isinstance(obj, list) else None


def _child(obj: Any, key: str | int) -> Any:
    index = _index(obj, key)
    if index is not None:
        return obj[index] if index < len(obj) else None
    if isinstance(obj, dict):
        return obj.get(str(key))
    return None


def _put(obj: Any, key: str | int, value: Any, max_padding: float) -> int:
    """Put `value` under `key`; the nulls an index past the end padded the array with."""
    if isinstance(obj, list):
        index = _index(obj, key)
        if index is not None:
            padding = max(0, index - len(obj))
            if padding > max_padding:
                raise PaddingTooLong(f"an index pads an array with {padding} nulls")
            obj.extend([None] * (index + 1 - len(obj)))
            obj[index] = value
            return padding
        # a named property of an array: JavaScript keeps it, JSON drops it
    else:
        obj[str(key)] = value
    return 0
