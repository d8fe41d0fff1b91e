"""A step's status as the build page shows it: a log that arrives before the update saying the step runs
(they travel separately from the runner) shows the step running, not pending."""

from __future__ import annotations

import re

from tests.server.test_protocol import claim, job_call
from tests.ui.client import UiClient

HELLO = "version: '1.0'\nsteps:\n  hello:\n    image: alpine\n    commands: [echo hi]\n"


async def test_a_step_whose_log_streams_before_its_running_update_shows_running(admin: UiClient) -> None:
    stack = admin.stack
    runner = await stack.register()
    await stack.pipeline("early", HELLO)
    build = await stack.run("early", branch="main")
    task = await claim(stack, runner.runner_token)
    await job_call(stack, task, "POST", "/started", json={"steps": [{"name": "hello"}]})
    page = await admin.get(f"/builds/{build['id']}")
    assert re.search(r'data-step="hello" data-status="pending"', page.text)  # nothing printed yet

    r = await job_call(stack, task, "PUT", "/steps/hello/log", params={"offset": 0}, content=b"streaming\n")
    assert r.status_code == 200, r.text
    page = await admin.get(f"/builds/{build['id']}")
    assert re.search(r'data-step="hello" data-status="running"', page.text)
    assert "streaming" in page.text  # and the page opens on that step's log
