"""The "Reading the numbers" paragraph: sentences that follow from the measured figures.

Each sentence checks the numbers it explains, so rerunning after a fix in src/ changes the text
instead of leaving a stale explanation behind.
"""

from __future__ import annotations

from collections.abc import Sequence

from samples import Result, median

AIM_MS = 20.0
SHIPPED = ("embedded", "separate")
MATTERS_MS = 10.0  # a difference smaller than this is not worth a sentence


def _p(by_key: dict[str, Result], key: str, metric: str = "dispatch", q: str = "p50") -> float | None:
    r = by_key.get(key)
    s = r.summary(metric) if r is not None and not r.skipped else None
    return getattr(s, q) if s else None


def _stage(by_key: dict[str, Result], key: str, stage: str) -> float | None:
    r = by_key.get(key)
    return median(r.stages.get(stage, [])) if r is not None and not r.skipped else None


def _largest_stage(r: Result) -> tuple[str, float]:
    medians = {k: median(v) or 0.0 for k, v in r.stages.items()}
    key = max(medians, key=lambda k: medians[k])
    return key, medians[key]


def interpret(results: Sequence[Result]) -> list[str]:
    by_key = {r.key: r for r in results}
    sentences = [
        _shipped(by_key),
        _nodelay(by_key),
        _orphans(by_key),
        _remaining(by_key),
        _first_log(by_key),
        _peers(by_key),
    ]
    return [s for s in sentences if s]


def _shipped(by_key: dict[str, Result]) -> str:
    shipped = [(by_key[k].label, _p(by_key, k), _p(by_key, k, q="p90")) for k in SHIPPED if _p(by_key, k)]
    if not shipped:
        return "Outpost as shipped produced no numbers in this run (see the notes)."
    figures = " and ".join(f"{p50:.0f} ms ({label}; p90 {p90:.0f} ms)" for label, p50, p90 in shipped)
    verdict = "meets" if all(p90 is not None and p90 <= AIM_MS for _, _, p90 in shipped) else "misses"
    worst = max(p50 or 0.0 for _, p50, _ in shipped)
    stage = ""
    r = by_key.get("separate") or by_key.get("embedded")
    if r is not None and r.stages and not r.skipped:
        name, value = _largest_stage(r)
        stage = f"; its largest stage is `{name}` ({value:.0f} ms, {r.label})"
    factor = f" by a factor of {worst / AIM_MS:.0f}" if verdict == "misses" and worst >= 2 * AIM_MS else ""
    return (
        f"As shipped, Outpost starts the first step {figures} after the request (medians), so it {verdict} "
        f"the {AIM_MS:.0f} ms aim on loopback{factor}{stage}."
    )


def _nodelay(by_key: dict[str, Result]) -> str:
    figures = [_p(by_key, k, m) for m in ("dispatch", "end_to_end") for k in ("separate", "nodelay")]
    if any(f is None for f in figures):
        return ""
    before, after, e2e_before, e2e_after = (f or 0.0 for f in figures)
    if e2e_before - e2e_after < MATTERS_MS:
        return "What-if A (TCP_NODELAY on the server's sockets) no longer differs: that fix is in."
    return (
        "What-if A differs from `outpost server` only in creating its listening socket with `IPPROTO_TCP` (so "
        f"asyncio sets TCP_NODELAY on accepted connections): median dispatch {before:.0f} → {after:.0f} ms, end "
        f"to end {e2e_before:.0f} → {e2e_after:.0f} ms, since otherwise a response written as headers then body "
        "can wait ~40 ms for the client's delayed ACK, on every HTTP exchange of the path."
    )


def _orphans(by_key: dict[str, Result]) -> str:
    figures = [_p(by_key, "nodelay"), _p(by_key, "fixed")]
    figures += [_stage(by_key, k, s) for s in ("claim", "handover") for k in ("nodelay", "fixed")]
    if any(f is None for f in figures):
        return ""
    before, after, claim_a, claim_b, handover_a, handover_b = (f or 0.0 for f in figures)
    if before - after < MATTERS_MS:
        return "What-if B (polls end when their runner hangs up) no longer differs from A: that fix is in."
    return (
        f"What-if B also ends a runner's poll when the runner hangs up: median {before:.0f} → {after:.0f} ms "
        f"(`claim` {claim_a:.0f} → {claim_b:.0f}, `handover` {handover_a:.0f} → {handover_b:.0f}), because as "
        "shipped the poll a runner drops when its build ends keeps running on the server until its 30 s deadline, "
        "and each such orphan runs a transaction on the single SQLite connection at every new build, so the live "
        f"poll and the `started` report queue behind them, the more so the more builds ran in the last 30 s"
        f"{_shutdown(by_key)}."
    )


def _shutdown(by_key: dict[str, Result]) -> str:
    def killed(key: str) -> bool:
        r = by_key.get(key)
        return r is not None and any("SIGTERM" in note for note in r.notes)

    if killed("nodelay") and not killed("fixed"):
        return "; they also keep the server from exiting after SIGTERM (see the notes)"
    return ""


def _remaining(by_key: dict[str, Result]) -> str:
    key = next((k for k in ("fixed", "nodelay") if _p(by_key, k)), None)
    if key is None:
        return ""
    r = by_key[key]
    p50, p90 = _p(by_key, key) or 0.0, _p(by_key, key, q="p90") or 0.0
    stage, value = _largest_stage(r) if r.stages else ("?", 0.0)
    verdict = "within" if p90 <= AIM_MS else "still above"
    return (
        f"With {r.label.split(':')[0]} the median is {p50:.0f} ms (p90 {p90:.0f} ms), {verdict} the aim: what is "
        "left is HTTP exchanges and SQLite transactions in series (store, claim, `started`), each a few "
        f"milliseconds on this machine (largest stage `{stage}`, {value:.0f} ms)."
    )


def _first_log(by_key: dict[str, Result]) -> str:
    key = next((k for k in ("fixed", "nodelay", "separate", "embedded") if _p(by_key, k)), None)
    if key is None:
        return ""
    dispatch, first_log = _p(by_key, key), _p(by_key, key, "first_log")
    if dispatch is None or first_log is None:
        return ""
    return (
        f"The first log line reaches an API follower {first_log - dispatch:.0f} ms after the step started "
        f"({by_key[key].label}, medians): the runner's outbox sends one request at a time, each stream's bytes "
        "before the state changes queued with them, so the `$system` notice and the step's `running` report go "
        "out before the step's own bytes."
    )


def _peers(by_key: dict[str, Result]) -> str:
    parts = []
    for key in ("buildbot", "prefect"):
        start, end = _p(by_key, key), _p(by_key, key, "end_to_end")
        if start is not None and end is not None:
            parts.append(f"{by_key[key].label} starts its step after {start:.0f} ms and finishes after {end:.0f} ms")
    return ("Side by side (medians): " + "; ".join(parts) + ".") if parts else ""
