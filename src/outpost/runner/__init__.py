"""The runner: an agent behind the firewall that only connects out, polls for builds and runs them.

It imports `wire`, `pipelines`, `engine` and `executors`, never `server`.
"""
