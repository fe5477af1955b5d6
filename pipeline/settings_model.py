"""How a group of settings reads its `PIPELINE_*` variables: a frozen pydantic model whose
fields' aliases are their variables, read through pydantic-settings' environment source from
the process environment or a given mapping; overrides keyed by variable; bad values turned
into one readable line per problem that names the variable (SettingsError).
pipeline/settings.py declares the pipeline's groups with it; serving/, streaming/ and
analysis/ declare theirs.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any, Optional, get_args

import pydantic
from pydantic import BaseModel, ConfigDict
from pydantic_settings import EnvSettingsSource
from pydantic_settings.sources.utils import parse_env_vars
from typing_extensions import Self

ENV_PREFIX = "PIPELINE_"


class SettingsError(ValueError):
    """A setting that cannot work; the message names the PIPELINE_* variable to change."""


# ---- loading ---------------------------------------------------------------------------------


class _MappingSource(EnvSettingsSource):
    """pydantic-settings' environment source over a given mapping (the process environment
    by default), descending into the groups of a tree: every field is read from the variable
    its alias names (never from a nested `PIPELINE_DATA__...` name, nor its field name)."""

    def __init__(
        self, settings_cls: type[SettingsModel], environ: Optional[Mapping[str, str]] = None
    ):
        self._environ = os.environ if environ is None else environ
        super().__init__(settings_cls, case_sensitive=True, env_ignore_empty=True)

    def _load_env_vars(self) -> Mapping[str, Optional[str]]:
        return parse_env_vars(
            self._environ, self.case_sensitive, self.env_ignore_empty, self.env_parse_none_str
        )

    def __call__(self) -> dict[str, Any]:
        values = super().__call__()
        for name, field in self.settings_cls.model_fields.items():
            if _is_group(field.annotation):
                values[name] = type(self)(field.annotation, self._environ)()
        return values


class SettingsModel(BaseModel):
    """A frozen group of settings, each field read from the variable its alias names.

    `load(environ, **overrides)`: defaults, then the variables of `environ` (the process
    environment by default; empty values count as unset), then `overrides` (by field name;
    a tree such as PipelineSettings takes the variable's name instead, see SettingsTree).
    Validation never reads the environment: only `load` does."""

    model_config = ConfigDict(frozen=True, extra="forbid", protected_namespaces=())

    @classmethod
    def load(cls, environ: Optional[Mapping[str, str]] = None, **overrides: Any) -> Self:
        return cls._validated(_deep_update(_MappingSource(cls, environ)(), cls._nested(overrides)))

    def with_overrides(self, **overrides: Any) -> Self:
        """A validated copy with these settings changed (the keys `load` takes)."""
        return self._validated(
            _deep_update(self.model_dump(by_alias=True), self._nested(overrides))
        )

    @classmethod
    def override_keys(cls) -> dict[str, list[tuple[str, ...]]]:
        """Override key -> where its value goes in the validated input: a group's field's
        alias (its variable), under the group's name. In a group: its field names."""
        return {
            name: [(field.alias or name,)]
            for name, field in cls.model_fields.items()
            if not _is_group(field.annotation)
        }

    @classmethod
    def _nested(cls, overrides: Mapping[str, Any]) -> dict[str, Any]:
        keys = cls.override_keys()
        nested: dict[str, Any] = {}
        for key, value in overrides.items():
            if key not in keys:
                raise TypeError(
                    f"{cls.__name__} has no setting {key!r}; settings: {', '.join(sorted(keys))}"
                )
            for *groups, leaf in keys[key]:
                node = nested
                for group in groups:
                    node = node.setdefault(group, {})
                node[leaf] = value
        return nested

    @classmethod
    def _validated(cls, values: dict[str, Any]) -> Self:
        try:
            return cls.model_validate(values)
        except pydantic.ValidationError as error:
            raise SettingsError(readable(error, cls)) from None


def _is_group(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, SettingsModel)


def _deep_update(base: dict[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in update.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = _deep_update(merged[key], value)
        else:
            merged[key] = value
    return merged


def env_fields(cls: type[SettingsModel]):
    """(group path, field name, FieldInfo) of every variable of a settings tree, in order."""
    for name, field in cls.model_fields.items():
        if _is_group(field.annotation):
            for path, leaf, info in env_fields(field.annotation):
                yield (name, *path), leaf, info
        else:
            yield (), name, field


# ---- readable errors -------------------------------------------------------------------------

_EXPECTED = {
    "int_parsing": "integer",
    "int_type": "integer",
    "int_from_float": "integer",
    "float_parsing": "number",
    "float_type": "number",
    "bool_parsing": "bool (1, true, yes, on or 0, false, no, off)",
    "bool_type": "bool",
    "string_type": "text",
}
_BOUNDS = ("greater_than", "greater_than_equal", "less_than", "less_than_equal")


def readable(error: pydantic.ValidationError, cls: type[SettingsModel]) -> str:
    """One line per problem, each naming the variable: `PIPELINE_TRAIN_STEPS='x': expected
    integer`, `PIPELINE_PS_TASKS must be at least 1, got 0`, or a validator's own message."""
    lines = []
    for problem in error.errors(include_url=False):
        cause = problem.get("ctx", {}).get("error")
        if problem["type"] == "value_error" and cause is not None:
            lines.append(str(cause))
            continue
        field = _field_at(cls, problem["loc"])
        variable = (
            field.alias if field is not None and field.alias else ".".join(map(str, problem["loc"]))
        )
        value = problem["input"]
        if problem["type"] in _BOUNDS and field is not None:
            lines.append(f"{variable} must be {bounds_text(field)}, got {value}")
        elif problem["type"] == "literal_error" and field is not None:
            lines.append(
                f"{variable}={value!r}: expected one of "
                f"{', '.join(map(str, get_args(field.annotation)))}"
            )
        else:
            expected = _EXPECTED.get(problem["type"], problem["msg"])
            lines.append(f"{variable}={value!r}: expected {expected}")
    return "\n".join(lines)


def _field_at(cls: type[SettingsModel], loc: tuple) -> Optional[pydantic.fields.FieldInfo]:
    """The field a validation error's location names, by field name or alias."""
    model, field = cls, None
    for part in loc:
        if model is None:
            return None
        field = next((f for name, f in model.model_fields.items() if part in (name, f.alias)), None)
        if field is None:
            return None
        model = field.annotation if _is_group(field.annotation) else None
    return field


def bounds_text(field: pydantic.fields.FieldInfo) -> str:
    """A numeric field's bounds in words: "at least 1", "between 0 and 1", "in (0, 1]"."""
    bound = {
        kind: getattr(meta, kind)
        for meta in field.metadata
        for kind in ("gt", "ge", "lt", "le")
        if getattr(meta, kind, None) is not None
    }
    low = ("ge", bound["ge"]) if "ge" in bound else ("gt", bound["gt"]) if "gt" in bound else None
    high = ("le", bound["le"]) if "le" in bound else ("lt", bound["lt"]) if "lt" in bound else None
    if low and high:
        if low[0] == "ge" and high[0] == "le":
            return f"between {low[1]} and {high[1]}"
        if low[0] == "gt" and high[0] == "lt":
            return f"between {low[1]} and {high[1]} (exclusive)"
        opening, closing = "[" if low[0] == "ge" else "(", "]" if high[0] == "le" else ")"
        return f"in {opening}{low[1]}, {high[1]}{closing}"
    if low:
        if low == ("ge", 0):
            return "0 or more"
        return f"at least {low[1]}" if low[0] == "ge" else f"more than {low[1]}"
    if high:
        return f"at most {high[1]}" if high[0] == "le" else f"less than {high[1]}"
    return "valid"


class SettingsTree(SettingsModel):
    """Settings made of groups, whose overrides are keyed by variable: the name without
    PIPELINE_, lower-cased (`train_steps=5` sets PIPELINE_TRAIN_STEPS wherever it is read)."""

    @classmethod
    def override_keys(cls) -> dict[str, list[tuple[str, ...]]]:
        keys: dict[str, list[tuple[str, ...]]] = {}
        for path, _, field in env_fields(cls):
            keys.setdefault(field.alias.removeprefix(ENV_PREFIX).lower(), []).append(
                (*path, field.alias)
            )
        return keys


def env_config(prefix: str = "", title: Optional[str] = None) -> ConfigDict:
    """A group's config: each field's variable is PIPELINE_ + `prefix` + the field name in
    capitals (`env_config("BEAM_")`: preset -> PIPELINE_BEAM_PRESET); an explicit alias wins.
    `title` heads the group in the settings reference (default: the class name)."""
    config = ConfigDict(alias_generator=lambda name: ENV_PREFIX + prefix + name.upper())
    return ConfigDict(config, title=title) if title else config
