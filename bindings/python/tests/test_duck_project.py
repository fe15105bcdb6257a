"""A whole Duck 2.3.2 project, made by Duck's own `makeproject`, served over HTTP by Duck's
own server on a loopback port, with duckcache in place of duck.utils.caching (and its
encrypted submodule): sessions live in the project's default SESSION_STORAGE
(KeyAsFolderCache) and survive a restart of the server."""

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

LAUNCHER = """
import os, sys
import duckcache, duckcache.encrypted
sys.modules["duck.utils.caching"] = duckcache
sys.modules["duck.utils.caching.encrypted"] = duckcache.encrypted
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from duck.app import App
App(port=int(sys.argv[1]), addr="127.0.0.1", domain="localhost").run()
"""

VIEWS = """

from duck.http.response import HttpResponse


def count(request):
    n = request.session.get("n", 0) + 1
    request.session["n"] = n
    import duck.utils.caching as caching
    return HttpResponse(f"{n} {caching.__name__}")


urlpatterns = [path("/count", count, "count", ["GET"])]
"""


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """Duck's server for `project` on a free loopback port, in its own process group
    (Duck's reloader starts processes of its own)."""

    def __init__(self, project, env):
        self.port = free_port()
        self.log = open(project / f"server-{self.port}.log", "w")
        self.proc = subprocess.Popen(
            [sys.executable, "run.py", str(self.port)], cwd=project, env=env,
            stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        deadline = time.monotonic() + 120
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise AssertionError(f"Duck's server did not start: {self.output()}")
                time.sleep(0.2)

    def get(self, path, cookie=None):
        """(body, session cookie set by the response or None)."""
        request = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}")
        request.add_header("Host", f"localhost:{self.port}")
        if cookie:
            request.add_header("Cookie", cookie)
        with urllib.request.urlopen(request, timeout=30) as response:
            body = response.read().decode()
            set_cookie = response.headers.get("Set-Cookie")
        return body, set_cookie.split(";")[0] if set_cookie else None

    def output(self):
        self.log.flush()
        return open(self.log.name).read()[-3000:]

    def stop(self):
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                break
            try:
                self.proc.wait(timeout=15)
                break
            except subprocess.TimeoutExpired:
                continue
        self.log.close()


def test_a_duck_project_serves_sessions_over_http_with_duckcache_in_place(tmp_path):
    try:
        import asgiref  # noqa: F401  (one of Duck's dependencies)
    except ImportError:
        pytest.skip("duckframework's dependencies are not installed")
    env = dict(os.environ, DUCK_SETTINGS_MODULE="web.settings")
    env.pop("LD_PRELOAD", None)  # Duck's C extensions keep memory past exit (see test_inmemory)
    made = subprocess.run([sys.executable, "-m", "duck", "makeproject", "demo", "-d", str(tmp_path)],
                          capture_output=True, text=True, timeout=300, env=env)
    project = tmp_path / "demo"
    assert (project / "web" / "settings.py").exists(), made.stdout[-2000:] + made.stderr[-2000:]
    assert 'SESSION_STORAGE: str = "duck.utils.caching.KeyAsFolderCache"' in (
        project / "web" / "settings.py").read_text()
    with open(project / "web" / "urls.py", "a") as urls:
        urls.write(VIEWS)
    (project / "run.py").write_text(LAUNCHER)

    server = Server(project, env)
    try:
        body, cookie = server.get("/count")
        assert body == "1 duckcache" and cookie and cookie.startswith("session_id="), server.output()
        assert server.get("/count", cookie)[0] == "2 duckcache"
        assert server.get("/count", cookie)[0] == "3 duckcache"
        assert server.get("/count")[0] == "1 duckcache", "a client without the cookie starts over"
    finally:
        server.stop()
    # The sessions are in duckcache's key folders (a value and a meta file per key).
    session_dirs = [p.parent for p in project.rglob("meta") if (p.parent / "value").exists()]
    assert session_dirs, "no session was stored by duckcache's KeyAsFolderCache"

    server = Server(project, env)  # a restart: the session is read back from disk
    try:
        assert server.get("/count", cookie)[0] == "4 duckcache", server.output()
    finally:
        server.stop()
