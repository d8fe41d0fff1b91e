"""Where step pods run and what they may use: the `--step-pods` settings (the chart's `stepPods` values), read once
when the runner starts and applied to every step pod.

The settings are the Kubernetes fields themselves (`nodeSelector`, `tolerations`, `affinity`, `resources`), checked
strictly here: a misspelt field is refused with its path, not dropped (lightkube's models ignore unknown keys, and a
toleration that silently lost its `effect` would schedule pods somewhere nobody meant).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from lightkube.models.core_v1 import Affinity, ResourceRequirements, Toleration

from outpost.errors import ExecutorError

FIELDS = ("nodeSelector", "tolerations", "affinity", "resources")


@dataclass(frozen=True)
class Placement:
    node_selector: Mapping[str, str] = field(default_factory=dict)
    tolerations: tuple[Toleration, ...] = ()
    affinity: Affinity | None = None
    requests: Mapping[str, str] = field(default_factory=dict)
    limits: Mapping[str, str] = field(default_factory=dict)

    @property
    def chooses_nodes(self) -> bool:
        """True when the settings say which nodes may take a step pod (meaningless for a pod pinned to one)."""
        return bool(self.node_selector or self.affinity)


def parse(text: str | None, what: str = "--step-pods") -> Placement:
    """The `--step-pods` JSON (or `what`'s: `--engine-pods`); empty means none. ExecutorError naming the field when it
    is not what Kubernetes takes."""
    if not text or not text.strip():
        return Placement()
    try:
        given = json.loads(text)
    except ValueError as exc:
        raise ExecutorError(f"{what} is not JSON: {exc}") from None
    if not isinstance(given, dict):
        raise ExecutorError(f"{what} must be a JSON object (nodeSelector, tolerations, affinity, resources)")
    unknown = sorted(set(given) - set(FIELDS))
    if unknown:
        raise ExecutorError(f"{what}: unknown field(s) {', '.join(unknown)} (known: {', '.join(FIELDS)})")
    selector = given.get("nodeSelector") or {}
    if not isinstance(selector, dict) or not all(isinstance(v, str) for v in selector.values()):
        raise ExecutorError(f"{what}: nodeSelector must map label names to strings")
    tolerations = given.get("tolerations") or []
    if not isinstance(tolerations, list):
        raise ExecutorError(f"{what}: tolerations must be a list")
    resources = _model(ResourceRequirements, given.get("resources") or {}, "resources", what)
    return Placement(
        node_selector=dict(selector),
        tolerations=tuple(_model(Toleration, t, f"tolerations[{i}]", what) for i, t in enumerate(tolerations)),
        affinity=_model(Affinity, given["affinity"], "affinity", what) if given.get("affinity") else None,
        requests=_quantities(resources.requests, "resources.requests", what),
        limits=_quantities(resources.limits, "resources.limits", what),
    )


def _model(kind: Any, raw: Any, where: str, what: str) -> Any:
    """`raw` as a lightkube model, refusing what the model would drop (an unknown or misspelt field)."""
    if not isinstance(raw, dict):
        raise ExecutorError(f"{what}: {where} must be an object")
    try:
        model = kind.from_dict(raw)
    except (TypeError, ValueError, AttributeError) as exc:
        raise ExecutorError(f"{what}: {where} is not valid: {exc}") from None
    lost = _lost(raw, model.to_dict(), where)
    if lost:
        raise ExecutorError(f"{what}: unknown field {lost}")
    return model


def _lost(given: Any, kept: Any, where: str) -> str | None:
    """The path of the first field of `given` that `kept` (its round trip through the model) no longer has."""
    if isinstance(given, dict):
        if not isinstance(kept, dict):
            return where
        for key, value in given.items():
            if key not in kept:
                return f"{where}.{key}"
            if found := _lost(value, kept[key], f"{where}.{key}"):
                return found
    elif isinstance(given, list):
        if not isinstance(kept, list) or len(kept) != len(given):
            return where
        for i, (a, b) in enumerate(zip(given, kept, strict=True)):
            if found := _lost(a, b, f"{where}[{i}]"):
                return found
    return None


def _quantities(found: Mapping[str, Any] | None, where: str, what: str) -> dict[str, str]:
    out = {}
    for name, value in (found or {}).items():
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            raise ExecutorError(f"{what}: {where}.{name} must be a quantity such as 500m or 1Gi")
        out[name] = str(value)
    return out
