"""Executors: where step processes run. Names map to classes; heavy ones are imported lazily."""

from __future__ import annotations

import importlib

from outpost.errors import ExecutorError
from outpost.executors.base import Executor, StepJob

# name -> "module:Class"; imported on first use so optional dependencies stay optional.
EXECUTORS: dict[str, str] = {
    "local": "outpost.executors.local:LocalExecutor",
    "docker": "outpost.executors.docker:DockerExecutor",
    "kubernetes": "outpost.executors.kubernetes.executor:KubernetesExecutor",  # pip install 'outpost-ci[kubernetes]'
}


def executor_class(name: str) -> type[Executor]:
    try:
        target = EXECUTORS[name]
    except KeyError:
        known = ", ".join(sorted(EXECUTORS))
        raise ExecutorError(f"unknown executor {name!r} (known: {known})") from None
    module_name, _, class_name = target.partition(":")
    cls: type[Executor] = getattr(importlib.import_module(module_name), class_name)
    return cls


__all__ = ["EXECUTORS", "Executor", "StepJob", "executor_class"]
