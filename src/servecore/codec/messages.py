"""The codec's error messages, shared by the compiled module and its pure-Python twin.

Both implementations detect errors independently; only the wording lives here, so a client sees
the same message whichever core runs.
"""

from __future__ import annotations

from servecore.errors import InvalidInputError


def json_type(value: object) -> str:
    """The JSON type name of a decoded JSON value."""
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if value is None:
        return "null"
    if isinstance(value, dict):
        return "object"
    return "array"


def bad_element(name: str, datatype: str, value: object) -> InvalidInputError:
    shown = repr(value) if len(repr(value)) <= 40 else repr(value)[:37] + "..."
    return InvalidInputError(
        f"input {name!r}: element {shown} of JSON type {json_type(value)} is not valid for datatype {datatype}"
    )


def out_of_range(name: str, datatype: str, value: object) -> InvalidInputError:
    return InvalidInputError(f"input {name!r}: value {value} is out of range for datatype {datatype}")


def too_deep(name: str, limit: int) -> InvalidInputError:
    return InvalidInputError(f"input {name!r}: JSON nesting depth exceeds maximum allowed limit ({limit})")
