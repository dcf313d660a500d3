"""Helpers of the leaderboard tests: a real server process on 127.0.0.1, HTTP calls, predictions files."""
from __future__ import annotations

import io
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cli(*args: str, env: dict | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "reasonseg.cli", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=REPO, env={**os.environ, **(env or {})})


def get_json(url: str, timeout: float = 30) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


class ServerProcess:
    """`reasonseg leaderboard serve` as a child process; `kill()` is SIGKILL, as a crash."""

    def __init__(self, data: Path, db: str, workdir: Path, *extra: str):
        from reasonseg.leaderboard.db import Database

        Database(db).dispose()      # serve needs an existing database (add-team creates one; so does the library)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = open(workdir / f"server-{self.port}.log", "w")
        env = {**os.environ, "REASONSEG_CACHE": str(workdir / "gt-cache")}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "reasonseg.cli", "leaderboard", "serve", "--data", str(data), "--db", db,
             "--port", str(self.port), *extra], stdout=self.log, stderr=subprocess.STDOUT, cwd=REPO, env=env)
        deadline = time.monotonic() + 60
        while True:
            try:
                if get_json(self.url + "/api/health", timeout=2)[0] == 200:
                    break
            except OSError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"server did not start: {Path(self.log.name).read_text()[-2000:]}")
            time.sleep(0.1)

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(30)
        self.log.close()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(30)
        if not self.log.closed:
            self.log.close()

    def wait_status(self, submission_id: int, statuses=("done", "failed"), timeout: float = 60) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            code, body = get_json(f"{self.url}/api/submissions/{submission_id}")
            if code == 200 and body["status"] in statuses:
                return body
            if time.monotonic() > deadline:
                raise AssertionError(f"submission {submission_id} stuck: {body}")
            time.sleep(0.05)


def multipart(fields: dict[str, str], filename: str, data: bytes) -> tuple[bytes, str]:
    boundary = "testboundary7d1a"
    out = io.BytesIO()
    for name, value in fields.items():
        out.write(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode())
    out.write(f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{filename}"\r\n'
              "Content-Type: application/octet-stream\r\n\r\n".encode())
    out.write(data + f"\r\n--{boundary}--\r\n".encode())
    return out.getvalue(), f"multipart/form-data; boundary={boundary}"


def post_submission(url: str, token: str, fields: dict[str, str], filename: str, data: bytes,
                    timeout: float = 60) -> tuple[int, dict]:
    body, content_type = multipart(fields, filename, data)
    request = urllib.request.Request(url + "/api/submissions", data=body, method="POST",
                                     headers={"Authorization": f"Bearer {token}", "Content-Type": content_type})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


def zip_bytes(entries: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
    return buf.getvalue()
