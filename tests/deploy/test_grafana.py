"""deploy/grafana/outpost.json: a Grafana dashboard whose every query names metrics that the control plane's and
the runner's /metrics really export, grouped by labels those metrics really carry."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from outpost.runner.agent import Runner, RunnerIdentity, RunnerOptions
from outpost.runner.client import ProtocolClient
from outpost.runner.metrics import RunnerMetrics
from tests.stack import BASE, running_stack, settings_for

DASHBOARD = Path(__file__).resolve().parents[2] / "deploy" / "grafana" / "outpost.json"
METRIC = re.compile(r"\b((?:outpost|process)_[a-z0-9_]+)\b")
GROUPING = re.compile(r"\bby \(([^)]*)\)")
SCRAPER_LABELS = {"instance", "job"}  # added by Prometheus to every series it scrapes


def queries(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    found = [(p["title"], t["expr"]) for p in dashboard["panels"] for t in p.get("targets", [])]
    found += [(v["name"], v["definition"]) for v in dashboard["templating"]["list"] if "definition" in v]
    return found


async def exported(tmp_path: Path) -> dict[str, set[str]]:
    """Every sample name both sides export (histogram buckets, counters' _total included), with its label names."""
    out: dict[str, set[str]] = {}
    async with running_stack(settings_for(f"sqlite+aiosqlite:///{tmp_path / 'db'}", tmp_path / "data")) as stack:
        await stack.api("GET", "/health")  # a request, so the per-route series exist
        async with stack.client() as c:
            control_plane = (await c.get("/metrics")).text
    observed = RunnerMetrics()
    client = ProtocolClient(BASE, observer=observed)
    observed.runner = Runner(client, RunnerIdentity(BASE, "r", "t", "a", "rt"), RunnerOptions(BASE, tmp_path / "r"))
    await client.aclose()
    for text in (control_plane, observed.exposition().decode()):
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                out.setdefault(s.name, set()).update(s.labels)
    return out


def test_the_dashboard_is_a_grafana_dashboard_with_unique_panels_on_a_prometheus_data_source() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"]
    assert dashboard["title"]
    assert isinstance(dashboard["schemaVersion"], int)
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    for panel in dashboard["panels"]:
        box = panel["gridPos"]
        assert box["x"] + box["w"] <= 24, panel["title"]
        assert box["h"] > 0, panel["title"]
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        assert panel["targets"], panel["title"]
        ref_ids = [t["refId"] for t in panel["targets"]]
        assert len(ref_ids) == len(set(ref_ids)), panel["title"]
    used = {name for _, expr in queries(dashboard) for name in re.findall(r"\$(\w+)", expr)}
    assert used - {"__rate_interval"} <= set(variables)


async def test_every_query_names_metrics_and_labels_that_metrics_endpoints_export(tmp_path: Path) -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    metrics = await exported(tmp_path)
    for where, expr in queries(dashboard):
        names = METRIC.findall(expr)
        assert names, f"{where}: {expr} names no metric"
        unknown = [n for n in names if n not in metrics]
        assert not unknown, f"{where}: {expr} names {unknown}, which nobody exports"
        carried = set().union(*(metrics[n] for n in names)) | SCRAPER_LABELS
        for grouping in GROUPING.findall(expr):
            labels = {label.strip() for label in grouping.split(",")}
            assert labels <= carried, f"{where}: {expr} groups by {labels - carried}, which {names} do not carry"
    # And the other way: every metric of ours is on the dashboard somewhere.
    shown = {n for _, expr in queries(dashboard) for n in METRIC.findall(expr)}
    suffixes = ("_bucket", "_count", "_sum", "_created")  # a histogram's parts; when a counter began
    ours = {re.sub("|".join(f"{s}$" for s in suffixes), "", n) for n in metrics if n.startswith("outpost_")}
    missing = sorted(n for n in ours if not any(s.startswith(n) for s in shown))
    assert missing == [], "metrics the dashboard does not show"
