"""Runs a planned pipeline on the runner: steps, variables, results, cancel and timeouts."""

from outpost.engine.engine import BuildContext, BuildEngine, BuildOutcome, Reporter

__all__ = ["BuildContext", "BuildEngine", "BuildOutcome", "Reporter"]
