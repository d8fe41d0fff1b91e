"""A strict Kubernetes API server emulator: the part of the core/v1 and apps/v1 API the Kubernetes executor, the
deploy step, kubectl, the fake scheduler, the fake kubelet and the Deployment controller (`controllers.py`) use, as
an ASGI app.

What it holds to, as the real one does: one monotonic resourceVersion over every object (lists carry the latest),
label and field selectors (an unsupported field is a 400), watches that resume from a resourceVersion and answer
410 Gone (an ERROR event) for one older than the history kept, merge and JSON patches, `status` subresources, graceful
deletion of pods bound to a node (the kubelet finishes it), ownerReferences garbage collection, optimistic concurrency
on update (409 on a stale resourceVersion), and strict validation: every object written is checked against the
Kubernetes OpenAPI schema of `kubernetes-validate`, so an unknown field is rejected with the reason. RBAC: a bearer
token maps to the rules of one Role in one namespace (a request without a token is the cluster's own components).
Discovery (/api, /apis and each group version's resource list) as kubectl asks for it, `metadata.generation` bumped
by every change of a Deployment's or ReplicaSet's spec, and server-side apply (an `application/apply-patch+yaml`
PATCH: creates the object, or merges the applied fields into it; lists are replaced whole).

Not here (see docs/kubernetes.md): real authentication, ClusterRoles, admission, defaulting beyond a few fields,
strategic merge patch, field ownership and conflicts of server-side apply (a field a manager stops applying is
kept), OpenAPI documents (for kubectl's client-side validation: `--validate=false`), watch bookmarks, DELETED
events for objects that stop matching a selector. `kubectl get` gets a Table: its columns for deployments and pods,
NAME and AGE for the rest.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import copy
import json
import re
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import kubernetes_validate
import yaml
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

VERSION = "1.37"
HISTORY = 2000  # watch events kept; a watch from before them gets 410 Gone
# plural -> (kind, namespaced, has status)
KINDS: dict[str, tuple[str, bool, bool]] = {
    "pods": ("Pod", True, True),
    "secrets": ("Secret", True, False),
    "persistentvolumeclaims": ("PersistentVolumeClaim", True, True),
    "events": ("Event", True, False),
    "nodes": ("Node", False, True),
    "namespaces": ("Namespace", False, True),
    "deployments": ("Deployment", True, True),
    "replicasets": ("ReplicaSet", True, True),
}
GROUPS = {"deployments": "apps/v1", "replicasets": "apps/v1"}  # plural -> API group/version; the rest are core v1
SHORT_NAMES = {"pods": ["po"], "namespaces": ["ns"], "nodes": ["no"], "deployments": ["deploy"], "replicasets": ["rs"],
               "persistentvolumeclaims": ["pvc"], "events": ["ev"]}  # fmt: skip
GENERATION = frozenset({"deployments", "replicasets"})  # their metadata.generation counts changes of their spec
FIELDS = {
    "pods": {"metadata.name", "metadata.namespace", "spec.nodeName", "status.phase"},
    "events": {"metadata.name", "metadata.namespace", "involvedObject.name", "involvedObject.kind", "type", "reason"},
}
_LABEL_TERM = re.compile(r"^\s*([A-Za-z0-9_./-]+)\s*(==|=|!=)\s*([A-Za-z0-9_.-]*)\s*$")


class ApiFailure(Exception):
    def __init__(self, code: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.code, self.reason, self.message = code, reason, message


def status(code: int, reason: str, message: str) -> dict[str, Any]:
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }


def now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class Faults:
    """Hooks for tests: answer the next N requests with an error, or cut every open watch."""

    fail_next: int = 0
    fail_status: int = 500
    failed: int = 0  # how many requests were failed on purpose
    watch_cuts: int = 0  # bumped by cut_watches(); a watch ends when it changes

    def fail(self, count: int, status: int = 500) -> None:
        self.fail_next, self.fail_status = count, status

    def cut_watches(self) -> None:
        self.watch_cuts += 1


@dataclass
class Store:
    """Every object by (plural, namespace, name), and the history of changes for watches. One event loop owns it."""

    objects: dict[tuple[str, str, str], dict[str, Any]] = field(default_factory=dict)
    history: list[tuple[int, str, str, dict[str, Any]]] = field(default_factory=list)  # (rv, type, plural, obj)
    version: int = 0
    oldest: int = 0  # the first resourceVersion a watch may resume from
    tick: asyncio.Event | None = None  # set (and replaced) at every change
    faults: Faults = field(default_factory=Faults)
    # RBAC: bearer token -> (namespace, the rules of the Role bound to that user). A request without a token is
    # the cluster's own components (scheduler, kubelets) and is not checked; an unknown token is 401.
    roles: dict[str, tuple[str, list[dict[str, Any]]]] = field(default_factory=dict)
    denied: list[str] = field(default_factory=list)  # what RBAC refused, for the tests' messages
    closing: bool = False  # set when the server stops: every watch ends

    def changed(self) -> asyncio.Event:
        """An event set at the next change."""
        if self.tick is None:
            self.tick = asyncio.Event()
        return self.tick

    def notify(self) -> None:
        tick, self.tick = self.tick, None
        if tick is not None:
            tick.set()

    async def next_change(self, within: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.changed().wait(), within)

    def compact(self) -> None:
        """Forgets the history (as etcd compaction does): a watch resumed from before now gets 410 Gone."""
        self.history.clear()
        self.oldest = self.version + 1

    async def _record(self, kind: str, plural: str, obj: dict[str, Any]) -> None:
        self.history.append((int(obj["metadata"]["resourceVersion"]), kind, plural, copy.deepcopy(obj)))
        if len(self.history) > HISTORY:
            dropped = self.history[: len(self.history) - HISTORY]
            del self.history[: len(dropped)]
            self.oldest = dropped[-1][0] + 1
        self.notify()

    def _bump(self, obj: dict[str, Any]) -> None:
        self.version += 1
        obj["metadata"]["resourceVersion"] = str(self.version)

    # --- the verbs ------------------------------------------------------------------------------------------

    def get(self, plural: str, namespace: str, name: str) -> dict[str, Any]:
        try:
            return self.objects[(plural, namespace, name)]
        except KeyError:
            raise ApiFailure(404, "NotFound", f'{plural} "{name}" not found') from None

    def list(self, plural: str, namespace: str | None, labels: str | None, fields: str | None) -> list[dict[str, Any]]:
        match = matcher(plural, labels, fields)
        return [
            o
            for (p, ns, _), o in sorted(self.objects.items())
            if p == plural and (namespace is None or ns == namespace) and match(o)
        ]

    async def create(self, plural: str, namespace: str, obj: dict[str, Any]) -> dict[str, Any]:
        kind, namespaced, _ = KINDS[plural]
        meta = obj.setdefault("metadata", {})
        if not meta.get("name") and meta.get("generateName"):
            meta["name"] = meta["generateName"] + uuid.uuid4().hex[:5]
        name = meta.get("name")
        if not name:
            raise ApiFailure(422, "Invalid", "metadata.name: Required value: name or generateName is required")
        if namespaced:
            if meta.get("namespace", namespace) != namespace:
                raise ApiFailure(400, "BadRequest", "the namespace of the object does not match the request's")
            meta["namespace"] = namespace
            if ("namespaces", "", namespace) not in self.objects:
                raise ApiFailure(404, "NotFound", f'namespaces "{namespace}" not found')
        key = (plural, namespace if namespaced else "", name)
        if key in self.objects:
            raise ApiFailure(409, "AlreadyExists", f'{plural} "{name}" already exists')
        validate(obj, kind)
        for owner in meta.get("ownerReferences") or []:
            self._check_owner(owner, namespace)
        meta.update(uid=str(uuid.uuid4()), creationTimestamp=now())
        meta.pop("resourceVersion", None)
        _defaults(plural, obj)
        if plural in GENERATION:
            meta["generation"] = 1
        self._bump(obj)
        self.objects[key] = obj
        await self._record("ADDED", plural, obj)
        return obj

    async def update(self, plural: str, namespace: str, name: str, obj: dict[str, Any], *, sub: str = "") -> dict:
        """PUT, or the result of a patch. `sub` == "status": only the status changes; else the status is kept."""
        kind = KINDS[plural][0]
        current = self.get(plural, namespace, name)
        given = (obj.get("metadata") or {}).get("resourceVersion")
        if given and given != current["metadata"]["resourceVersion"]:
            raise ApiFailure(
                409, "Conflict", f'Operation cannot be fulfilled on {plural} "{name}": the object has been modified'
            )
        if sub == "status":
            new = copy.deepcopy(current)
            new["status"] = obj.get("status", {})
        else:
            new = copy.deepcopy(obj)
            # A PUT replaces what a client may write (labels, annotations, ...): absent means removed.
            kept = {k: v for k, v in current["metadata"].items() if k not in WRITABLE}
            new["metadata"] = {**kept, **_writable(obj.get("metadata") or {})}
            if "status" in current:
                new["status"] = current["status"]
            if current.get("immutable") and new.get("data") != current.get("data"):
                raise ApiFailure(422, "Invalid", f'{kind} "{name}" is invalid: data: Forbidden: field is immutable')
            if plural == "deployments":
                _deployment_defaults(new)
                if new["spec"].get("selector") != current["spec"].get("selector"):
                    raise ApiFailure(
                        422, "Invalid", f'Deployment.apps "{name}" is invalid: spec.selector: field is immutable'
                    )
            if plural in GENERATION and new.get("spec") != current.get("spec"):
                new["metadata"]["generation"] = current["metadata"].get("generation", 1) + 1
            if plural == "pods" and new.get("spec") != current.get("spec"):
                raise ApiFailure(
                    422,
                    "Invalid",
                    f'Pod "{name}" is invalid: spec: Forbidden: pod updates may not change the spec',
                )
        new["apiVersion"], new["kind"] = current["apiVersion"], current["kind"]
        validate(new, kind)
        kept = current["metadata"].get("ownerReferences") or []
        for owner in new["metadata"].get("ownerReferences") or []:
            if owner not in kept:  # only a new owner must exist (a dependent's status outlives its owner a moment)
                self._check_owner(owner, namespace)
        if new == current:
            return current
        self._bump(new)
        self.objects[(plural, namespace, name)] = new
        await self._record("MODIFIED", plural, new)
        return new

    async def delete(self, plural: str, namespace: str, name: str, grace: int | None) -> dict[str, Any]:
        obj = self.get(plural, namespace, name)
        if (
            plural == "pods"
            and obj["spec"].get("nodeName")
            and grace != 0
            and _phase(obj) not in ("Succeeded", "Failed")
        ):
            # A pod on a node ends gracefully: marked here, the kubelet stops it and deletes it with grace 0.
            if grace is None:
                grace = obj["spec"].get("terminationGracePeriodSeconds", 30)
            meta = obj["metadata"]
            if meta.get("deletionTimestamp") and meta.get("deletionGracePeriodSeconds", grace) <= grace:
                return obj
            new = copy.deepcopy(obj)
            new["metadata"].update(deletionTimestamp=now(), deletionGracePeriodSeconds=grace)
            self._bump(new)
            self.objects[(plural, namespace, name)] = new
            await self._record("MODIFIED", plural, new)
            return new
        await self._remove(plural, namespace, name)
        return obj

    async def _remove(self, plural: str, namespace: str, name: str) -> None:
        obj = self.objects.pop((plural, namespace, name), None)
        if obj is None:
            return
        obj = copy.deepcopy(obj)
        self._bump(obj)
        await self._record("DELETED", plural, obj)
        await self._collect_garbage(obj["metadata"]["uid"], namespace)

    async def _collect_garbage(self, uid: str, namespace: str) -> None:
        """Background cascading deletion: the dependents of a removed object go too."""
        for (plural, ns, name), obj in list(self.objects.items()):
            owners = obj["metadata"].get("ownerReferences") or []
            if ns == namespace and any(o.get("uid") == uid for o in owners):
                await self.delete(plural, ns, name, None)

    def _check_owner(self, owner: dict[str, Any], namespace: str) -> None:
        plural = next((p for p, (k, _, _) in KINDS.items() if k == owner.get("kind")), None)
        found = self.objects.get((plural or "", namespace, owner.get("name", "")))
        if found is None or found["metadata"]["uid"] != owner.get("uid"):
            # The real garbage collector deletes a dependent whose owner is absent; saying so at once is stricter.
            raise ApiFailure(
                422,
                "Invalid",
                f"metadata.ownerReferences: no {owner.get('kind')} {owner.get('name')} with uid {owner.get('uid')}",
            )

    async def watch(
        self, plural: str, namespace: str | None, labels: str | None, fields: str | None, since: str | None
    ) -> AsyncIterator[dict[str, Any]]:
        """Events after resourceVersion `since` (or the current objects as ADDED, then what follows)."""
        match = matcher(plural, labels, fields)
        cuts = self.faults.watch_cuts
        if since in (None, "", "0"):
            for obj in self.list(plural, namespace, labels, fields):
                yield {"type": "ADDED", "object": obj}
            position = self.version
        else:
            position = int(since)  # type: ignore[arg-type]
            if position + 1 < self.oldest:
                gone = status(410, "Expired", f"too old resource version: {position} ({self.oldest - 1})")
                yield {"type": "ERROR", "object": gone}
                return
        while True:
            for rv, kind, p, obj in list(self.history):
                if rv <= position:
                    continue
                position = rv
                if p == plural and (namespace is None or obj["metadata"].get("namespace") == namespace) and match(obj):
                    yield {"type": kind, "object": obj}
            if self.faults.watch_cuts != cuts or self.closing:
                return
            await self.next_change(1.0)


WRITABLE = ("labels", "annotations", "ownerReferences", "finalizers")


def _writable(meta: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in meta.items() if k in WRITABLE}


def _phase(obj: dict[str, Any]) -> str:
    return str((obj.get("status") or {}).get("phase", ""))


def _defaults(plural: str, obj: dict[str, Any]) -> None:
    if plural == "pods":
        spec = obj["spec"]
        spec.setdefault("restartPolicy", "Always")
        spec.setdefault("terminationGracePeriodSeconds", 30)
        spec.setdefault("schedulerName", "default-scheduler")
        obj["status"] = {"phase": "Pending", "qosClass": "BestEffort"}
    elif plural == "secrets":
        data = obj.setdefault("data", {})
        for key, value in (obj.pop("stringData", None) or {}).items():
            data[key] = base64.b64encode(value.encode()).decode()
        obj.setdefault("type", "Opaque")
    elif plural == "persistentvolumeclaims":
        obj["status"] = {"phase": "Bound", "accessModes": obj["spec"].get("accessModes", [])}
    elif plural == "namespaces":
        obj["status"] = {"phase": "Active"}
    elif plural == "deployments":
        _deployment_defaults(obj)
        obj["status"] = {}
    elif plural == "replicasets":
        obj["status"] = {"replicas": 0}


def _deployment_defaults(obj: dict[str, Any]) -> None:
    """apps/v1's defaults, and the check that the selector matches the template's labels."""
    spec = obj.setdefault("spec", {})
    spec.setdefault("replicas", 1)
    spec.setdefault("revisionHistoryLimit", 10)
    spec.setdefault("progressDeadlineSeconds", 600)
    spec.setdefault(
        "strategy", {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}}
    )
    wanted = (spec.get("selector") or {}).get("matchLabels") or {}
    labels = ((spec.get("template") or {}).get("metadata") or {}).get("labels") or {}
    if not wanted or any(labels.get(k) != v for k, v in wanted.items()):
        raise ApiFailure(
            422,
            "Invalid",
            f'Deployment.apps "{obj["metadata"].get("name")}" is invalid: spec.template.metadata.labels: '
            f"Invalid value: {labels}: `selector` does not match template `labels`",
        )


def validate(obj: dict[str, Any], kind: str) -> None:
    """The strict schema check (unknown fields included) that the real API does with fieldValidation=Strict."""
    if obj.get("kind") != kind:
        raise ApiFailure(400, "BadRequest", f"the object's kind {obj.get('kind')!r} does not match the URL's {kind!r}")
    try:
        kubernetes_validate.validate(obj, VERSION, strict=True)
    except kubernetes_validate.ValidationError as exc:
        where = ".".join(str(p) for p in exc.absolute_path) or "(root)"
        raise ApiFailure(422, "Invalid", f"{kind} is invalid: {where}: {exc.message}") from None


def _field(obj: dict[str, Any], path: str) -> str:
    value: Any = obj
    for part in path.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return "" if value is None else str(value)


def matcher(plural: str, labels: str | None, fields: str | None) -> Callable[[dict[str, Any]], bool]:
    """A label and field selector as a predicate; what the real API refuses is refused here too."""
    label_terms = _terms(labels, "labelSelector")
    field_terms = _terms(fields, "fieldSelector")
    allowed = FIELDS.get(plural, {"metadata.name", "metadata.namespace"})
    for key, _, _ in field_terms:
        if key not in allowed:
            raise ApiFailure(
                400, "BadRequest", f'"{key}" is not a known field selector: only "{", ".join(sorted(allowed))}"'
            )

    def match(obj: dict[str, Any]) -> bool:
        have = obj["metadata"].get("labels") or {}
        for key, op, value in label_terms:
            if op == "exists" and key not in have:
                return False
            if op == "!exists" and key in have:
                return False
            if op in ("=", "==") and have.get(key) != value:
                return False
            if op == "!=" and have.get(key) == value:
                return False
        return all((_field(obj, key) == value) == (op != "!=") for key, op, value in field_terms)

    return match


def _terms(selector: str | None, what: str) -> list[tuple[str, str, str]]:
    terms = []
    for part in filter(None, (selector or "").split(",")):
        found = _LABEL_TERM.match(part)
        if found:
            terms.append((found[1], found[2], found[3]))
        elif re.fullmatch(r"\s*!?[A-Za-z0-9_./-]+\s*", part):
            key = part.strip()
            terms.append((key.lstrip("!"), "!exists" if key.startswith("!") else "exists", ""))
        else:
            raise ApiFailure(400, "BadRequest", f"unable to parse requirement of {what}: {part!r}")
    return terms


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def json_patch(target: Any, operations: list[dict[str, Any]]) -> Any:
    """RFC 6902: add, remove, replace and test (what a conditional claim uses)."""
    doc = copy.deepcopy(target)
    for op in operations:
        *parents, last = [p.replace("~1", "/").replace("~0", "~") for p in op["path"].split("/")[1:]]
        where = doc
        for part in parents:
            where = where[int(part)] if isinstance(where, list) else where[part]
        kind = op["op"]
        if kind == "test":
            current = where[int(last)] if isinstance(where, list) else where.get(last)
            if current != op.get("value"):
                raise ApiFailure(422, "Invalid", f"the test operation on {op['path']} failed")
        elif kind in ("add", "replace"):
            if isinstance(where, list):
                where.insert(len(where) if last == "-" else int(last), op["value"])
            else:
                where[last] = op["value"]
        elif kind == "remove":
            del where[int(last) if isinstance(where, list) else last]
        else:
            raise ApiFailure(422, "Invalid", f"unsupported JSON patch operation {kind!r}")
    return doc


# --- the HTTP side ---------------------------------------------------------------------------------------------


def app(store: Store) -> Starlette:
    async def handle(request: Request) -> Response:
        faults = store.faults
        if faults.fail_next > 0:
            faults.fail_next -= 1
            faults.failed += 1
            code = faults.fail_status
            headers = {"Retry-After": "1"} if code == 429 else {}
            reason = "TooManyRequests" if code == 429 else "InternalError"
            return JSONResponse(status(code, reason, "injected fault"), status_code=code, headers=headers)
        try:
            _authorize(store, request)
            return await _dispatch(store, request)
        except ApiFailure as exc:
            return JSONResponse(status(exc.code, exc.reason, exc.message), status_code=exc.code)

    async def version(request: Request) -> Response:
        # Anyone may read it, but a token the server does not know is refused here too, as a real server does.
        token = request.headers.get("authorization", "").removeprefix("Bearer ").strip()
        if token and token not in store.roles:
            return JSONResponse(status(401, "Unauthorized", "Unauthorized"), status_code=401)
        return JSONResponse(
            {"major": "1", "minor": VERSION.split(".")[1], "gitVersion": f"v{VERSION}.0-outpost-emulator"}
        )

    async def discovery(request: Request) -> Response:
        try:
            _authorize(store, request)
            return JSONResponse(_discovery(request))
        except ApiFailure as exc:
            return JSONResponse(status(exc.code, exc.reason, exc.message), status_code=exc.code)

    group = "/apis/{group}/{version}"
    routes = [
        Route("/version", version),
        Route("/api", discovery),
        Route("/apis", discovery),
        Route("/api/v1", discovery),
        Route(group, discovery),
        Route(group + "/namespaces/{namespace}/{plural}", handle, methods=["GET", "POST", "DELETE"]),
        Route(group + "/namespaces/{namespace}/{plural}/{name}", handle, methods=["GET", "PUT", "PATCH", "DELETE"]),
        Route(group + "/namespaces/{namespace}/{plural}/{name}/{sub}", handle, methods=["GET", "PUT", "PATCH"]),
        Route(group + "/{plural}", handle, methods=["GET"]),
        Route("/api/v1/namespaces/{namespace}/{plural}", handle, methods=["GET", "POST", "DELETE"]),
        Route("/api/v1/namespaces/{namespace}/{plural}/{name}", handle, methods=["GET", "PUT", "PATCH", "DELETE"]),
        Route("/api/v1/namespaces/{namespace}/{plural}/{name}/{sub}", handle, methods=["GET", "PUT", "PATCH", "POST"]),
        Route("/api/v1/{plural}", handle, methods=["GET", "POST", "DELETE"]),
        Route("/api/v1/{plural}/{name}", handle, methods=["GET", "PUT", "PATCH", "DELETE"]),
        Route("/api/v1/{plural}/{name}/{sub}", handle, methods=["GET", "PUT", "PATCH"]),
    ]
    return Starlette(routes=routes)


def _discovery(request: Request) -> dict[str, Any]:
    """What kubectl reads before it names a resource: the API versions, the groups and each one's resources."""
    path = request.url.path.rstrip("/")
    if path == "/api":
        address = {"clientCIDR": "0.0.0.0/0", "serverAddress": request.url.netloc}
        return {"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": [address]}
    groups = sorted({gv for gv in GROUPS.values()})
    if path == "/apis":
        found = []
        for gv in groups:
            name, _, version = gv.partition("/")
            entry = {"groupVersion": gv, "version": version}
            found.append({"name": name, "versions": [entry], "preferredVersion": entry})
        return {"kind": "APIGroupList", "apiVersion": "v1", "groups": found}
    wanted = path.removeprefix("/apis/") if path.startswith("/apis/") else "v1"
    if wanted != "v1" and wanted not in groups:
        raise ApiFailure(404, "NotFound", f"the server could not find the requested resource ({path})")
    resources = []
    for plural, (kind, namespaced, has_status) in KINDS.items():
        if GROUPS.get(plural, "v1") != wanted:
            continue
        verbs = ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"]
        resources.append({"name": plural, "singularName": kind.lower(), "namespaced": namespaced, "kind": kind,
                          "verbs": verbs, "shortNames": SHORT_NAMES.get(plural, [])})  # fmt: skip
        if has_status:
            resources.append({"name": f"{plural}/status", "singularName": "", "namespaced": namespaced,
                              "kind": kind, "verbs": ["get", "patch", "update"]})  # fmt: skip
    return {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": wanted, "resources": resources}


def _verb(request: Request) -> str:
    named = "name" in request.path_params
    if request.method == "GET":
        if named:
            return "get"
        return "watch" if request.query_params.get("watch") in ("1", "true") else "list"
    if request.method == "DELETE":
        return "delete" if named else "deletecollection"
    return {"POST": "create", "PUT": "update", "PATCH": "patch"}[request.method]


def _authorize(store: Store, request: Request) -> None:
    """RBAC as a Role bound in one namespace grants it: apiGroup "", resource (or resource/subresource), verb."""
    header = request.headers.get("authorization", "")
    if not header:
        return
    token = header.removeprefix("Bearer ").strip()
    if token not in store.roles:
        raise ApiFailure(401, "Unauthorized", "Unauthorized")
    namespace, rules = store.roles[token]
    path = request.path_params
    if "plural" not in path:  # discovery: every authenticated user may read it
        return
    resource = path["plural"] + (f"/{path['sub']}" if path.get("sub") else "")
    group = GROUPS.get(path["plural"], "v1").rpartition("/")[0]
    verb = _verb(request)
    allowed = path.get("namespace") == namespace and any(
        group in rule.get("apiGroups", []) and resource in rule.get("resources", []) and verb in rule.get("verbs", [])
        for rule in rules
    )
    if not allowed:
        where = f'in the namespace "{path.get("namespace")}"' if path.get("namespace") else "at the cluster scope"
        message = f'user cannot {verb} resource "{resource}" in API group "{group}" {where}'
        store.denied.append(message)
        raise ApiFailure(403, "Forbidden", message)


async def _body(request: Request) -> Any:
    try:
        return json.loads(await request.body())
    except ValueError as exc:
        raise ApiFailure(400, "BadRequest", f"the body is not JSON: {exc}") from None


async def _dispatch(store: Store, request: Request) -> Response:
    params, path = request.query_params, request.path_params
    plural = path["plural"]
    if plural not in KINDS:
        raise ApiFailure(404, "NotFound", f"the server could not find the requested resource ({plural})")
    kind, namespaced, has_status = KINDS[plural]
    asked = f"{path['group']}/{path['version']}" if "group" in path else "v1"
    if GROUPS.get(plural, "v1") != asked:
        raise ApiFailure(404, "NotFound", f"the server could not find the requested resource ({asked} {plural})")
    namespace = path.get("namespace")
    if namespaced and namespace is None and ("name" in path or request.method != "GET"):
        raise ApiFailure(404, "NotFound", f"{plural} are namespaced")
    ns = namespace or ""
    name, sub = path.get("name"), path.get("sub", "")
    method = request.method
    if sub and not (sub == "status" and has_status) and not (sub == "binding" and plural == "pods"):
        raise ApiFailure(404, "NotFound", f"no subresource {sub} of {plural}")

    if name is None:
        if method == "POST":
            return JSONResponse(await store.create(plural, ns, await _body(request)), status_code=201)
        if method == "DELETE":
            for obj in store.list(plural, namespace, params.get("labelSelector"), params.get("fieldSelector")):
                await store.delete(plural, obj["metadata"].get("namespace", ""), obj["metadata"]["name"], None)
            return JSONResponse({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success"})
        if params.get("watch") in ("1", "true"):
            events = store.watch(
                plural,
                namespace,
                params.get("labelSelector"),
                params.get("fieldSelector"),
                params.get("resourceVersion"),
            )
            return StreamingResponse(_lines(events), media_type="application/json")
        items = store.list(plural, namespace, params.get("labelSelector"), params.get("fieldSelector"))
        if _wants_table(request):
            return JSONResponse(_table(plural, items, store.version))
        body = {
            "kind": f"{kind}List",
            "apiVersion": GROUPS.get(plural, "v1"),
            "metadata": {"resourceVersion": str(store.version)},
            "items": items,
        }
        return JSONResponse(body)

    if sub == "binding":  # the scheduler binds a pod to a node
        binding = await _body(request)
        pod = store.get(plural, ns, name)
        if pod["spec"].get("nodeName"):
            raise ApiFailure(409, "Conflict", f'pod {name} is already assigned to node "{pod["spec"]["nodeName"]}"')
        bound = copy.deepcopy(pod)
        bound["spec"]["nodeName"] = binding["target"]["name"]
        conditions = [c for c in bound["status"].get("conditions", []) if c["type"] != "PodScheduled"]
        bound["status"]["conditions"] = [
            *conditions,
            {"type": "PodScheduled", "status": "True", "lastTransitionTime": now()},
        ]
        store._bump(bound)
        store.objects[(plural, ns, name)] = bound
        await store._record("MODIFIED", plural, bound)
        return JSONResponse(status(201, "", "bound") | {"status": "Success"}, status_code=201)

    if method == "GET":
        if _wants_table(request) and not sub:
            return JSONResponse(_table(plural, [store.get(plural, ns, name)], store.version))
        return JSONResponse(store.get(plural, ns, name))
    if method == "DELETE":
        grace = params.get("gracePeriodSeconds")
        text = await request.body()
        if text:  # DeleteOptions in the body
            options = json.loads(text)
            grace = options.get("gracePeriodSeconds", grace)
        return JSONResponse(await store.delete(plural, ns, name, None if grace is None else int(grace)))
    if method == "PUT":
        return JSONResponse(await store.update(plural, ns, name, await _body(request), sub=sub))
    # PATCH
    content_type = request.headers.get("content-type", "").split(";")[0]
    if content_type == "application/apply-patch+yaml":
        return await _apply(store, request, plural, ns, name)
    current = store.get(plural, ns, name)
    patch = await _body(request)
    if content_type == "application/merge-patch+json":
        patched = merge_patch(current, patch)
    elif content_type == "application/json-patch+json":
        patched = json_patch(current, patch)
    else:
        raise ApiFailure(415, "UnsupportedMediaType", f"the emulator does not take {content_type or 'this'} patches")
    if not (isinstance(patch, dict) and (patch.get("metadata") or {}).get("resourceVersion")):
        patched.setdefault("metadata", {}).pop("resourceVersion", None)  # a patch is not conditional unless it says
    return JSONResponse(await store.update(plural, ns, name, patched, sub=sub))


def _wants_table(request: Request) -> bool:
    """kubectl get asks for a Table (the server's own columns) before plain JSON."""
    return "as=Table" in request.headers.get("accept", "") and "g=meta.k8s.io" in request.headers.get("accept", "")


def _table(plural: str, items: list[dict[str, Any]], version: int) -> dict[str, Any]:
    """The columns `kubectl get` shows for deployments and pods (NAME and AGE for the rest)."""

    def age(obj: dict[str, Any]) -> str:
        created = obj["metadata"].get("creationTimestamp")
        seconds = (
            0
            if not created
            else int(
                (
                    datetime.now(UTC) - datetime.strptime(created, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
                ).total_seconds()
            )
        )
        return f"{seconds}s" if seconds < 120 else f"{seconds // 60}m"

    def cells(obj: dict[str, Any]) -> list[Any]:
        st, spec = obj.get("status") or {}, obj.get("spec") or {}
        if plural == "deployments":
            ready = f"{st.get('readyReplicas', 0)}/{spec.get('replicas', 1)}"
            return [
                obj["metadata"]["name"],
                ready,
                st.get("updatedReplicas", 0),
                st.get("availableReplicas", 0),
                age(obj),
            ]
        if plural == "pods":
            statuses = st.get("containerStatuses") or []
            waiting = next(
                (c["state"]["waiting"].get("reason") for c in statuses if "waiting" in c.get("state", {})), None
            )
            ready = f"{sum(1 for c in statuses if c.get('ready'))}/{len(spec.get('containers') or [])}"
            return [obj["metadata"]["name"], ready, waiting or st.get("phase", ""), 0, age(obj)]
        return [obj["metadata"]["name"], age(obj)]

    names = {"deployments": ["Name", "Ready", "Up-to-date", "Available", "Age"],
             "pods": ["Name", "Ready", "Status", "Restarts", "Age"]}.get(plural, ["Name", "Age"])  # fmt: skip
    columns = [{"name": n, "type": "string", "format": "name" if n == "Name" else "", "description": "", "priority": 0}
               for n in names]  # fmt: skip
    rows = [
        {
            "cells": cells(o),
            "object": {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": o["metadata"]},
        }
        for o in items
    ]
    return {"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": {"resourceVersion": str(version)},
            "columnDefinitions": columns, "rows": rows}  # fmt: skip


async def _apply(store: Store, request: Request, plural: str, namespace: str, name: str) -> Response:
    """Server-side apply: the object is created, or the applied fields are merged into it."""
    if not request.query_params.get("fieldManager"):
        raise ApiFailure(400, "BadRequest", "PATCH with apply requires a fieldManager")
    try:
        applied = yaml.safe_load(await request.body())
    except yaml.YAMLError as exc:
        raise ApiFailure(400, "BadRequest", f"the body is not YAML: {exc}") from None
    if not isinstance(applied, dict) or (applied.get("metadata") or {}).get("name") != name:
        raise ApiFailure(400, "BadRequest", "the applied object's metadata.name does not match the URL's")
    if applied.get("apiVersion") != GROUPS.get(plural, "v1"):
        raise ApiFailure(400, "BadRequest", f"the applied object's apiVersion is not {GROUPS.get(plural, 'v1')}")
    if (plural, namespace, name) not in store.objects:
        return JSONResponse(await store.create(plural, namespace, applied), status_code=201)
    merged = _merged(store.get(plural, namespace, name), applied)
    merged["metadata"].pop("resourceVersion", None)
    return JSONResponse(await store.update(plural, namespace, name, merged))


def _merged(current: Any, applied: Any) -> Any:
    if isinstance(current, dict) and isinstance(applied, dict):
        result = copy.deepcopy(current)
        for key, value in applied.items():
            result[key] = _merged(current.get(key), value)
        return result
    return copy.deepcopy(applied)


async def _lines(events: AsyncIterator[dict[str, Any]]) -> AsyncIterator[bytes]:
    async for event in events:
        yield json.dumps(event).encode() + b"\n"
