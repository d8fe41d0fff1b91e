"""The web UI in-process: sessions, CSRF, tenancy, pages without JavaScript, live streams, log windows."""

from __future__ import annotations

import json
import re

from outpost.server.bootstrap import bootstrap
from outpost.server.store import accounts, users
from outpost.server.ui.sessions import COOKIE
from tests.server.test_protocol import claim, job_call
from tests.server.test_webhooks import deliver
from tests.stack import Stack
from tests.ui.client import UiClient, csrf_of

HELLO = "version: '1.0'\nsteps:\n  hello:\n    image: alpine\n    commands: [echo hi]\n"
CHUNK = 60_000  # under the test stack's max_log_chunk
BROKEN = "version: '1.0'\nsteps:\n  hello:\n    image: alpine\n    commands: echo hi\n    timeout: forever\n"


async def finished_build(stack: Stack, log: bytes, *, pipeline: str = "hello") -> str:
    """A build of HELLO that ran on a runner (through the real protocol) and printed `log`."""
    runner = await stack.register()
    await stack.pipeline(pipeline, HELLO)
    build = await stack.run(pipeline, branch="main")
    task = await claim(stack, runner.runner_token)
    await job_call(stack, task, "POST", "/started", json={"steps": [{"name": "hello"}]})
    for offset in range(0, len(log), CHUNK):
        r = await job_call(
            stack, task, "PUT", "/steps/hello/log", params={"offset": offset}, content=log[offset : offset + CHUNK]
        )
        assert r.status_code == 200, r.text
    await job_call(stack, task, "POST", "/steps/hello", json={"status": "success", "exit_code": 0})
    await job_call(stack, task, "POST", "/finish", json={"status": "success"})
    return str(build["id"])


# --- logging in and out ----------------------------------------------------------------------------


async def test_pages_send_a_visitor_without_a_session_to_the_login_form(ui_stack: tuple[Stack, str]) -> None:
    stack, _ = ui_stack
    async with UiClient(stack) as client:
        r = await client.get("/pipelines?x=1")
        assert r.status_code == 303
        assert r.headers["location"] == "/login?next=%2Fpipelines%3Fx%3D1"
        r = await client.get("/ui/events/builds")
        assert r.status_code == 401


async def test_a_wrong_password_or_unknown_user_is_refused_and_sets_no_session(ui_stack: tuple[Stack, str]) -> None:
    stack, password = ui_stack
    async with UiClient(stack) as client:
        for username, attempt in (("admin", password + "x"), ("nobody", password), ("admin", "")):
            r = await client.login(username, attempt)
            assert r.status_code == 401
            assert "Wrong username or password" in r.text or not attempt
            assert COOKIE not in r.cookies
        assert (await client.get("/builds")).status_code == 303


async def test_the_session_cookie_is_http_only_same_site_and_logging_in_goes_to_next(
    ui_stack: tuple[Stack, str],
) -> None:
    stack, password = ui_stack
    async with UiClient(stack) as client:
        form = await client.get("/login?next=/pipelines")
        r = await client.http.post(
            "/login", data={"csrf": csrf_of(form.text), "username": "admin", "password": password, "next": "/pipelines"}
        )
        assert r.status_code == 303
        assert r.headers["location"] == "/pipelines"
        cookie = next(h for h in r.headers.get_list("set-cookie") if h.startswith(COOKIE + "="))
        assert "HttpOnly" in cookie
        assert "SameSite=lax" in cookie
        assert "Secure" not in cookie  # the public URL is http:// here
        assert password not in cookie
        for target in ("//evil.example/", "https://evil.example/"):
            form = await client.get("/login")
            r = await client.http.post(
                "/login", data={"csrf": csrf_of(form.text), "username": "admin", "password": password, "next": target}
            )
            assert r.headers["location"] == "/builds"


async def test_logging_out_ends_the_session_even_for_a_copied_cookie(admin: UiClient) -> None:
    stolen = admin.http.cookies[COOKIE]
    r = await admin.submit("/builds", "/logout")
    assert r.status_code == 303
    assert r.headers["location"] == "/login"
    async with UiClient(admin.stack) as other:
        other.http.cookies.set(COOKIE, stolen)
        assert (await other.get("/builds")).status_code == 303


async def test_a_forged_session_cookie_is_ignored(ui_stack: tuple[Stack, str]) -> None:
    stack, _ = ui_stack
    async with UiClient(stack) as client:
        client.http.cookies.set(COOKIE, "gAAAAAB-not-a-real-token")
        assert (await client.get("/builds")).status_code == 303


# --- CSRF --------------------------------------------------------------------------------------------


async def test_every_form_is_refused_with_403_without_its_csrf_token(admin: UiClient) -> None:
    stack = admin.stack
    build_id = await finished_build(stack, b"hi\n")
    runner_id = (await stack.api("GET", "/runners")).json()[0]["id"]
    forms = [
        ("/new/pipeline", {"name": "x", "yaml": HELLO}),
        ("/pipelines/hello/edit", {"yaml": HELLO}),
        ("/pipelines/hello/run", {"branch": "main"}),
        (f"/builds/{build_id}/restart", {}),
        (f"/builds/{build_id}/cancel", {}),
        (f"/builds/{build_id}/steps/hello/approve", {}),
        ("/new/trigger", {"pipeline": "hello", "kind": "git", "provider": "github", "repo": "a/b", "events": "push"}),
        ("/new/runtime", {"name": "other"}),
        ("/runtimes/local/install-token", {}),
        (f"/runners/{runner_id}/revoke", {}),
        ("/new/integration", {"kind": "git", "name": "g", "url": "https://git.example"}),
        ("/logout", {}),
    ]
    for action, data in forms:
        for token in (None, "wrong"):
            body = data if token is None else {**data, "csrf": token}
            r = await admin.http.post(action, data=body)
            assert r.status_code == 403, (action, token, r.status_code)
            assert "CSRF" in r.text
    listed = await stack.api("GET", "/pipelines")
    assert [p["name"] for p in listed.json()] == ["hello"]
    assert len((await stack.api("GET", "/builds")).json()) == 1
    assert [r["id"] for r in (await stack.api("GET", "/runners")).json()] == [runner_id]  # not revoked
    assert (await admin.get("/builds")).status_code == 200  # still logged in


async def test_the_login_form_needs_its_own_csrf_cookie(ui_stack: tuple[Stack, str]) -> None:
    stack, password = ui_stack
    async with UiClient(stack) as client:
        r = await client.http.post("/login", data={"username": "admin", "password": password, "csrf": "guess"})
        assert r.status_code == 403


# --- tenancy ----------------------------------------------------------------------------------------


async def test_a_user_sees_only_their_own_account(admin: UiClient) -> None:
    stack = admin.stack
    build_id = await finished_build(stack, b"secret output\n")
    async with stack.services.tx() as session:
        other = await accounts.create_account(session, "other")
        await users.create_user(session, other.id, "bob", "bob-password-long")
    async with UiClient(stack) as bob:
        assert (await bob.login("bob", "bob-password-long")).status_code == 303
        listing = await bob.get("/builds")
        assert listing.status_code == 200
        assert build_id not in listing.text
        assert "hello" not in (await bob.get("/pipelines")).text
        for path in (
            f"/builds/{build_id}",
            f"/builds/{build_id}/steps/hello/log.txt",
            f"/ui/builds/{build_id}/steps/hello/lines",
            f"/ui/events/builds/{build_id}",
            "/pipelines/hello",
            "/pipelines/hello/edit",
        ):
            r = await bob.get(path)
            assert r.status_code == 404, path
            assert "secret output" not in r.text
        r = await bob.submit("/builds", f"/builds/{build_id}/restart")
        assert r.status_code == 404
    assert len((await stack.api("GET", "/builds")).json()) == 1


# --- pages without JavaScript ------------------------------------------------------------------------


async def test_every_page_reads_without_javascript(admin: UiClient) -> None:
    build_id = await finished_build(admin.stack, b"\x1b[31mred\x1b[0m & <b>not bold</b>\nsecond\n")
    for path in (
        "/builds",
        "/pipelines",
        "/pipelines/hello",
        "/new/pipeline",
        "/pipelines/hello/edit",
        "/triggers",
        "/new/trigger",
        "/integrations",
        "/new/integration",
        "/runtimes",
    ):
        r = await admin.get(path)
        assert r.status_code == 200, path
        assert "<noscript" not in r.text
        assert "Content-Security-Policy" in r.headers
    page = await admin.get(f"/builds/{build_id}")
    assert page.status_code == 200
    html = page.text
    assert '<span class="status s-success">' in html
    first_line = (
        '<div class="l" id="L1"><a class="n" href="#L1" tabindex="-1">1</a>'
        '<span><span class="f1">red</span> &amp; &lt;b&gt;not bold&lt;/b&gt;</span></div>'
    )
    assert first_line in html
    assert 'id="L2"' in html
    assert 'data-live=""' in html  # a finished build needs no stream
    listing = await admin.get("/builds")
    assert f"/builds/{build_id}" in listing.text
    assert "main" in listing.text


async def test_a_pipeline_with_problems_comes_back_with_each_at_its_line_and_nothing_is_stored(admin: UiClient) -> None:
    r = await admin.submit(
        "/new/pipeline",
        "/new/pipeline",
        {"name": "broken", "runtime": "local", "yaml": BROKEN, "variables": "A=1\nnot a pair", "secrets": "S=hunter2"},
    )
    assert r.status_code == 422
    assert "Line 5, column 15" in r.text
    assert "Line 6, column 14" in r.text
    assert re.findall(r'<span class="bad"[^>]*>(\d+)</span>', r.text) == ["5", "6"]
    assert "Variables, line 2: write KEY=VALUE" in r.text
    assert "hunter2" not in r.text  # a secret value is not sent back
    assert (await admin.stack.api("GET", "/pipelines")).json() == []
    r = await admin.submit(
        "/new/pipeline",
        "/new/pipeline",
        {"name": "fixed", "runtime": "local", "yaml": HELLO, "variables": "A=1", "secrets": "S=hunter2"},
    )
    assert r.status_code == 303
    stored = (await admin.stack.api("GET", "/pipelines/fixed")).json()
    assert stored["variables"] == {"A": "1"}
    assert stored["secrets"] == ["S"]
    page = await admin.get("/pipelines/fixed")
    assert "hunter2" not in page.text
    assert "•••••" in page.text


async def test_editing_keeps_unchanged_secrets_and_can_drop_one(admin: UiClient) -> None:
    stack = admin.stack
    sealed = stack.services.secrets.seal_all({"KEEP": "k-value", "DROP": "d-value"})
    async with stack.services.tx() as session:
        who = await accounts.authenticate(session, stack.admin_token)
        from outpost.server.store import pipelines

        await pipelines.create_pipeline(session, who, name="p", yaml=HELLO, sealed_secrets=sealed)
    form = await admin.get("/pipelines/p/edit")
    assert "k-value" not in form.text
    r = await admin.http.post(
        "/pipelines/p/edit",
        data={
            "csrf": csrf_of(form.text),
            "yaml": HELLO,
            "runtime": "local",
            "variables": "V=1",
            "secrets": "NEW=n-value",
            "drop_secret": "DROP",
        },
    )
    assert r.status_code == 303, r.text
    stored = (await stack.api("GET", "/pipelines/p")).json()
    assert stored["secrets"] == ["KEEP", "NEW"]
    assert stored["variables"] == {"V": "1"}


async def test_running_and_restarting_start_builds_with_the_same_variables(admin: UiClient) -> None:
    await admin.stack.pipeline("hello", HELLO)
    r = await admin.submit("/pipelines/hello", "/pipelines/hello/run", {"branch": "dev", "sha": "", "variables": "X=1"})
    assert r.status_code == 303
    first = r.headers["location"].rsplit("/", 1)[-1]
    r = await admin.submit(f"/builds/{first}", f"/builds/{first}/restart")
    second = r.headers["location"].rsplit("/", 1)[-1]
    assert second != first
    one, two = (await admin.stack.build(first)), (await admin.stack.build(second))
    assert two["branch"] == one["branch"] == "dev"
    assert two["variables"] == one["variables"]
    assert two["variables"]["X"] == "1"
    r = await admin.submit(f"/builds/{second}", f"/builds/{second}/cancel")
    assert (await admin.stack.build(second))["status"] == "terminated"


# --- big logs: windows, pages, search, download, the live stream ---------------------------------------


async def test_a_big_log_opens_on_its_tail_and_pages_backwards(admin: UiClient) -> None:
    lines = b"".join(b"line %d\n" % i for i in range(1, 20_001))
    build_id = await finished_build(admin.stack, lines)
    page = await admin.get(f"/builds/{build_id}?step=hello")
    assert page.status_code == 200
    assert len(page.content) < 150_000
    assert 'id="L20000"' in page.text
    assert 'id="L19501"' in page.text
    assert 'id="L19500"' not in page.text
    assert "Show earlier lines (1–19500 are not shown)" in page.text  # noqa: RUF001
    earlier = await admin.get(f"/ui/builds/{build_id}/steps/hello/lines?start=18501&count=1000")
    assert earlier.headers["outpost-first"] == "18501"
    assert 'id="L18501"' in earlier.text
    assert 'id="L19500"' in earlier.text
    assert 'id="L19501"' not in earlier.text
    window = await admin.get(f"/builds/{build_id}?step=hello&start=10")
    assert 'id="L10"' in window.text
    assert "Jump to the end" in window.text
    found = await admin.get(f"/builds/{build_id}?step=hello&q=line+1999")
    assert "11 lines with “line 1999”" in found.text
    assert "#L19990" in found.text
    raw = await admin.get(f"/builds/{build_id}/steps/hello/log.txt")
    assert raw.content == lines
    assert "attachment" in raw.headers["content-disposition"]


async def test_the_build_stream_sends_state_then_the_lines_not_yet_shown_then_ends(admin: UiClient) -> None:
    build_id = await finished_build(admin.stack, b"one\ntwo\nthree\nno newline at the end")
    # As a page that showed "one" (4 bytes, 1 line) before the rest arrived:
    r = await admin.get(f"/ui/events/builds/{build_id}?cursor=0&step=hello&offset=4&line=2")
    assert r.headers["content-type"].startswith("text/event-stream")
    events = [(m.group(1), json.loads(m.group(2))) for m in re.finditer(r"event: (\w+)\ndata: (.*)\n", r.text)]
    assert [name for name, _ in events] == ["state", "lines", "end"]
    state, lines, end = (data for _, data in events)
    assert state["status"] == "success"
    assert "s-success" in state["header"]
    assert lines["first"] == 2
    assert 'id="L1"' not in lines["html"]
    assert re.findall(r'id="L(\d+)"', lines["html"]) == ["2", "3", "4"]
    assert "no newline at the end" in lines["html"]
    assert end == {"status": "success"}
    again = await admin.get(f"/ui/events/builds/{build_id}?step=hello&offset=0", headers={"Last-Event-ID": "0:8:3"})
    assert re.findall(r'id=\\"L(\d+)\\"', again.text) == ["3", "4"]


async def test_the_admin_user_is_made_once_and_its_password_file_is_private(ui_stack: tuple[Stack, str]) -> None:
    stack, password = ui_stack
    path = stack.data_dir / "admin-password"
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    assert path.read_text().strip() == password
    again = await bootstrap(stack.services, stack.data_dir, local_runtime=True, ui_admin=True)
    assert again.password == password
    path.write_text("lost\n")
    renewed = await bootstrap(stack.services, stack.data_dir, local_runtime=True, ui_admin=True)
    assert renewed.password != password
    assert path.read_text().strip() == renewed.password
    async with UiClient(stack) as client:
        assert (await client.login("admin", password)).status_code == 401
        assert (await client.login("admin", renewed.password)).status_code == 303


async def test_a_delivery_waiting_for_its_changed_files_shows_as_pending(admin: UiClient) -> None:
    stack = admin.stack
    await stack.api("POST", "/integrations", json={"kind": "git", "name": "corp", "url": "https://git.corp"})
    await stack.pipeline("hello", HELLO)
    body = {"pipeline": "hello", "provider": "github", "repo": "acme/app", "events": ["push"]}
    trigger = (await stack.api("POST", "/triggers", json={**body, "modified_files_glob": "src/**"})).json()
    await stack.register()  # online, but it never answers: the delivery stays pending while the page is read
    push = {"ref": "refs/heads/main", "before": "a" * 40, "after": "b" * 40, "forced": True, "commits": []}
    payload = json.dumps({**push, "repository": {"full_name": "acme/app"}, "pusher": {"name": "alice"}}).encode()
    r = await deliver(stack, trigger, "push-forced", body=payload)
    assert r.json()["outcome"] == "pending", r.text
    page = await admin.get(f"/triggers/{trigger['id']}")
    assert "pending…" in page.text
    assert "the changed files are being computed on a runner of runtime local" in page.text
    assert "the pipeline's git integration, else the default one" in page.text
