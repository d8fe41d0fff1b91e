"""A small synchronous client of the public API for the CLI, with errors a person can read."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from outpost import __version__
from outpost.cli.config import CliConfig
from outpost.errors import OutpostError

if TYPE_CHECKING:
    import httpx


class ApiError(OutpostError):
    def __init__(self, status: int, body: dict[str, Any]) -> None:
        self.status = status
        self.body = body
        message = str(body.get("message") or body)
        problems = body.get("problems")
        if isinstance(problems, list) and problems:
            message += "\n" + "\n".join(str(p) for p in problems)
        super().__init__(message)


class Unreachable(OutpostError):
    """The control plane could not be reached (connection refused, reset or timed out): worth trying again."""


class Api:
    def __init__(self, config: CliConfig, timeout: float = 30.0) -> None:
        import httpx  # here, not at the top: commands that never call the API start faster

        self.config = config
        self._http: httpx.Client = httpx.Client(
            base_url=config.url + "/api/v1",
            headers={"Authorization": f"Bearer {config.token}", "User-Agent": f"outpost-cli/{__version__}"},
            timeout=httpx.Timeout(timeout, read=timeout + 40),
        )

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        import httpx

        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise Unreachable(f"cannot reach the control plane at {self.config.url}: {exc}") from None
        if response.status_code >= 400:
            self._raise(response)
        if response.headers.get("content-type", "").startswith("application/json"):
            return response.json()
        return response.content

    def download(self, path: str, target: Path) -> int:
        """Streams a file answer into `target` (under a temporary name until complete); returns its size."""
        import httpx

        partial = target.with_name(f".{target.name}.part")
        size = 0
        try:
            with self._http.stream("GET", path) as response:
                if response.status_code >= 400:
                    response.read()
                    self._raise(response)
                with partial.open("wb") as out:
                    for chunk in response.iter_bytes():
                        size += len(chunk)
                        out.write(chunk)
        except httpx.TransportError as exc:
            partial.unlink(missing_ok=True)
            raise Unreachable(f"cannot reach the control plane at {self.config.url}: {exc}") from None
        except BaseException:
            partial.unlink(missing_ok=True)
            raise
        partial.replace(target)
        return size

    @staticmethod
    def _raise(response: httpx.Response) -> None:
        try:
            body = response.json()
        except ValueError:
            body = {"message": response.text[:500] or response.reason_phrase}
        if not isinstance(body, dict):
            body = {"message": str(body)}
        raise ApiError(response.status_code, body)

    def get(self, path: str, **kwargs: Any) -> Any:
        return self.request("GET", path, **kwargs)

    def post(self, path: str, **kwargs: Any) -> Any:
        return self.request("POST", path, **kwargs)
