"""Git triggers: webhook payloads from GitHub, GitLab and Bitbucket Server turned into builds.

Each provider module has two pure functions: `verify(headers, body, secret)` checks the signature and
`parse(headers, payload)` turns a payload into one provider-neutral `GitEvent`. `filters.decide` says
whether a trigger's rules accept an event, and if not, which rule refused it and why.
"""
