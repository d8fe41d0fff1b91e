"""A webhook delivery, from a verified body to its outcome: the one place that decides what a delivery to a
trigger becomes. The router (`api/webhooks.py`) reads the body and calls `deliver` once.

Authenticity comes only from the provider's signature over the raw body, checked with the trigger's
secret before anything else is read. Every request that names a trigger leaves a delivery row saying
what became of it; a redelivery (same provider delivery id) gets the first answer again.

    401 rejected   bad or missing signature (only the rejected delivery is stored)
    400 rejected   the signed body is not a JSON object (or nests deeper than jsonbodies.MAX_DEPTH)
    200 ignored    a provider's ping
    202 ignored    an event we do not build
    202 filtered   a trigger rule said no (rule and reason recorded), or the trigger is disabled
    202 pending    the payload does not list every changed file: a runner computes them, then the same
                   delivery row becomes `build` or `filtered` (see `_settle`)
    201 build      a build was queued

An authenticated delivery keeps its body and the headers its provider's parser reads (never a signature or
token), so a person can deliver it again (`redeliver`: the same decision, skipping the signature it already
passed; a new row marked as a redelivery of the first). `send_test` sends the provider's ping, signed with the
trigger's secret, through `deliver` itself.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import secrets as random
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from outpost.errors import Invalid, StoreError
from outpost.server import changedfiles, jsonbodies
from outpost.server.models import Build, Delivery, Trigger
from outpost.server.security import new_id, now
from outpost.server.services import Services
from outpost.server.store import deliveries as store
from outpost.server.store import triggers
from outpost.triggers import filters, providers
from outpost.triggers.event import GitEvent
from outpost.triggers.providers import SignatureError, UnsupportedEvent
from outpost.triggers.registry import PROVIDER_MODULES
from outpost.triggers.variables import build_variables

log = logging.getLogger("outpost.webhooks")

EVENT_HEADERS = {"github": "X-GitHub-Event", "gitlab": "X-Gitlab-Event", "bitbucket-server": "X-Event-Key"}
# Headers that prove a delivery (or could prove another): never stored, so a stored delivery cannot be replayed
# to the endpoint by whoever reads it.
SECRET_HEADERS = frozenset({"x-hub-signature", "x-hub-signature-256", "x-gitlab-token", "authorization", "cookie"})
KEPT_HEADERS = frozenset({"content-type", "user-agent"})
MAX_HEADERS, MAX_HEADER = 50, 1000
REDELIVERY_PREFIX = "outpost-redelivery-"  # our delivery ids: no provider's look like these
NO_PING = (
    "GitLab has no ping event: on the project's Settings → Webhooks, use Test → Push events, then Redeliver "
    "its delivery here"
)


@dataclass(frozen=True)
class Answer:
    """The HTTP answer to a delivery; `replay` when it is the first answer given again to a redelivery."""

    status_code: int
    body: dict[str, Any]
    replay: bool = False


@dataclass
class Outcome:
    """What a delivery came to: the row's fields and the HTTP answer."""

    outcome: str
    status_code: int
    rule: str | None = None
    reason: str | None = None
    event: str | None = None
    build: Build | None = None
    touched: list[Build] = field(default_factory=list)


async def deliver(
    svc: Services, trigger_id: str, headers: Mapping[str, str], body: bytes, received_at: float
) -> Answer:
    """What a webhook request comes to: verified, decided, recorded with its answer (or the first answer again
    for a redelivery). NotFound when it names no git trigger."""
    async with svc.tx() as session:
        trigger = await triggers.webhook_trigger(session, trigger_id)
        await store.settle_stale_deliveries(session, trigger)
        provider: Any = trigger.provider  # one of PROVIDERS: checked when the trigger was made
        delivery_id = (providers.delivery_id(provider, headers) or "")[:255] or None  # as the column holds it
        earlier = await store.find_delivery(session, trigger, delivery_id) if delivery_id else None
    secret = svc.secrets.open(trigger.secret) if trigger.secret else ""
    try:
        PROVIDER_MODULES[provider].verify(headers, body, secret)
    except SignatureError as exc:
        # The delivery id is not recorded: an unsigned request must not claim a real delivery's id.
        rejected = Outcome("rejected", 401, rule="signature", reason=exc.reason)
        return await _record(svc, trigger, received_at, None, _header(headers, provider), rejected, None, None)
    if earlier is not None:
        return _replay(earlier.status_code, earlier.answer)
    decided, event = _decide(trigger, body, headers)
    kept = Kept(body, parser_headers(headers))
    try:
        return await _record(svc, trigger, received_at, delivery_id, _header(headers, provider), decided, event, kept)
    except IntegrityError:
        # The same delivery arrived twice at once and the other copy committed first: answer as it did.
        async with svc.tx() as session:
            earlier = await store.find_delivery(session, trigger, delivery_id or "")
        if earlier is None:
            raise
        return _replay(earlier.status_code, earlier.answer)


@dataclass(frozen=True)
class Kept:
    """What is stored of an authenticated delivery so it can be delivered again."""

    payload: bytes
    headers: dict[str, str]
    redelivery_of: str | None = None


def parser_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """The headers a provider's parser may read (its event, delivery id, ...): `X-*` and a few others, never one
    that carries a signature or a token; bounded in number and length."""
    kept: dict[str, str] = {}
    for name, value in headers.items():
        low = name.lower()
        if low in SECRET_HEADERS or not (low.startswith("x-") or low in KEPT_HEADERS):
            continue
        if len(kept) >= MAX_HEADERS:
            break
        kept[name[:MAX_HEADER]] = value[:MAX_HEADER]
    return kept


async def redeliver(svc: Services, trigger_id: str, original: Delivery, key: str | None = None) -> Answer:
    """Runs a stored delivery's body through the same decision as when it arrived (the trigger's rules as they
    are now) and records the outcome as a new delivery, a redelivery of the first one (of a redelivery: of the
    one it repeated). Its delivery id is ours, never the provider's, so it neither collides with nor replays the
    first answer; with `key` (one per Redeliver button shown) the same request made twice — a double click, a
    retried POST — is one redelivery: the second gets the first's answer, as a provider's own redelivery does."""
    if original.payload is None:
        raise Invalid(f"delivery {original.id[:8]} kept no payload to send again (it was rejected, or is older)")
    delivery_id = f"{REDELIVERY_PREFIX}{original.id}-{key}"[:255] if key else None
    async with svc.tx() as session:
        trigger = await triggers.webhook_trigger(session, trigger_id)
        earlier = await store.find_delivery(session, trigger, delivery_id) if delivery_id else None
    if earlier is not None:
        return _replay(earlier.status_code, earlier.answer)
    headers = dict(original.headers or {})
    decided, event = _decide(trigger, original.payload, headers)
    kept = Kept(original.payload, headers, original.redelivery_of or original.id)
    event_header = _header(headers, trigger.provider or "")
    try:
        return await _record(svc, trigger, now(), delivery_id, event_header, decided, event, kept)
    except IntegrityError:  # the same request twice at once: the other copy committed first
        async with svc.tx() as session:
            earlier = await store.find_delivery(session, trigger, delivery_id or "")
        if earlier is None:
            raise
        return _replay(earlier.status_code, earlier.answer)


async def send_test(svc: Services, trigger: Trigger) -> Answer:
    """The provider's ping (GitHub's `ping`, Bitbucket Server's `diagnostics:ping`), signed with the trigger's
    secret, through `deliver` as a real delivery: the endpoint, the secret and the recording all take part."""
    provider = trigger.provider or ""
    if provider == "gitlab":
        raise Invalid(NO_PING)
    secret = svc.secrets.open(triggers.sealed_secret(trigger))
    test_id = f"outpost-test-{random.token_hex(8)}"
    if provider == "github":
        payload: dict[str, Any] = {
            "zen": "Sent from Outpost's trigger page.",
            "hook_id": 0,
            "repository": {"full_name": trigger.repo},
        }
        names = ("X-GitHub-Event", "ping", "X-GitHub-Delivery", "X-Hub-Signature-256")
    else:
        payload = {"test": True}
        names = ("X-Event-Key", "diagnostics:ping", "X-Request-Id", "X-Hub-Signature")
    body = json.dumps(payload).encode()
    signature = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "Outpost-Test-Delivery",
        names[0]: names[1],
        names[2]: test_id,
        names[3]: signature,
    }
    return await deliver(svc, trigger.id, headers, body, now())


def _header(headers: Mapping[str, str], provider: str) -> str | None:
    name = EVENT_HEADERS.get(provider)
    return providers.header(headers, name) if name else None


def _decide(trigger: Trigger, body: bytes, headers: Mapping[str, str]) -> tuple[Outcome, GitEvent | None]:
    """Everything between a verified body and a build, with no I/O."""
    try:
        payload = jsonbodies.loads(body)
    except jsonbodies.NotJson as exc:
        return Outcome("rejected", 400, rule="json", reason=exc.reason), None
    if not isinstance(payload, dict):
        return Outcome("rejected", 400, rule="json", reason="the body is not a JSON object"), None
    if trigger.disabled:
        return Outcome("filtered", 202, rule="disabled", reason="trigger disabled"), None
    try:
        event = PROVIDER_MODULES[trigger.provider].parse(headers, payload)  # type: ignore[index]  # checked
    except UnsupportedEvent as exc:
        return Outcome("ignored", 202, rule="event", reason=exc.reason), None
    if event.event == "ping":
        return Outcome("ignored", 200, rule="event", reason="ping: the webhook reaches Outpost", event="ping"), None
    return _by_rules(trigger, event), event


def _by_rules(trigger: Trigger, event: GitEvent) -> Outcome:
    decision = filters.decide(triggers.rules_of(trigger), event)
    if decision.needs_changed_files:  # `_record` asks a runner for them
        return Outcome("pending", 202, rule=decision.rule or "files", reason=decision.reason, event=event.event)
    if not decision.build:
        return Outcome("filtered", 202, rule=decision.rule, reason=decision.reason, event=event.event)
    return Outcome("build", 201, event=event.event)


async def _record(
    svc: Services,
    trigger: Trigger,
    received_at: float,
    delivery_id: str | None,
    event_header: str | None,
    decided: Outcome,
    event: GitEvent | None,
    kept: Kept | None,
) -> Answer:
    """Creates the build (or the changed-files query), if any, and records the delivery with its answer (and,
    when authenticated, what to deliver again), in one transaction."""
    delivery = new_id()
    asked: changedfiles.Asked | None = None
    async with svc.tx() as session:
        trigger = await session.get_one(Trigger, trigger.id)
        if event is not None and decided.outcome == "pending":
            found = await changedfiles.ask(session, svc.settings, trigger, event)
            if isinstance(found, str):
                decided = Outcome(
                    "filtered", 202, rule=decided.rule, reason=f"{decided.reason}: {found}", event=event.event
                )
            else:
                asked, decided.reason = found, found.reason
        if event is not None and decided.outcome == "build":
            await _start(session, trigger, event, decided)
        answer = _body(svc, delivery, decided)
        await store.record_delivery(
            session,
            trigger,
            id=delivery,
            received_at=received_at,
            event=decided.event or event_header,
            delivery_id=delivery_id,
            outcome=decided.outcome,
            status_code=decided.status_code,
            answer=answer,
            rule=decided.rule,
            reason=decided.reason,
            build_id=decided.build.id if decided.build else None,
            pending_until=now() + asked.seconds + changedfiles.GRACE if asked else None,
            payload=kept.payload if kept else None,
            headers=kept.headers if kept else None,
            redelivery_of=kept.redelivery_of if kept else None,
        )
    if asked is not None and event is not None:
        svc.wakeups.git_query(asked.runtime_id)
        svc.spawn(_settle(svc, delivery, trigger.id, event, asked))
    _wake(svc, decided)
    if decided.outcome != "build":
        log.info("delivery %s to trigger %s: %s (%s)", delivery, trigger.id, decided.outcome, decided.reason)
    return Answer(decided.status_code, answer)


async def _start(session: AsyncSession, trigger: Trigger, event: GitEvent, decided: Outcome) -> None:
    decided.build, decided.touched = await store.start_build(session, trigger, event, build_variables(event))


async def _settle(svc: Services, delivery: str, trigger_id: str, event: GitEvent, asked: changedfiles.Asked) -> None:
    """In the background: waits for the runner's changed files, decides the trigger's rules again with them and
    gives the pending delivery its outcome (a build, or filtered with the reason)."""
    try:
        try:
            found: changedfiles.ChangedFiles | None = await changedfiles.wait(svc, asked)
        except StoreError as exc:
            found, failed = None, Outcome("filtered", 202, rule="files", reason=changedfiles.failure(exc))
        async with svc.tx() as session:
            trigger = await session.get(Trigger, trigger_id)
            if trigger is None:
                return  # removed with its deliveries meanwhile
            if found is None:
                decided = failed
            else:
                event.changed_files = found.files
                decided = _by_rules(trigger, event)
                if found.truncated and decided.outcome != "build":
                    decided.reason = f"{decided.reason} (the runner listed only the first {len(found.files)} files)"
            decided.event = event.event
            if decided.outcome == "build":
                await _start(session, trigger, event, decided)
            answer = _body(svc, delivery, decided)
            settled = await store.settle_delivery(
                session,
                delivery,
                outcome=decided.outcome,
                status_code=decided.status_code,
                answer=answer,
                rule=decided.rule,
                reason=decided.reason,
                build_id=decided.build.id if decided.build else None,
            )
            if not settled:
                raise _AlreadySettled  # roll the build back: the delivery was settled as stale meanwhile
    except changedfiles.Interrupted:
        return
    except _AlreadySettled:
        log.warning("delivery %s was settled before its runner answered", delivery)
        return
    except Exception:
        log.exception("delivery %s to trigger %s: deciding with the changed files failed", delivery, trigger_id)
        return
    _wake(svc, decided)
    log.info("delivery %s to trigger %s: %s (%s)", delivery, trigger_id, decided.outcome, decided.reason or "")


class _AlreadySettled(Exception):
    pass


def _body(svc: Services, delivery: str, decided: Outcome) -> dict[str, Any]:
    answer: dict[str, Any] = {"delivery": delivery, "outcome": decided.outcome}
    if decided.outcome == "rejected":
        answer.update(error="unauthorized" if decided.status_code == 401 else "invalid_request")
        answer["message"] = decided.reason
    if decided.build is not None:
        answer.update(build=decided.build.id, url=svc.build_url(decided.build.id))
    if decided.event:
        answer["event"] = decided.event
    if decided.rule and decided.outcome != "rejected":
        answer.update(rule=decided.rule, reason=decided.reason)
    return answer


def _wake(svc: Services, decided: Outcome) -> None:
    for build in [*([decided.build] if decided.build else []), *decided.touched]:
        svc.wakeups.build_changed(build)  # a new build is claimed; a superseded running one is told to stop


def _replay(status_code: int, answer: dict[str, Any]) -> Answer:
    return Answer(status_code, answer, replay=True)
