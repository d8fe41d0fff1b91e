"""Redeliver and test deliveries (/api/v1/triggers/{id}/deliveries/{d}/redeliver, /test-delivery): a stored
delivery is decided again as it arrived, under the trigger's rules as they are now, and shows as a new delivery
marked as a redelivery of the first; a rejected delivery kept nothing to send again; the test delivery is the
provider's ping signed with the trigger's secret. On SQLite and PostgreSQL."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, update

from outpost.server import cron
from outpost.server.app import fire_cron
from outpost.server.models import Build, Delivery
from outpost.server.store import deliveries as store_deliveries
from tests.server.test_webhooks import GITHUB_PUSH, HELLO, add_trigger, count, deliver, fixture
from tests.stack import Stack, running_stack, settings_for

pytestmark = pytest.mark.timeout(120)


async def deliveries(stack: Stack, trigger: dict[str, Any]) -> list[dict[str, Any]]:
    r = await stack.api("GET", f"/triggers/{trigger['id']}/deliveries")
    assert r.status_code == 200, r.text
    rows: list[dict[str, Any]] = r.json()
    return rows


async def test_a_filtered_delivery_redelivered_after_the_rule_changed_starts_a_build_marked_as_a_redelivery(
    stack: Stack,
) -> None:
    await stack.pipeline("app", HELLO)
    trigger = await add_trigger(stack, branch_regex="/^release$/")
    first = await deliver(stack, trigger, GITHUB_PUSH)
    assert first.json()["outcome"] == "filtered"
    await stack.api("PATCH", f"/triggers/{trigger['id']}", json={"branch_regex": None})

    path = f"/triggers/{trigger['id']}/deliveries/{first.json()['delivery']}/redeliver"
    again = await stack.api("POST", path)
    assert again.status_code == 200, again.text
    redelivery = again.json()
    assert (redelivery["outcome"], redelivery["redelivery_of"]) == ("build", first.json()["delivery"])
    assert redelivery["delivery_id"] is None  # not the provider's id: GitHub's own redelivery still gets its replay
    build = await stack.build(redelivery["build"])
    assert build["trigger"] == "webhook"
    rows = await deliveries(stack, trigger)
    assert [r["id"] for r in rows] == [redelivery["id"], first.json()["delivery"]]
    assert all(r["redeliverable"] for r in rows)

    # Redelivering the redelivery names the first delivery again, and makes one more build: it was asked for.
    twice = (await stack.api("POST", f"/triggers/{trigger['id']}/deliveries/{redelivery['id']}/redeliver")).json()
    assert twice["redelivery_of"] == first.json()["delivery"]
    assert await count(stack, Build) == 2
    audit = (await stack.api("GET", "/audit")).json()
    assert sum(e["action"] == "trigger.redeliver" for e in audit) == 2


async def test_a_delivery_keeps_its_body_and_parser_headers_but_never_its_signature(stack: Stack) -> None:
    await stack.pipeline("app", HELLO)
    trigger = await add_trigger(stack)
    answer = await deliver(stack, trigger, GITHUB_PUSH)
    async with stack.services.tx() as session:
        row = await session.scalar(select(Delivery).where(Delivery.id == answer.json()["delivery"]))
    assert row is not None
    assert row.headers is not None
    assert row.payload == fixture("github", GITHUB_PUSH)
    names = {k.lower() for k in row.headers}
    assert "x-github-event" in names
    assert "x-github-delivery" in names
    assert "x-hub-signature-256" not in names


async def test_a_delivery_rejected_by_its_signature_cannot_be_redelivered(stack: Stack) -> None:
    await stack.pipeline("app", HELLO)
    trigger = await add_trigger(stack)
    rejected = await deliver(stack, trigger, GITHUB_PUSH, X_Hub_Signature_256="sha256=00")
    assert rejected.status_code == 401
    (row,) = await deliveries(stack, trigger)
    assert row["redeliverable"] is False
    again = await stack.api("POST", f"/triggers/{trigger['id']}/deliveries/{row['id']}/redeliver")
    assert again.status_code == 422
    assert "kept no payload" in again.json()["message"]
    assert await count(stack, Build) == 0


async def test_a_test_delivery_is_githubs_ping_signed_with_the_secret_and_builds_nothing(stack: Stack) -> None:
    await stack.pipeline("app", HELLO)
    trigger = await add_trigger(stack)
    r = await stack.api("POST", f"/triggers/{trigger['id']}/test-delivery")
    assert r.status_code == 200, r.text
    assert (r.json()["outcome"], r.json()["event"], r.json()["status_code"]) == ("ignored", "ping", 200)
    assert r.json()["delivery_id"].startswith("outpost-test-")
    assert await count(stack, Build) == 0

    # After a new secret the test still passes: it is signed with the secret the trigger has now.
    await stack.api("POST", f"/triggers/{trigger['id']}/rotate-secret")
    assert (await stack.api("POST", f"/triggers/{trigger['id']}/test-delivery")).json()["outcome"] == "ignored"


async def test_a_gitlab_trigger_has_no_test_delivery_and_says_what_to_do_instead(stack: Stack) -> None:
    await stack.pipeline("app", HELLO)
    trigger = await add_trigger(stack, provider="gitlab", repo="group/app")
    r = await stack.api("POST", f"/triggers/{trigger['id']}/test-delivery")
    assert r.status_code == 422
    assert "Test → Push events" in r.json()["message"]
    assert await deliveries(stack, trigger) == []


async def test_another_accounts_delivery_is_not_found(stack: Stack) -> None:
    await stack.pipeline("app", HELLO)
    trigger = await add_trigger(stack)
    first = (await deliver(stack, trigger, GITHUB_PUSH)).json()["delivery"]
    other = (await stack.api("POST", "/accounts", json={"name": "acme"})).json()["token"]
    path = f"/triggers/{trigger['id']}/deliveries/{first}/redeliver"
    assert (await stack.api("POST", path, token=other)).status_code == 404
    assert (await stack.api("POST", f"/triggers/{trigger['id']}/deliveries/nope/redeliver")).status_code == 404


async def test_the_same_redeliver_request_twice_is_one_redelivery_and_one_build(stack: Stack) -> None:
    """A double click or a retried request carries the same key: the second gets the first's answer."""
    await stack.pipeline("app", HELLO)
    trigger = await add_trigger(stack)
    first = (await deliver(stack, trigger, GITHUB_PUSH)).json()["delivery"]
    path = f"/triggers/{trigger['id']}/deliveries/{first}/redeliver?key=button-1"
    once, twice = (await stack.api("POST", path)).json(), (await stack.api("POST", path)).json()
    assert once == twice
    assert once["outcome"] == "build"
    assert await count(stack, Build) == 2  # the first delivery's and one redelivery's
    other = (await stack.api("POST", path.replace("button-1", "button-2"))).json()
    assert other["id"] != once["id"]
    assert await count(stack, Build) == 3
    assert (await stack.api("POST", path.replace("button-1", "bad key!"))).status_code == 422


async def test_deliveries_older_than_their_retention_are_removed_by_the_cron_and_a_resend_then_builds_again(
    database_url: str, tmp_path: Path
) -> None:
    """OUTPOST_DELIVERY_DAYS: the cron's tick removes older deliveries, bodies and all; a newer one stays. The
    provider sending a removed delivery again starts a build, as for a delivery never seen."""
    settings = settings_for(database_url, tmp_path / "data", delivery_days=1.0)
    async with running_stack(settings) as stack:
        await stack.pipeline("app", HELLO)
        trigger = await add_trigger(stack)
        old = await deliver(stack, trigger, GITHUB_PUSH, X_GitHub_Delivery="delivery-two-days-old")
        new = await deliver(stack, trigger, GITHUB_PUSH, X_GitHub_Delivery="delivery-of-today")
        assert (old.status_code, new.status_code) == (201, 201)
        async with stack.services.tx() as session:  # the first one arrived two days ago
            aged = Delivery.received_at - 2 * 86400
            await session.execute(
                update(Delivery).where(Delivery.id == old.json()["delivery"]).values(received_at=aged)
            )
        async with stack.services.tx() as session:
            kept_forever = await store_deliveries.remove_old(session, 0)
        await fire_cron(stack.services, cron.minute_of(time.time()))
        rows = await deliveries(stack, trigger)
        resent = await deliver(stack, trigger, GITHUB_PUSH, X_GitHub_Delivery="delivery-two-days-old")
        replayed = await deliver(stack, trigger, GITHUB_PUSH, X_GitHub_Delivery="delivery-of-today")
        builds = await count(stack, Build)
    assert kept_forever == 0  # OUTPOST_DELIVERY_DAYS=0 keeps every delivery
    assert [r["id"] for r in rows] == [new.json()["delivery"]]
    assert resent.status_code == 201
    assert "Outpost-Redelivery" not in resent.headers
    assert replayed.headers.get("Outpost-Redelivery") == "true"  # the kept one is still a redelivery
    assert builds == 3
