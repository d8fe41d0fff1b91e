"""What a `deploy` step takes (spec §2.6 and Outpost's `rollback_on_failure`), checked with located messages."""

from __future__ import annotations

import pytest

from outpost.errors import PipelineError
from outpost.pipelines.parsing import load_pipeline

HEAD = "version: '1.0'\nsteps:\n  ship:\n    type: deploy\n    kind: kubernetes\n    cluster: prod-eu\n"


def test_a_deploy_step_without_a_namespace_takes_the_integrations_and_may_roll_back_on_failure() -> None:
    pipeline = load_pipeline(
        HEAD + "    service: web\n    candidate:\n      image: app:${{CF_SHORT_REVISION}}\n"
        "      registry: corp\n    rollback_on_failure: true\n    timeout: '150'\n"
    )
    step = pipeline.steps[0]
    assert "namespace" not in step.fields
    assert step.fields["rollback_on_failure"] is True
    assert step.fields["candidate"] == {"image": "app:${{CF_SHORT_REVISION}}", "registry": "corp"}


def test_a_service_without_a_candidate_loads_with_a_warning_at_the_service() -> None:
    """Codefresh's own documentation has such a step (shared fixture docs-deploy-kubernetes-service-17.yml), so it
    loads; the warning says it cannot run, as the deploy step itself says when it does."""
    pipeline = load_pipeline(HEAD + "    namespace: demo\n    service: web\n")
    assert [(w.line, w.column) for w in pipeline.warnings] == [(8, 5)]
    assert "`service` without a `candidate`: the step will fail when it runs" in pipeline.warnings[0].message


@pytest.mark.parametrize(
    ("case", "yaml", "message"),
    [
        (
            "a candidate without an image",
            HEAD + "    service: web\n    candidate:\n      registry: corp\n",
            "codefresh.yml:9:7: step 'ship': `candidate.image` is required",
        ),
        (
            "a misspelt candidate field",
            HEAD + "    service: web\n    candidate:\n      image: app:1\n      regsitry: corp\n",
            "codefresh.yml:10:7: step 'ship': unknown field `candidate.regsitry` (did you mean `candidate.registry`?)",
        ),
        (
            "rollback_on_failure that is not a flag",
            HEAD + "    file_path: k8s.yml\n    rollback_on_failure: maybe\n",
            "codefresh.yml:8:26: step 'ship': `rollback_on_failure` must be true, false or a ${{VARIABLE}}, "
            "not 'maybe'",
        ),
    ],
)
def test_a_deploy_step_with_a_wrong_field_is_refused_where_it_is(case: str, yaml: str, message: str) -> None:
    with pytest.raises(PipelineError) as raised:
        load_pipeline(yaml)
    assert message in str(raised.value), case
