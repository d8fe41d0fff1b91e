"""Git, for whoever needs it: the engine's clone step, the runner's YAML reads and git queries, and the control
plane's "test connection". `urls` parses repository URLs, `access` turns a git integration into a URL and a
credential, `credentials` builds the environment git runs in (askpass, proxies), `process` runs and ends git,
`clone` checks a repository out, `remote` reads one without a checkout.

Below the engine, the runner and the server: it imports none of them.
"""
