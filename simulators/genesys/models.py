"""Validation of JSON bodies against Genesys's own published models: the classes of its
official Python SDK (``purecloudplatformclientv2`` on PyPI, a ``local``/``dev``
dependency only; the product never imports it).

Each SDK model declares its fields (``swagger_types``: attribute → type, e.g. ``str``,
``datetime``, ``list[OpenInboundMessageContent]``, ``dict(str, str)`` or another model)
and their JSON names (``attribute_map``); enum fields check their value in the setter
(an unknown value becomes ``"outdated_sdk_version"``). :func:`validate` walks a JSON value
with those declarations: unknown fields, wrong types and enum values the model does not
declare are errors. The models say nothing of required fields; :data:`REQUIRED` lists the
ones Genesys's developer guide shows in every example (docs/connectors/genesys.md).
"""

from __future__ import annotations

import functools
import importlib
import re
from collections.abc import Callable
from datetime import datetime
from typing import Any

OUTDATED = "outdated_sdk_version"

# Fields the Open Messaging guide requires (the SDK models do not mark them).
REQUIRED: dict[str, tuple[str, ...]] = {
    "OpenInboundNormalizedMessage": ("channel",),
    "OpenInboundMessageMessagingChannel": ("from", "time"),
    "OpenInboundMessagingChannel": ("from", "time"),
    "OpenMessagingFromRecipient": ("id", "idType"),
    "OpenInboundNormalizedEvent": ("channel", "events"),
    "OpenEvent": ("eventType",),
    "OpenContentAttachment": ("mediaType",),
    "OpenInboundNormalizedReceipt": ("id", "channel", "status"),
    "OpenInboundMessagingReceiptChannel": ("to", "time"),
    "OpenMessagingToRecipient": ("id",),
    "MediaParticipantRequest": (),
}


def _module_name(model: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", model).lower()


@functools.cache
def model_class(model: str) -> Any:
    """The SDK's class of ``model`` (e.g. ``OpenInboundNormalizedMessage``)."""
    module = importlib.import_module(f"PureCloudPlatformClientV2.models.{_module_name(model)}")
    return getattr(module, model)


@functools.cache
def fields(model: str) -> dict[str, tuple[str, str]]:
    """JSON name → (attribute, declared type) of ``model``."""
    instance = model_class(model)()
    return {
        json_name: (attribute, instance.swagger_types[attribute])
        for attribute, json_name in instance.attribute_map.items()
    }


def _enum_ok(model: str, attribute: str, value: str) -> bool:
    instance = model_class(model)()
    setattr(instance, attribute, value)
    return getattr(instance, f"_{attribute}", value) != OUTDATED


def _check(kind: str, value: Any, path: str, errors: list[str]) -> None:
    if value is None:
        errors.append(f"{path}: null is not a {kind}")
        return
    if kind.startswith("list["):
        if not isinstance(value, list):
            errors.append(f"{path}: must be an array")
            return
        for index, item in enumerate(value):
            _check(kind[5:-1], item, f"{path}[{index}]", errors)
        return
    if kind.startswith("dict("):
        if not isinstance(value, dict):
            errors.append(f"{path}: must be an object")
            return
        inner = kind[5:-1].split(",", 1)[1].strip()
        for key, item in value.items():
            _check(inner, item, f"{path}.{key}", errors)
        return
    simple: dict[str, Callable[[Any], bool]] = {
        "str": lambda v: isinstance(v, str),
        "bool": lambda v: isinstance(v, bool),
        "int": lambda v: isinstance(v, int) and not isinstance(v, bool),
        "float": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
        "object": lambda v: True,
    }
    if kind in simple:
        if not simple[kind](value):
            errors.append(f"{path}: must be a {kind}")
        return
    if kind in ("datetime", "date"):
        if not isinstance(value, str):
            errors.append(f"{path}: must be an ISO-8601 string")
            return
        try:
            datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            errors.append(f"{path}: must be an ISO-8601 {kind}, got {value!r}")
        return
    validate_into(kind, value, path, errors)


def validate_into(model: str, value: Any, path: str, errors: list[str]) -> None:
    """Adds every way ``value`` breaks ``model`` to ``errors``."""
    if not isinstance(value, dict):
        errors.append(f"{path}: must be an object ({model})")
        return
    declared = fields(model)
    for key in REQUIRED.get(model, ()):
        if key not in value:
            errors.append(f"{path}.{key}: required ({model})")
    for key, item in value.items():
        if key not in declared:
            errors.append(f"{path}.{key}: not a field of {model}")
            continue
        attribute, kind = declared[key]
        _check(kind, item, f"{path}.{key}", errors)
        if kind == "str" and isinstance(item, str) and not _enum_ok(model, attribute, item):
            errors.append(f"{path}.{key}: {item!r} is not a value {model}.{attribute} allows")


def validate(model: str, value: Any) -> list[str]:
    """Every way ``value`` (decoded JSON) breaks the SDK's ``model``; [] when it fits."""
    errors: list[str] = []
    validate_into(model, value, "$", errors)
    return errors
