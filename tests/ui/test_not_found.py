"""An unknown path, in-process: a page for a browser (escaped, with the navigation when logged in), the API's
JSON for everyone else."""

from __future__ import annotations

from tests.stack import Stack
from tests.ui.client import UiClient

HTML = {"Accept": "text/html,application/xhtml+xml"}


async def test_an_unknown_path_never_echoes_markup_into_the_page(admin: UiClient) -> None:
    r = await admin.get("/%3Cscript%3Ealert(1)%3C%2Fscript%3E", headers=HTML)
    assert r.status_code == 404
    assert r.headers["content-type"].startswith("text/html")
    assert "<script>alert(1)" not in r.text
    assert "&lt;script&gt;alert(1)" in r.text
    assert 'aria-label="Main"' in r.text  # the navigation: the user is logged in
    assert r.headers["content-security-policy"].startswith("default-src 'self'")


async def test_an_unknown_path_without_a_session_is_a_page_without_the_navigation(
    ui_stack: tuple[Stack, str],
) -> None:
    stack, _ = ui_stack
    async with UiClient(stack) as client:
        r = await client.get("/nowhere", headers=HTML)
        assert r.status_code == 404
        assert "Not found" in r.text
        assert 'aria-label="Main"' not in r.text


async def test_api_clients_and_api_paths_get_json(admin: UiClient) -> None:
    for path, headers in (("/nowhere", {"Accept": "application/json"}), ("/nowhere", {}), ("/api/v1/nope", HTML)):
        r = await admin.get(path, headers=headers)
        assert r.status_code == 404
        assert r.json()["error"] == "http_404", (path, headers)
