"""Real Git servers for tests: smart HTTP (`git http-backend` behind a small CGI bridge), `git daemon`, and an
HTTP proxy (Debian's tinyproxy), plus upstream repositories with branches, tags and authored commits.

Every server listens on 127.0.0.1 and is stopped by the fixture or context manager that started it.
"""

from __future__ import annotations

import base64
import contextlib
import gzip
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.components import free_port, need

START_TIMEOUT = 10.0
CGI_TIMEOUT = 60.0
STOP_TIMEOUT = 10.0

# Commits and pushes in tests must not read the host's git configuration.
QUIET_GIT_ENV = {
    "PATH": os.environ.get("PATH", os.defpath),
    "GIT_CONFIG_NOSYSTEM": "1",
    "GIT_CONFIG_GLOBAL": os.devnull,
    "GIT_TERMINAL_PROMPT": "0",
    "LC_ALL": "C",
}


def git(*args: str, cwd: Path | None = None, env: Mapping[str, str] | None = None) -> str:
    """Runs git for a test's own bookkeeping; returns stdout without the final newline."""
    done = subprocess.run(
        ["git", *args],
        cwd=cwd,
        env={**QUIET_GIT_ENV, **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if done.returncode != 0:
        raise AssertionError(f"git {' '.join(args)} failed ({done.returncode}): {done.stderr}")
    return done.stdout.rstrip("\n")


def wait_for_port(port: int, timeout: float = START_TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout}s") from None
            time.sleep(0.02)


# --- upstream repositories ---------------------------------------------------------------------------------------


@dataclass
class Upstream:
    """A bare repository served by the test servers, and a working clone that makes and pushes its commits."""

    name: str  # path under the servers' root, e.g. "acme/app.git"
    bare: Path
    work: Path
    shas: dict[str, str] = field(default_factory=dict)  # labels given to commits -> SHA

    def commit(
        self,
        message: str,
        *,
        author: tuple[str, str] = ("Alice Example", "alice@example.com"),
        files: Mapping[str, str] | None = None,
        label: str | None = None,
    ) -> str:
        for path, text in (files or {f"{len(self.shas)}.txt": message}).items():
            target = self.work / path
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text)
        git("add", "-A", cwd=self.work)
        name, email = author
        env = {
            "GIT_AUTHOR_NAME": name,
            "GIT_AUTHOR_EMAIL": email,
            "GIT_COMMITTER_NAME": "Committer",
            "GIT_COMMITTER_EMAIL": "committer@example.com",
        }
        git("commit", "-q", "--allow-empty", "-m", message, cwd=self.work, env=env)
        sha = self.sha("HEAD")
        self.shas[label or message] = sha
        return sha

    def sha(self, ref: str) -> str:
        return git("rev-parse", f"{ref}^{{commit}}", cwd=self.work)

    def switch(self, branch: str, *, create_from: str | None = None) -> None:
        if create_from is not None:
            git("checkout", "-q", "-b", branch, create_from, cwd=self.work)
        else:
            git("checkout", "-q", branch, cwd=self.work)

    def tag(self, name: str, ref: str = "HEAD", *, message: str | None = None) -> None:
        """A lightweight tag, or an annotated one when given a message."""
        extra = ["-a", "-m", message] if message else []
        env = {"GIT_COMMITTER_NAME": "Committer", "GIT_COMMITTER_EMAIL": "committer@example.com"}
        git("tag", *extra, name, ref, cwd=self.work, env=env)

    def push(self, *refs: str, force: bool = False) -> None:
        git("push", "-q", *(["--force"] if force else []), "origin", *(refs or ["--all"]), cwd=self.work)

    def push_all(self) -> None:
        git("push", "-q", "origin", "--all", cwd=self.work)
        git("push", "-q", "origin", "--tags", cwd=self.work)

    def force_push_rewrite(self, branch: str, message: str, **commit: object) -> str:
        """Drops the branch's last commit, commits `message` instead and force-pushes: history is rewritten."""
        self.switch(branch)
        git("reset", "-q", "--hard", "HEAD~1", cwd=self.work)
        sha = self.commit(message, **commit)  # type: ignore[arg-type]
        self.push(branch, force=True)
        return sha


def create_upstream(root: Path, name: str = "acme/app.git") -> Upstream:
    """A bare repository at root/name with an empty working clone to fill it."""
    bare = root / name
    bare.parent.mkdir(parents=True, exist_ok=True)
    git("init", "-q", "--bare", "-b", "main", str(bare))
    git("config", "http.receivepack", "true", cwd=bare)  # pushes over smart HTTP
    git("config", "uploadpack.allowFilter", "true", cwd=bare)  # partial clones, as GitHub and GitLab allow
    work = root.parent / "work" / name.removesuffix(".git")
    work.parent.mkdir(parents=True, exist_ok=True)
    git("init", "-q", "-b", "main", str(work))
    git("remote", "add", "origin", str(bare), cwd=work)
    return Upstream(name=name, bare=bare, work=work)


def standard_upstream(root: Path, name: str = "acme/app.git") -> Upstream:
    """main: three commits by two authors (tags v0.1 lightweight on the first, v1.0 annotated on the second);
    feature/login: one more commit on top of main's second; every ref pushed."""
    up = create_upstream(root, name)
    up.commit("Initial commit", files={"README.md": "# app\n"}, label="first")
    up.tag("v0.1")
    up.commit(
        'Add the login page\n\nIt has a "remember me" box.\nAnd a\ttab.',
        author=("Bob Builder", "bob@example.com"),
        files={"login.html": "<form></form>\n", "big.bin": "x" * 200_000},
        label="second",
    )
    up.tag("v1.0", message="Release 1.0")
    up.commit("Fix typo in README", files={"README.md": "# App\n"}, label="third")
    up.switch("feature/login", create_from=up.shas["second"])
    up.commit("Login: check the password", author=("Carol Coder", "carol@example.com"), label="feature")
    up.switch("main")
    up.push_all()
    return up


def copy_upstream(template: Upstream, root: Path) -> Upstream:
    """A copy of an upstream under another root: quicker than building the same history again."""
    bare, work = root / template.name, root.parent / "work" / template.name.removesuffix(".git")
    shutil.copytree(template.bare, bare)
    shutil.copytree(template.work, work)
    git("remote", "set-url", "origin", str(bare), cwd=work)
    return Upstream(name=template.name, bare=bare, work=work, shas=dict(template.shas))


# --- smart HTTP --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class HttpRequest:
    method: str
    path: str  # with the query string
    status: int
    user: str | None


class GitHttpServer:
    """`git http-backend` served as CGI by a threaded http.server, optionally behind HTTP basic auth."""

    def __init__(self, root: Path, *, auth: tuple[str, str] | None = None, port: int = 0) -> None:
        self.root = root
        self.auth = auth
        self.requested_port = port
        self.requests: list[HttpRequest] = []
        self._lock = threading.Lock()
        self._server: _Server | None = None
        self.running: set[subprocess.Popen[bytes]] = set()  # CGI processes answering right now
        self.errors: list[str] = []  # what went wrong while answering: tracebacks, rejected requests
        self.resets: dict[bytes, int] = {}  # request body fragment -> how many more such requests get a TCP reset
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        assert self._server is not None, "the server is not running"
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def repo_url(self, name: str) -> str:
        return f"{self.url}/{name}"

    def count(self, *, path_contains: str = "", user: str | None = None) -> int:
        with self._lock:
            return sum(1 for r in self.requests if path_contains in r.path and (user is None or r.user == user))

    def start(self) -> GitHttpServer:
        handler = type("BoundHandler", (_CgiHandler,), {"git_server": self})
        self._server = _Server(("127.0.0.1", self.requested_port), handler)
        self._server.owner = self
        # accept() gives up after a second: the loop can always see a shutdown request, even if a connection
        # vanished between the readiness check and the accept.
        self._server.socket.settimeout(1.0)
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stops answering; never waits more than a few seconds, and says where the loop was if it had to give up."""
        with self._lock:
            for process in self.running:
                _kill_group(process)
        server, thread = self._server, self._thread
        self._server = self._thread = None
        if server is None:
            return
        # BaseServer.shutdown() waits without a limit for the loop to notice; ask from a helper thread instead.
        stopper = threading.Thread(target=server.shutdown, name="git-http-stop", daemon=True)
        stopper.start()
        stopper.join(timeout=STOP_TIMEOUT)
        server.server_close()
        if stopper.is_alive() and thread is not None:
            frame = sys._current_frames().get(thread.ident or -1)
            where = "".join(traceback.format_stack(frame)) if frame is not None else "(no stack)"
            raise AssertionError(
                f"the Git HTTP server's loop did not stop within {STOP_TIMEOUT:g} s; it was at:\n{where}\n"
                + self.describe()
            )
        if thread is not None:
            thread.join(timeout=STOP_TIMEOUT)

    def reset_connection(self, body_contains: bytes, times: int = 1) -> None:
        """The next `times` requests whose body contains `body_contains` are answered by a TCP reset, as a flaky
        network or a restarting load balancer would."""
        with self._lock:
            self.resets[body_contains] = self.resets.get(body_contains, 0) + times

    def _should_reset(self, body: bytes) -> bool:
        with self._lock:
            for fragment, left in self.resets.items():
                if left > 0 and fragment in body:
                    self.resets[fragment] = left - 1
                    return True
            return False

    def describe(self) -> str:
        """The requests answered and anything that went wrong, for a failing test's message."""
        with self._lock:
            lines = [f"{r.method} {r.path} -> {r.status} ({r.user or 'anonymous'})" for r in self.requests]
            errors = list(self.errors)
        text = "requests the Git HTTP server answered:\n  " + ("\n  ".join(lines) or "(none)")
        return text + ("\nerrors:\n" + "\n".join(errors) if errors else "\nno errors")

    def __enter__(self) -> GitHttpServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _record(self, request: HttpRequest) -> None:
        with self._lock:
            self.requests.append(request)


class _CgiHandler(BaseHTTPRequestHandler):
    git_server: GitHttpServer

    def do_GET(self) -> None:
        self._serve()

    def do_POST(self) -> None:
        self._serve()

    def log_message(self, format: str, *args: object) -> None:  # quiet: the server keeps its own record
        pass

    def log_error(self, format: str, *args: object) -> None:  # a request http.server itself refused
        with self.git_server._lock:
            self.git_server.errors.append(f"{self.client_address}: {format % args}")

    def _serve(self) -> None:
        server = self.git_server
        user = self._authorised_user()
        if server.auth is not None and user is None:
            self._answer(401, {"WWW-Authenticate": 'Basic realm="git"', "Content-Type": "text/plain"}, b"denied\n")
            server._record(HttpRequest(self.command, self.path, 401, None))
            return
        body = self._body()
        plain = body
        if self.headers.get("Content-Encoding") == "gzip":
            with contextlib.suppress(OSError, EOFError):
                plain = gzip.decompress(body)
        if server._should_reset(plain):
            # SO_LINGER with a zero timeout: close() sends RST instead of FIN.
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.close_connection = True
            self.connection.close()
            server._record(HttpRequest(self.command, self.path, 0, user))
            return
        path, _, query = self.path.partition("?")
        env = {
            **QUIET_GIT_ENV,
            "GIT_PROJECT_ROOT": str(server.root),
            "GIT_HTTP_EXPORT_ALL": "1",
            "GATEWAY_INTERFACE": "CGI/1.1",
            "REQUEST_METHOD": self.command,
            "PATH_INFO": path,
            "QUERY_STRING": query,
            "CONTENT_TYPE": self.headers.get("Content-Type", ""),
            "CONTENT_LENGTH": str(len(body)),
            "REMOTE_ADDR": self.client_address[0],
            "HTTP_GIT_PROTOCOL": self.headers.get("Git-Protocol", ""),
        }
        if user is not None:
            env["REMOTE_USER"] = user
        if encoding := self.headers.get("Content-Encoding"):
            env["HTTP_CONTENT_ENCODING"] = encoding
        stdout = _cgi(server, body, env)
        status, headers, payload = _parse_cgi(stdout)
        self._answer(status, headers, payload)
        server._record(HttpRequest(self.command, self.path, status, user))

    def _authorised_user(self) -> str | None:
        expected = self.git_server.auth
        given = self.headers.get("Authorization", "")
        if not given.startswith("Basic "):
            return None
        try:
            user, _, password = base64.b64decode(given[6:]).decode().partition(":")
        except ValueError:
            return None
        if expected is not None and (user, password) != expected:
            return None
        return user

    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            parts: list[bytes] = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    return b"".join(parts)
                parts.append(self.rfile.read(size))
                self.rfile.readline()
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _answer(self, status: int, headers: Mapping[str, str], payload: bytes) -> None:
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)


class _Server(ThreadingHTTPServer):
    # Closing the server must not wait for a request still being answered: a stuck answer would hang the
    # fixture's teardown for ever (after pytest-timeout has already fired for the test).
    block_on_close = False
    daemon_threads = True
    owner: GitHttpServer

    def handle_error(self, request: object, client_address: object) -> None:
        with self.owner._lock:
            self.owner.errors.append(f"{client_address}: {traceback.format_exc()}")
        super().handle_error(request, client_address)  # type: ignore[arg-type]


def _cgi(server: GitHttpServer, body: bytes, env: Mapping[str, str]) -> bytes:
    """Runs `git http-backend` in a process group of its own, so a timeout or the server's stop ends it together
    with the upload-pack and pack-objects it started (subprocess.run's timeout would wait for them)."""
    process = subprocess.Popen(
        ["git", "http-backend"],
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    with server._lock:
        server.running.add(process)
    problem = ""
    try:
        stdout, stderr = process.communicate(body, timeout=CGI_TIMEOUT)
        if process.returncode != 0 or stderr.strip():
            problem = f"exit code {process.returncode}: {stderr.decode(errors='replace').strip()}"
    except subprocess.TimeoutExpired:
        _kill_group(process)
        with contextlib.suppress(subprocess.TimeoutExpired, ValueError):
            process.communicate(timeout=5)  # closes the pipes
        stdout, problem = b"", f"no answer within {CGI_TIMEOUT:g} s: killed"
    finally:
        with server._lock:
            server.running.discard(process)
            if problem:
                request = f"{env.get('REQUEST_METHOD')} {env.get('PATH_INFO')}"
                server.errors.append(f"git http-backend for {request}: {problem}")
    return stdout


def _kill_group(process: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=5)


def _parse_cgi(output: bytes) -> tuple[int, dict[str, str], bytes]:
    """Splits a CGI response into status, headers and body; `Status:` sets the status (200 when absent)."""
    found = [(i, len(sep)) for sep in (b"\r\n\r\n", b"\n\n") if (i := output.find(sep)) >= 0]
    if not found:
        return 502, {"Content-Type": "text/plain"}, b"bad CGI response\n"
    end, size = min(found)
    head, body = output[:end].decode("latin-1"), output[end + size :]
    status, headers = 200, {}
    for line in head.splitlines():
        name, _, value = line.partition(":")
        if name.lower() == "status":
            status = int(value.split()[0])
        elif name:
            headers[name.strip()] = value.strip()
    return status, headers, body


# --- git daemon ----------------------------------------------------------------------------------------------------


@contextlib.contextmanager
def git_daemon(root: Path) -> Iterator[str]:
    """`git daemon` serving every repository under root; yields its base URL `git://127.0.0.1:PORT`."""
    port = free_port()
    process = subprocess.Popen(
        [
            "git",
            "daemon",
            "--reuseaddr",
            "--listen=127.0.0.1",
            f"--port={port}",
            f"--base-path={root}",
            "--export-all",
            "--enable=receive-pack",
            "--informative-errors",
            str(root),
        ],
        env=QUIET_GIT_ENV,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        wait_for_port(port)
        yield f"git://127.0.0.1:{port}"
    finally:
        _stop_group(process)


def _stop_group(process: subprocess.Popen[bytes]) -> None:
    """Ends a server and the children it forked per connection."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=5)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=5)


# --- HTTP proxy -----------------------------------------------------------------------------------------------------


class Tinyproxy:
    """A running tinyproxy; its log shows each request it relayed."""

    def __init__(self, port: int, log: Path) -> None:
        self.port = port
        self.log = log

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def requests(self) -> list[str]:
        """The request lines the proxy relayed, e.g. `GET http://127.0.0.1:1234/acme/app.git/info/refs?... HTTP/1.1`."""
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return [line.split("): ", 1)[1] for line in text.splitlines() if "Request (file descriptor" in line]


@contextlib.contextmanager
def tinyproxy(folder: Path) -> Iterator[Tinyproxy]:
    """tinyproxy in the foreground with its own configuration on a free port (need(): skipped if not installed)."""
    binary = shutil.which("tinyproxy") or next(
        (p for p in ("/usr/bin/tinyproxy", "/usr/sbin/tinyproxy") if os.access(p, os.X_OK)), None
    )
    need(binary is not None, "tinyproxy is not installed (apt-get install tinyproxy)")
    assert binary is not None
    folder.mkdir(parents=True, exist_ok=True)
    port, log = free_port(), folder / "tinyproxy.log"
    config = folder / "tinyproxy.conf"
    config.write_text(
        f'Port {port}\nListen 127.0.0.1\nTimeout 30\nLogFile "{log}"\nLogLevel Info\nMaxClients 20\nAllow 127.0.0.1\n'
    )
    process = subprocess.Popen(
        [binary, "-d", "-c", str(config)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        wait_for_port(port)
        yield Tinyproxy(port, log)
    finally:
        _stop_group(process)


# --- fixtures ------------------------------------------------------------------------------------------------------


@pytest.fixture
def git_root(tmp_path: Path) -> Path:
    """The folder the servers export; repositories live at git_root/<owner>/<name>.git."""
    root = tmp_path / "srv"
    root.mkdir()
    return root


@pytest.fixture(scope="session")
def upstream_template(tmp_path_factory: pytest.TempPathFactory) -> Upstream:
    return standard_upstream(tmp_path_factory.mktemp("template") / "srv")


@pytest.fixture
def upstream(git_root: Path, upstream_template: Upstream) -> Upstream:
    """The standard upstream at git_root/acme/app.git, a fresh copy for each test."""
    return copy_upstream(upstream_template, git_root)


@pytest.fixture
def http_git(git_root: Path) -> Iterator[GitHttpServer]:
    with GitHttpServer(git_root) as server:
        yield server


@pytest.fixture
def http_git_auth(git_root: Path) -> Iterator[GitHttpServer]:
    """Smart HTTP that wants user `robot` with password `s3cr3t-Pa55word`."""
    with GitHttpServer(git_root, auth=("robot", "s3cr3t-Pa55word")) as server:
        yield server


@pytest.fixture
def daemon_url(git_root: Path) -> Iterator[str]:
    with git_daemon(git_root) as url:
        yield url


@pytest.fixture
def proxy(tmp_path: Path) -> Iterator[Tinyproxy]:
    with tinyproxy(tmp_path / "tinyproxy") as running:
        yield running
