"""A settings model's validation error as the lines a user reads: one per problem, naming the
environment variable to set, and never echoing a secret's value."""

from __future__ import annotations

from collections.abc import Collection

from pydantic import AliasChoices, BaseModel, ValidationError


def describe_validation_error(
    exc: ValidationError, model: type[BaseModel], *, env_prefix: str, secret_fields: Collection[str]
) -> str:
    """One line per problem of `exc`, raised validating `model` from `env_prefix` variables."""
    lines = []
    for error in exc.errors():
        key = str(error["loc"][0]) if error["loc"] else ""
        field = _field_named(model, key)
        info = model.model_fields.get(field)
        alias = info.validation_alias if info else None
        if isinstance(alias, AliasChoices):
            variable = " or ".join(str(choice) for choice in alias.choices)
        else:
            variable = f"{env_prefix}{field.upper()}" if field else "settings"
        shown = field and field not in secret_fields and not isinstance(error.get("input"), dict)
        got = f" (got {error['input']!r})" if shown else ""
        lines.append(f"{variable}: {error['msg']}{got}")
    return "\n".join(lines)


def _field_named(model: type[BaseModel], key: str) -> str:
    """The field an error location names: the field itself, or one of its aliases."""
    if key in model.model_fields:
        return key
    for name, info in model.model_fields.items():
        alias = info.validation_alias
        if isinstance(alias, AliasChoices) and key.lower() in (str(c).lower() for c in alias.choices):
            return name
    return key
