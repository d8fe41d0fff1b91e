"""The "Reading the numbers" paragraph: sentences that follow from the measured figures.

Each sentence checks the numbers it explains, so rerunning after a fix in src/ changes the text
instead of leaving a stale explanation behind.
"""

from __future__ import annotations

from collections.abc import Sequence

from samples import Result, median

AIM_MS = 10.0  # issue 14: request -> first step runs, p50 (p90 is what the verdict below holds to)
SHIPPED = ("embedded", "separate")


def _p(by_key: dict[str, Result], key: str, metric: str = "dispatch", q: str = "p50") -> float | None:
    r = by_key.get(key)
    s = r.summary(metric) if r is not None and not r.skipped else None
    return getattr(s, q) if s else None


def _largest_stage(r: Result) -> tuple[str, float]:
    medians = {k: median(v) or 0.0 for k, v in r.stages.items() if k != "started"}  # `started`: off the path
    key = max(medians, key=lambda k: medians[k])
    return key, medians[key]


def interpret(results: Sequence[Result]) -> list[str]:
    by_key = {r.key: r for r in results}
    sentences = [
        _shipped(by_key),
        _breakdown(by_key),
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
    factor = f" by a factor of {worst / AIM_MS:.0f}" if verdict == "misses" and worst >= 2 * AIM_MS else ""
    return (
        f"Outpost starts the first step {figures} after the request (medians), so it {verdict} the "
        f"{AIM_MS:.0f} ms aim on loopback{factor}."
    )


def _breakdown(by_key: dict[str, Result]) -> str:
    r = next((by_key[k] for k in ("separate", "embedded") if _p(by_key, k) and by_key[k].stages), None)
    if r is None:
        return ""
    stages = {k: median(v) or 0.0 for k, v in r.stages.items()}
    if not {"claim", "handover"} <= stages.keys():
        return ""
    rest = sum(v for k, v in stages.items() if k not in ("claim", "handover", "started"))  # `started`: off the path
    name, value = _largest_stage(r)
    if value < AIM_MS:
        closing = "no stage alone reaches the aim, so meeting it means taking exchanges off the path, not tuning one"
    else:
        closing = f"`{name}` alone is past the aim"
    return (
        f"In the stage table ({r.label}), `handover` ({stages['handover']:.0f} ms) is the poll's answer and the "
        "runner setting the build up (its `started` rides the first report, which nothing waits for); "
        f"`claim` ({stages['claim']:.0f} ms) is the poll waking up and claiming the build in a transaction; "
        f"`request` and `spawn` add {rest:.0f} ms: the path is a series of HTTP exchanges and SQLite "
        f"transactions, and {closing}."
    )


def _first_log(by_key: dict[str, Result]) -> str:
    key = next((k for k in ("separate", "embedded") if _p(by_key, k)), None)
    if key is None:
        return ""
    dispatch, first_log = _p(by_key, key), _p(by_key, key, "first_log")
    if dispatch is None or first_log is None:
        return ""
    return (
        f"The first log line reaches an API follower {first_log - dispatch:.0f} ms after the step started "
        f"({by_key[key].label}, medians): the runner's outbox lets what comes within 10 ms ride in one report "
        "(a short step's start, its output and its end), the report is stored in one transaction, and the "
        "follower's long poll answers once that transaction has committed."
    )


def _peers(by_key: dict[str, Result]) -> str:
    ours = next((_p(by_key, k, "end_to_end") for k in ("separate", "embedded") if _p(by_key, k)), None)
    parts = [f"Outpost finishes the build after {ours:.0f} ms"] if ours is not None else []
    for key in ("buildbot", "prefect"):
        start, end = _p(by_key, key), _p(by_key, key, "end_to_end")
        if start is not None and end is not None:
            times = f" ({end / ours:.1f} times Outpost's end to end)" if ours else ""
            parts.append(
                f"{by_key[key].label} starts its step after {start:.0f} ms and finishes after {end:.0f} ms{times}"
            )
    return ("Side by side (medians): " + "; ".join(parts) + ".") if len(parts) > 1 else ""
