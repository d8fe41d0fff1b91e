"""The step pods' settings (`--step-pods`, the chart's `stepPods`): what Kubernetes takes is kept whole, and what it
would not take, or what would be silently dropped, is refused at the runner's start with the field's path."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.kube.fixtures import need_kubernetes_packages

pytestmark = pytest.mark.timeout(30)


@pytest.fixture(autouse=True)
def _packages() -> None:
    need_kubernetes_packages()


def test_the_settings_are_kept_as_kubernetes_reads_them() -> None:
    from outpost.executors.kubernetes import placement

    toleration = {"key": "dedicated", "operator": "Equal", "value": "builds", "effect": "NoSchedule"}
    where = placement.parse(
        json.dumps(
            {
                "nodeSelector": {"disk": "ssd"},
                "tolerations": [toleration],
                "resources": {"requests": {"cpu": "250m", "memory": 268435456}, "limits": {"memory": "2Gi"}},
            }
        )
    )
    assert where.node_selector == {"disk": "ssd"}
    assert [t.to_dict() for t in where.tolerations] == [toleration]
    assert where.requests == {"cpu": "250m", "memory": "268435456"}
    assert where.limits == {"memory": "2Gi"}
    assert placement.parse("") == placement.parse("{}") == placement.Placement()


@pytest.mark.parametrize(
    ("given", "says"),
    [
        ("{nodeSelector: x}", "--step-pods is not JSON"),
        ("[]", "must be a JSON object"),
        ({"nodeSelectors": {"disk": "ssd"}}, "unknown field(s) nodeSelectors"),
        ({"nodeSelector": {"disk": 1}}, "nodeSelector must map label names to strings"),
        ({"tolerations": [{"key": "dedicated", "efect": "NoSchedule"}]}, "unknown field tolerations[0].efect"),
        ({"affinity": {"nodeAffinity": {"required": {}}}}, "unknown field affinity.nodeAffinity.required"),
        ({"resources": {"limit": {"memory": "1Gi"}}}, "unknown field resources.limit"),
        ({"resources": {"limits": {"memory": True}}}, "resources.limits.memory must be a quantity"),
        ({"tolerations": {"key": "x"}}, "tolerations must be a list"),
    ],
)
def test_settings_kubernetes_would_not_take_are_refused_with_the_field(given: Any, says: str) -> None:
    from outpost.errors import ExecutorError
    from outpost.executors.kubernetes import placement

    with pytest.raises(ExecutorError) as refused:
        placement.parse(given if isinstance(given, str) else json.dumps(given))
    assert says in str(refused.value)


async def test_a_node_choice_for_pods_pinned_to_the_runner_s_node_is_refused_at_start() -> None:
    from outpost.errors import ExecutorError
    from outpost.executors.kubernetes.executor import KubernetesExecutor

    options = {"work_claim": "w", "node": "node-a", "step_pods": json.dumps({"nodeSelector": {"disk": "ssd"}})}
    with pytest.raises(ExecutorError, match="pinned to the runner's node"):
        await KubernetesExecutor.preflight(options)
