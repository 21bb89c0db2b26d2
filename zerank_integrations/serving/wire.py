"""Request bodies in, errors out: the bounded JSON parser and the error type every route shares.

Nothing here knows a dialect. A body is checked for size, content type, nesting depth, duplicate keys,
non-finite and oversized numbers *before* ``json.loads`` builds anything and before any model code runs, so
a hostile body costs a linear scan and gets a 4xx, never a ``RecursionError`` or a 500. Pydantic validation
errors become one message that names the field the way a client wrote it (``documents[3].text``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any

import numpy as np
from pydantic import ValidationError

DEFAULT_MAX_DEPTH = 32
MAX_INTEGER_DIGITS = 4300  # CPython's own bound on str -> int (quadratic beyond it)

_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")


class ApiError(Exception):
    """A request the server refuses, rendered in the error shape of the dialect that received it."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        param: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.headers = dict(headers or {})


def check_content_type(content_type: str | None) -> None:
    """JSON, or no content type at all (curl without -H); anything else is 415."""
    if content_type is None:
        return
    media = content_type.split(";", 1)[0].strip().lower()
    if media in ("", "application/json") or (media.startswith("application/") and media.endswith("+json")):
        return
    raise ApiError(415, f"Content-Type {media!r} is not supported; send the body as application/json")


def json_depth(body: bytes) -> int:
    """The deepest nesting of arrays and objects in ``body``, counted without recursion.

    Strings are blanked first (their brackets do not count); what remains is reduced to brackets and
    summed as +1/-1 steps with numpy, so an 8 MiB body of ``[[[[...`` costs milliseconds.
    """
    structure = _STRING.sub(b"", body).translate(None, _NOT_BRACKETS)
    if not structure:
        return 0
    codes = np.frombuffer(structure, dtype=np.uint8)
    steps = np.where((codes == ord("[")) | (codes == ord("{")), 1, -1).astype(np.int32)
    return int(np.cumsum(steps).max())


def _no_duplicates(pairs: Sequence[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise _BadJson(f"the key {key!r} appears twice in one object; send it once")
        result[key] = value
    return result


def _integer(text: str) -> int:
    if len(text.lstrip("-")) > MAX_INTEGER_DIGITS:
        raise _BadJson(f"the number {text[:20]}... has more than {MAX_INTEGER_DIGITS} digits")
    return int(text)


def _number(text: str) -> float | int:
    """A finite float; an integral one (``135.0``, ``1e2``) is an integer, as JSON Schema counts it."""
    value = float(text)
    if value in (float("inf"), float("-inf")):
        raise _BadJson(f"the number {text[:20]} is too large for a 64-bit float")
    return int(value) if value.is_integer() and abs(value) <= 2**53 else value


def _no_constant(name: str) -> Any:
    raise _BadJson(f"{name} is not valid JSON; send a finite number or null")


class _BadJson(ValueError):
    """Raised by the parser hooks; becomes a 400 with the message as is."""


def parse_json(body: bytes, *, max_depth: int = DEFAULT_MAX_DEPTH) -> Any:
    """Decode a UTF-8 JSON body or raise ``ApiError(400)`` saying exactly what is wrong with it."""
    if not body.strip():
        raise ApiError(400, "the request body is empty; expected a JSON object")
    depth = json_depth(body)
    if depth > max_depth:
        raise ApiError(400, f"the JSON body is nested {depth} levels deep; this server accepts at most {max_depth}")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as error:
        raise ApiError(400, f"the request body is not valid UTF-8 (byte {error.start})") from None
    try:
        return json.loads(
            text,
            object_pairs_hook=_no_duplicates,
            parse_int=_integer,
            parse_float=_number,
            parse_constant=_no_constant,
        )
    except _BadJson as error:
        raise ApiError(400, f"malformed JSON: {error}") from None
    except json.JSONDecodeError as error:
        raise ApiError(400, f"malformed JSON: {error.msg} at line {error.lineno} column {error.colno}") from None
    except (RecursionError, ValueError):  # belt and braces: the depth check should make these unreachable
        raise ApiError(400, "malformed JSON: the body could not be decoded") from None


def json_type(value: Any) -> str:
    """How a JSON value reads in an error message."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return f"a number ({value!r})"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def field_path(loc: Sequence[int | str]) -> str:
    """``("documents", 3, "text")`` -> ``documents[3].text``."""
    path = ""
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        else:
            path += f".{part}" if path else str(part)
    return path


def validation_error(error: ValidationError) -> ApiError:
    """The first problem pydantic found, as a 422 whose message and ``param`` name the field."""
    first = error.errors(include_url=False)[0]
    loc = [part for part in first["loc"] if not _is_union_branch(part)]
    field = field_path(loc) or "the request body"
    kind = first["type"]
    given = first.get("input")
    ctx = first.get("ctx") or {}
    if kind == "missing":
        message = f"'{field}' is required"
    elif kind in ("int_type", "int_parsing", "int_from_float"):
        message = f"'{field}' must be an integer, got {json_type(given)}"
    elif kind in ("bool_type", "bool_parsing"):
        message = f"'{field}' must be true or false, got {json_type(given)}"
    elif kind in ("string_type", "string_unicode"):
        message = f"'{field}' must be a string, got {json_type(given)}"
    elif kind in ("list_type", "tuple_type"):
        message = f"'{field}' must be an array, got {json_type(given)}"
    elif kind in ("model_type", "model_attributes_type", "dict_type"):
        message = f"'{field}' must be a JSON object, got {json_type(given)}"
    elif kind == "greater_than_equal":
        message = f"'{field}' must be >= {ctx.get('ge')}, got {given!r}"
    elif kind == "less_than_equal":
        message = f"'{field}' must be <= {ctx.get('le')}, got {given!r}"
    elif kind == "literal_error":
        message = f"'{field}' must be {ctx.get('expected')}, got {given!r}"
    elif kind == "string_pattern_mismatch":
        message = f"'{field}' is empty or whitespace-only"
    else:  # our own validators' messages (PydanticCustomError) are written for clients already
        message = f"'{field}': {first['msg']}" if field != "the request body" else first["msg"]
    return ApiError(422, message, param=field if loc else None)


def _is_union_branch(part: int | str) -> bool:
    """Pydantic adds the union member tried (``str``, ``TextDocument``, ``function-after[...]``) to ``loc``."""
    return isinstance(part, str) and (part[:1].isupper() or "[" in part or part in ("str", "int", "bool", "list"))
