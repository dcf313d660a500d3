"""Option values coerced without pydantic where the result is unambiguous.

typer (from 0.2x) coerces every parameter value, defaults included, through a pydantic TypeAdapter: importing
pydantic and building one adapter per option costs about 0.15 s of CPU on every run, more than scoring a split
from a warm cache. Here a value whose coercion leaves no doubt (a default already of the annotated type, a plain
decimal number, a string, a path, a listed choice) is coerced directly, with typer's own path and choice checks
and the option's min/max; any other value, and every value out of range, goes to typer's coercion, so what a
command receives, and every error message, is exactly typer's. Older typers (click types, no pydantic) are left
as they are.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

_INT = re.compile(r"-?(?:0|[1-9][0-9]{0,17})")
_FLOAT = re.compile(r"-?(?:0|[1-9][0-9]{0,14})(?:\.[0-9]{1,15})?")
_UNDECIDED = object()


class _Coercion:
    """Stands in for typer's runtime coercion of one parameter (the object its `get_runtime_param` returns)."""

    def __init__(self, param):
        self.param = param
        self.typer_coercion = None

    def coerce(self, value: Any, param, ctx) -> Any:
        result = _plain_value(value, param, ctx)
        if result is not _UNDECIDED:
            return result
        if self.typer_coercion is None:
            from typer._coercion import build_runtime_param

            self.typer_coercion = build_runtime_param(param.type_descriptor)
        return self.typer_coercion.coerce(value, param=param, ctx=ctx)


def _in_range(number, info) -> bool:
    return (info.min is None or number >= info.min) and (info.max is None or number <= info.max)


def _plain_value(value: Any, param, ctx) -> Any:
    from typer._param_types import coerce_cli_choice, coerce_cli_path, routes_to_path

    desc = param.type_descriptor
    info, annotation = desc.parameter_info, desc.annotation
    if param.multiple or param.nargs != 1 or info.parser is not None or desc.is_file or info.clamp:
        return _UNDECIDED
    if value is None:
        return None                                  # as typer's coercion returns it
    if desc.is_choice:
        try:
            return coerce_cli_choice(value, choices=desc.choices, case_sensitive=desc.case_sensitive, ctx=ctx)
        except ValueError:
            return _UNDECIDED
    if annotation is str:
        return value if type(value) is str else _UNDECIDED
    if annotation is int or annotation is float:
        number = value
        if type(value) is str and (_INT if annotation is int else _FLOAT).fullmatch(value):
            number = annotation(value)
        if type(number) is annotation and _in_range(number, info):
            return number
        return _UNDECIDED
    if annotation is Path and info.path_type is None and routes_to_path(annotation, info):
        if type(value) is str and value and "\0" not in value:
            value = Path(value)
        if isinstance(value, Path):                  # typer's own checks (exists, readable...) on the Path
            return coerce_cli_path(value, info, path_type=Path, param=param, ctx=ctx)
    return _UNDECIDED


def use_plain_coercion(command) -> None:
    """Give every parameter of the command tree the coercion above (typers that coerce with pydantic only)."""
    # The help option too: click makes it once per command and keeps it (`polish_help` has made it by now).
    for param in [*command.params, getattr(command, "_help_option", None)]:
        if getattr(param, "_runtime_param", False) is None and hasattr(param, "type_descriptor"):
            param._runtime_param = _Coercion(param)
    for sub in getattr(command, "commands", {}).values():
        use_plain_coercion(sub)
