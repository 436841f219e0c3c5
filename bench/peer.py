"""nginx, the peer HAProxy is measured against, run by the benchmark on the host.

Debian's ``nginx-light``, started with its own config, pid file, logs and
temp paths in a temporary directory (``nginx -p DIR -c DIR/nginx.conf``),
never as a system service, listening on 127.0.0.1 only, and always stopped
by the context manager that started it. Configured as HAProxy is: one
worker (HAProxy runs one thread), no access log, keep-alive connections to
the backends (HTTP/1.1, ``keepalive 32``).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

PORT = 8090
URL = f"http://127.0.0.1:{PORT}/"
TEMP_PATHS = ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")

CONFIG = """\
worker_processes 1;
daemon off;
pid {dir}/nginx.pid;
error_log {dir}/error.log notice;
events {{
    worker_connections 4096;
}}
http {{
    access_log off;
{temp_paths}
    upstream backends {{
{servers}
        keepalive 32;
    }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://backends;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            # What HAProxy's frontend adds (templates/haproxy.cfg.j2): the same work.
            proxy_set_header Host $host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Port $server_port;
            proxy_set_header X-Forwarded-Proto $scheme;
        }}
    }}
}}
"""


class NginxError(RuntimeError):
    """nginx is missing, did not start, or refused a command."""


def missing() -> str | None:
    """Why nginx cannot run here, or None."""
    if not shutil.which("nginx"):
        return "nginx is not installed: apt-get install nginx-light"
    return None


def config(directory: Path, backends: list[str], port: int = PORT) -> str:
    """nginx.conf proxying 127.0.0.1:``port`` to ``backends`` (``address:port`` each)."""
    if not backends:
        raise NginxError("no backend to proxy to")
    temp_paths = "\n".join(f"    {name}_temp_path {directory}/{name};" for name in TEMP_PATHS)
    servers = "\n".join(f"        server {backend};" for backend in backends)
    return CONFIG.format(dir=directory, temp_paths=temp_paths, servers=servers, port=port)


def answers(port: int) -> bool:
    with suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
        return True
    return False


class Nginx:
    """One nginx master (``daemon off``, a child of this process) and its directory."""

    def __init__(self, directory: Path, port: int = PORT) -> None:
        self.directory = directory
        self.port = port
        self.process: subprocess.Popen[bytes] | None = None

    def _argv(self, *extra: str) -> list[str]:
        d = self.directory
        return ["nginx", "-p", f"{d}/", "-c", f"{d}/nginx.conf", "-e", f"{d}/error.log", *extra]

    def errors(self) -> str:
        """The tail of nginx's error log (what it said when it failed)."""
        with suppress(OSError):
            return "\n".join((self.directory / "error.log").read_text().splitlines()[-5:])
        return ""

    def configure(self, backends: list[str]) -> None:
        """Write nginx.conf for ``backends`` and check it (``nginx -t``)."""
        (self.directory / "nginx.conf").write_text(config(self.directory, backends, self.port))
        result = subprocess.run(
            self._argv("-t"), check=False, capture_output=True, text=True, timeout=30
        )
        if result.returncode != 0:
            raise NginxError(f"nginx -t: {result.stderr.strip()}")

    def start(self, timeout: float = 10) -> None:
        if answers(self.port):
            raise NginxError(f"127.0.0.1:{self.port} is already in use")
        self.process = subprocess.Popen(
            self._argv(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise NginxError(f"nginx exited {self.process.returncode}: {self.errors()}")
            if answers(self.port):
                return
            time.sleep(0.05)
        raise NginxError(f"nginx did not answer on 127.0.0.1:{self.port} in {timeout} s")

    def reload(self) -> None:
        """``nginx -s reload`` with this instance's -p/-c (its pid file)."""
        result = subprocess.run(
            self._argv("-s", "reload"), check=False, capture_output=True, timeout=30
        )
        if result.returncode != 0:
            raise NginxError(f"nginx -s reload: {result.stderr.decode(errors='replace')}")

    def reloads_done(self) -> int:
        """Reloads the master has carried out (its ": reconfiguring" lines in the error log)."""
        with suppress(OSError):
            return (self.directory / "error.log").read_text().count(": reconfiguring\n")
        return 0

    def cpu_s(self) -> float:
        """CPU seconds of the master and its workers so far (utime + stime of /proc)."""
        if self.process is None:
            return 0.0
        pids = [self.process.pid]
        with suppress(OSError):
            children = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children")
            pids += [int(pid) for pid in children.read_text().split()]
        ticks = 0
        for pid in pids:
            with suppress(OSError, IndexError, ValueError):
                fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
                ticks += int(fields[11]) + int(fields[12])  # utime, stime
        return ticks / os.sysconf("SC_CLK_TCK")

    def stop(self, timeout: float = 10) -> None:
        """Fast shutdown (SIGTERM to the master, which stops its workers); SIGKILL if stuck."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=timeout)


@contextmanager
def running(backends: list[str], port: int = PORT) -> Iterator[Nginx]:
    """nginx proxying 127.0.0.1:``port`` to ``backends``, stopped and removed on exit."""
    reason = missing()
    if reason:
        raise NginxError(reason)
    with tempfile.TemporaryDirectory(prefix="bench-nginx-") as name:
        directory = Path(name)
        directory.chmod(0o755)  # the workers run as nobody when the master is root
        nginx = Nginx(directory, port)
        try:
            nginx.configure(backends)
            nginx.start()
            yield nginx
        finally:
            nginx.stop()


def reload_paced(nginx: Nginx, count: int, interval: float = 0.2) -> tuple[int, int, float]:
    """``count`` reloads ``interval`` s apart (60 s at most): sent, done, seconds taken."""
    before, sent, start = nginx.reloads_done(), 0, time.monotonic()
    due = start
    while sent < count and time.monotonic() - start < 60:
        time.sleep(max(0.0, due - time.monotonic()))
        nginx.reload()
        sent += 1
        due += interval
    elapsed = time.monotonic() - start
    time.sleep(1)  # the last reload's workers take over
    return sent, nginx.reloads_done() - before, elapsed
