"""Buildbot as the webhook peer: a master whose www takes GitHub pushes at `/change_hook/github`.

Buildbot 4.3's GitHub hook checks only `X-Hub-Signature` (HMAC-SHA1; it refuses any other hash type) and,
with `strict`, refuses unsigned deliveries. It answers 200 "1 change found" once the change is stored (the
code sets 202 but writes the body first, so 200 goes out). An AnyBranchScheduler with `treeStableTimer=None`
then turns the change into a buildset and a build request, later, in the master's reactor. To see when, the
master carries a small observer service that writes the wall-clock time and revision of every new buildset
to a file (the `buildsets new` message, produced once the build request rows are written and read back).
No worker connects and request collapsing is off, so every request stays pending and none is merged into
another: what the REST API shows at the end is what the deliveries made.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx

import loopback
from buildbot_peer import REQUIREMENTS
from loopback import json_of
from peers import ensure_venv, installed_version, run_tool
from processes import Processes
from waiting import BenchError, deadline_in, past

SECRET = "bench-only-webhook-secret"

MASTER_CFG = """\
# Written by bench/buildbot_webhook.py: GitHub change hook -> AnyBranchScheduler -> a builder with no worker.
import json
import os
import time

from buildbot.plugins import schedulers, steps, util, worker
from buildbot.util import service

bench = json.load(open(os.path.join(basedir, "bench.json")))


class QueuedStamps(service.BuildbotService):
    # Notes `wall-clock bsid revision` for every new buildset: when the deliveries' build requests exist.
    name = "bench-queued-stamps"

    def checkConfig(self, path):
        pass

    def reconfigService(self, path):
        if getattr(self, "out", None) is None:
            self.out = open(path, "a", buffering=1)
            return self.master.mq.startConsuming(self.noted, ("buildsets", None, "new"))

    def noted(self, key, msg):
        revisions = ",".join(ss.get("revision") or "-" for ss in msg["sourcestamps"])
        self.out.write("%.6f %d %s\\n" % (time.time(), msg["bsid"], revisions))


c = BuildmasterConfig = {
    "buildbotNetUsageData": None,
    "title": "bench",
    "buildbotURL": "http://127.0.0.1:%d/" % bench["www_port"],
    "db": {"db_url": "sqlite:///state.sqlite"},
    "protocols": {"pb": {"port": "tcp:%d:interface=127.0.0.1" % bench["pb_port"]}},
    "www": {
        "port": "tcp:%d:interface=127.0.0.1" % bench["www_port"],
        "plugins": {},
        "change_hook_dialects": {"github": {"secret": bench["secret"], "strict": True}},
    },
    "collapseRequests": False,
    "workers": [worker.Worker("bench", "never-connects")],
    "schedulers": [schedulers.AnyBranchScheduler(name="github", builderNames=["queued"], treeStableTimer=None)],
    "builders": [
        util.BuilderConfig(
            name="queued",
            workernames=["bench"],
            factory=util.BuildFactory([steps.ShellCommand(command=["true"])]),
        )
    ],
    "services": [QueuedStamps(bench["stamps"])],
}
"""


class BuildbotHook:
    label = "Buildbot (master, GitHub change hook)"

    def __init__(self, procs: Processes, workdir: Path) -> None:
        self.procs = procs
        self.workdir = workdir
        self.stamps = workdir / "queued-stamps.txt"
        self.api: httpx.Client | None = None
        self.endpoint = ""
        self.secret = SECRET
        self.version = ""

    def start(self) -> None:
        bin_dir = ensure_venv("buildbot", REQUIREMENTS)
        self.version = installed_version(bin_dir, "buildbot")
        pb_port, www_port = loopback.free_port(), loopback.free_port()
        master = self.workdir / "master"
        run_tool([str(bin_dir / "buildbot"), "create-master", "-r", str(master)], "buildbot create-master")
        (master / "master.cfg").write_text(MASTER_CFG)
        settings = {"pb_port": pb_port, "www_port": www_port, "secret": SECRET, "stamps": str(self.stamps)}
        (master / "bench.json").write_text(json.dumps(settings))
        self.api = loopback.client(f"http://127.0.0.1:{www_port}/api/v2")
        proc = self.procs.start("buildbot-master", [str(bin_dir / "buildbot"), "start", "--nodaemon", str(master)])
        proc.wait_for(self._scheduler_active, "the Buildbot master's REST API and its scheduler")
        self.endpoint = f"http://127.0.0.1:{www_port}/change_hook/github"

    def _scheduler_active(self) -> bool | None:
        assert self.api is not None
        schedulers = json_of(self.api.get("/schedulers"))["schedulers"]
        return True if any(s["name"] == "github" and s["enabled"] and s["master"] for s in schedulers) else None

    def queued_at(self, revisions: set[str], timeout: float) -> dict[str, float]:
        """Wall-clock time each revision's buildset was created, waiting (bounded) until all are there."""
        deadline = deadline_in(timeout)
        while True:
            seen = self._stamps()
            if revisions <= seen.keys():
                return {rev: seen[rev] for rev in revisions}
            if past(deadline):
                missing = len(revisions - seen.keys())
                raise BenchError(f"{missing} of {len(revisions)} Buildbot changes had no buildset after {timeout:g}s")
            time.sleep(0.05)

    def _stamps(self) -> dict[str, float]:
        seen: dict[str, float] = {}
        text = self.stamps.read_text() if self.stamps.exists() else ""
        for line in text.splitlines():
            parts = line.split()
            if len(parts) == 3:
                for revision in parts[2].split(","):
                    seen.setdefault(revision, float(parts[0]))
        return seen

    def confirm(self, revisions: set[str]) -> dict[str, int]:
        """What the REST API shows: changes, build requests (all pending), and one buildset per revision."""
        assert self.api is not None
        changes = json_of(self.api.get("/changes", params={"field": ["changeid", "revision"]}))["changes"]
        requests = json_of(
            self.api.get("/buildrequests", params={"field": ["buildrequestid", "buildsetid", "claimed", "complete"]})
        )["buildrequests"]
        buildsets = json_of(self.api.get("/buildsets"))["buildsets"]
        by_bsid = {b["bsid"]: {ss["revision"] for ss in b["sourcestamps"]} for b in buildsets}
        requested = set().union(*(by_bsid.get(r["buildsetid"], set()) for r in requests))
        pending = [r for r in requests if not r["claimed"] and not r["complete"]]
        return {
            "changes": len({c["revision"] for c in changes} & revisions),
            "buildrequests": len(requests),
            "pending": len(pending),
            "revisions_with_request": len(requested & revisions),
        }

    def close(self) -> None:
        if self.api is not None:
            self.api.close()
