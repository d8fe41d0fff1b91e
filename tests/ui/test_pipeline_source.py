"""The web UI's pipelines whose YAML lives in a repository: the form's choice of source, refusals at their
field with nothing stored, the pipeline page, and the build page with the commit and the YAML that ran."""

from __future__ import annotations

import re
from html import unescape
from typing import Any

import pytest

from outpost.server.store import accounts
from tests.server.test_protocol import claim, job_call
from tests.stack import Stack
from tests.ui.client import UiClient, csrf_of

HELLO = "version: '1.0'\nsteps:\n  hi:\n    image: alpine\n    commands: [echo 'a < b']\n"
SHA = "0123456789abcdef0123456789abcdef01234567"
REPO_FORM = {"name": "app", "runtime": "local", "source": "repo", "path": "codefresh.yml", "revision": ""}


async def integration(stack: Stack, name: str, *, token: str | None = None, **extra: Any) -> None:
    body = {"kind": "git", "name": name, "url": f"https://{name}.example", "password": "pw", **extra}
    r = await stack.api("POST", "/integrations", json=body, token=token)
    assert r.status_code == 201, r.text


async def stored(stack: Stack, name: str) -> dict[str, Any]:
    r = await stack.api("GET", f"/pipelines/{name}")
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def field_error(html: str, name: str) -> str:
    match = re.search(rf'<span class="hint error" id="{name}-error">([^<]*)</span>', html)
    assert match, f"no error shown at the field {name}"
    return unescape(match.group(1))


def git_options(html: str) -> list[str]:
    select = re.search(r'<select id="git" name="git"[^>]*>(.*?)</select>', html, re.S)
    assert select
    return [unescape(text) for text in re.findall(r"<option[^>]*>([^<]*)</option>", select.group(1))]


async def test_a_pipeline_from_a_repository_is_created_through_the_form_and_its_page_shows_where_from(
    admin: UiClient,
) -> None:
    stack = admin.stack
    await integration(stack, "corp", behind_firewall=True)  # the first one: the default
    await integration(stack, "public")
    form = await admin.get("/new/pipeline")
    assert 'name="source" value="inline" checked' in form.text  # the editor is the default choice
    assert git_options(form.text) == ["default (corp, behind the firewall)", "corp (behind the firewall)", "public"]
    assert "the branch a build asks for, else the repository's default branch" in unescape(form.text)

    data = {**REPO_FORM, "repo": "acme/app", "git": "public", "path": ".ci/codefresh.yml", "yaml": "not: [yaml"}
    r = await admin.submit("/new/pipeline", "/new/pipeline", data)
    assert r.status_code == 303, r.text  # the editor's (broken) YAML was ignored
    p = await stored(stack, "app")
    assert (p["repo"], p["git"], p["yaml_file"], p["revision"], p["yaml"]) == (
        "acme/app",
        "public",
        ".ci/codefresh.yml",
        None,
        "",
    )

    page = (await admin.get("/pipelines/app")).text
    source = re.search(r'<dl class="facts" id="yaml-source">(.*?)</dl>', page, re.S)
    assert source, "the page shows where the YAML comes from"
    text = re.sub(r"<[^>]+>", "", source.group(1))
    for fact in ("acme/app", "public", ".ci/codefresh.yml", "the build's branch, else the default branch"):
        assert fact in unescape(text)
    assert "The pipeline&#39;s YAML" not in page  # no empty listing

    # Through the default integration, with a revision; the page says the default is behind the firewall.
    data = {**REPO_FORM, "name": "app2", "repo": "acme/other", "git": "", "revision": "release/1"}
    assert (await admin.submit("/new/pipeline", "/new/pipeline", data)).status_code == 303
    p = await stored(stack, "app2")
    assert (p["git"], p["revision"]) == (None, "release/1")
    page = unescape((await admin.get("/pipelines/app2")).text)
    assert "default (corp) · behind the firewall" in page
    assert "<code>release/1</code>" in page


@pytest.mark.parametrize(
    ("fields", "name", "reason"),
    [
        ({"repo": "acme/app"}, "git", "there is no default git integration"),
        ({"repo": "acme/app", "git": "nope"}, "git", "no git integration 'nope' in this account"),
        ({"repo": "not a repo"}, "repo", "must be owner/name"),
        ({"repo": ""}, "repo", "must be owner/name"),
        ({"repo": "https://git.example/acme/app.git", "path": "../up.yml"}, "path", "must be a relative path"),
        ({"repo": "https://git.example/acme/app.git", "path": "/etc/passwd"}, "path", "must be a relative path"),
        ({"repo": "https://git.example/acme/app.git", "revision": "a b"}, "revision", "must be a branch, tag or SHA"),
    ],
)
async def test_a_refused_repository_field_comes_back_at_that_field_and_nothing_is_stored(
    admin: UiClient, fields: dict[str, str], name: str, reason: str
) -> None:
    r = await admin.submit("/new/pipeline", "/new/pipeline", {**REPO_FORM, "secrets": "S=hunter2", **fields})
    assert r.status_code == 422
    assert reason in field_error(r.text, name)
    assert re.search(rf'id="{name}" name="{name}"[^>]*aria-invalid="true"', r.text)
    assert f'<a href="#{name}">' in r.text  # the summary links to the field
    assert "Nothing was saved: 2 problems" in r.text  # this one, and the secret to enter again
    assert 'name="source" value="repo" checked' in r.text  # the form comes back as it was sent
    if fields["repo"]:
        assert f'value="{unescape(fields["repo"])}"' in unescape(r.text)
    assert "hunter2" not in r.text
    assert (await admin.stack.api("GET", "/pipelines")).json() == []


async def test_the_git_select_lists_only_this_accounts_integrations_and_refuses_another_accounts(
    admin: UiClient,
) -> None:
    stack = admin.stack
    await integration(stack, "ours")
    async with stack.services.tx() as session:
        other = await accounts.create_account(session, "other")
        _, token = await accounts.create_token(session, other.id, "ci")
    await integration(stack, "theirs", token=token)
    form = await admin.get("/new/pipeline")
    assert git_options(form.text) == ["default (ours)", "ours"]
    assert "theirs" not in form.text
    r = await admin.submit("/new/pipeline", "/new/pipeline", {**REPO_FORM, "repo": "acme/app", "git": "theirs"})
    assert r.status_code == 422
    assert "no git integration 'theirs' in this account" in field_error(r.text, "git")
    assert (await stack.api("GET", "/pipelines")).json() == []


async def test_the_repository_form_needs_its_csrf_token(admin: UiClient) -> None:
    await integration(admin.stack, "corp")
    r = await admin.http.post("/new/pipeline", data={**REPO_FORM, "repo": "acme/app"})
    assert r.status_code == 403
    assert (await admin.stack.api("GET", "/pipelines")).json() == []


async def test_editing_moves_the_yaml_to_a_repository_and_back(admin: UiClient) -> None:
    stack = admin.stack
    await integration(stack, "corp")
    await integration(stack, "other")
    await stack.pipeline("p", HELLO, variables={"V": "1"})

    async def save(data: dict[str, str]) -> int:
        form = await admin.get("/pipelines/p/edit")
        r = await admin.http.post("/pipelines/p/edit", data={"csrf": csrf_of(form.text), "runtime": "local", **data})
        return r.status_code

    moved = {"source": "repo", "repo": "acme/app", "git": "other", "path": "ci/p.yml", "revision": "develop"}
    assert await save({**moved, "variables": "V=2", "yaml": HELLO}) == 303
    p = await stored(stack, "p")
    assert (p["repo"], p["git"], p["yaml_file"], p["revision"], p["yaml"]) == (
        "acme/app",
        "other",
        "ci/p.yml",
        "develop",
        "",
    )
    assert p["variables"] == {"V": "2"}

    form = (await admin.get("/pipelines/p/edit")).text
    assert 'name="source" value="repo" checked' in form
    assert 'id="revision" name="revision" value="develop"' in form
    assert '<option value="other" selected>' in form

    # Emptied fields go back to their defaults: the default integration, the build's branch.
    assert await save({**moved, "git": "", "revision": "", "variables": "V=2"}) == 303
    p = await stored(stack, "p")
    assert (p["repo"], p["git"], p["revision"]) == ("acme/app", None, None)

    # A refusal changes nothing.
    assert await save({**moved, "path": "../x.yml", "variables": "V=3"}) == 422
    p = await stored(stack, "p")
    assert (p["yaml_file"], p["variables"]) == ("ci/p.yml", {"V": "2"})

    # And back to YAML kept in Outpost (the repository fields sent along are ignored).
    assert await save({**moved, "source": "inline", "yaml": HELLO, "yaml_file": "mine.yml", "variables": "V=2"}) == 303
    p = await stored(stack, "p")
    assert (p["repo"], p["git"], p["revision"], p["yaml"], p["yaml_file"]) == (None, None, None, HELLO, "mine.yml")


async def test_a_build_page_shows_the_repository_the_commit_read_and_the_yaml_that_ran(admin: UiClient) -> None:
    stack = admin.stack
    await integration(stack, "corp")
    r = await stack.api("POST", "/pipelines", json={"name": "app", "repo": "acme/app", "git": "corp"})
    assert r.status_code == 201, r.text
    await stack.pipeline("inline", HELLO)
    runner = await stack.register()
    build = await stack.run("app", branch="main")

    waiting = unescape((await admin.get(f"/builds/{build['id']}")).text)
    assert "<code>acme/app</code> · <code>codefresh.yml</code>" in waiting
    assert "main (not read yet)" in re.sub(r"<[^>]+>", "", waiting)
    assert "Not read yet" in waiting

    task = await claim(stack, runner.runner_token)
    r = await job_call(
        stack, task, "POST", "/started", json={"steps": [{"name": "hi"}], "yaml": HELLO, "yaml_revision": SHA}
    )
    assert r.status_code == 200, r.text
    html = (await admin.get(f"/builds/{build['id']}")).text
    revision = re.search(r'<dd id="yaml-revision">(.*?)</dd>', html, re.S)
    assert revision
    assert f"<code>{SHA}</code>" in revision.group(1)
    assert "(main)" in revision.group(1)  # the branch it was asked for
    details = re.search(r'<details class="ran" id="yaml-ran">(.*?)</details>', html, re.S)
    assert details, "the YAML that ran is there, folded"
    assert "YAML that ran" in details.group(1)
    assert "echo &#39;a &lt; b&#39;" in details.group(1)  # escaped, as it ran
    assert '<details class="ran" id="yaml-ran" open' not in html

    inline = await stack.run("inline")
    page = (await admin.get(f"/builds/{inline['id']}")).text
    assert "yaml-ran" not in page
    assert "YAML from" not in page
