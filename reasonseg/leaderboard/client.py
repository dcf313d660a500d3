"""The submission client (`reasonseg submit`): validate locally with the server's own validator, upload with
progress, wait for the score. Standard library HTTP only, so submitting needs no server-side packages.
"""
from __future__ import annotations

import http.client
import json
import os
import secrets
import tempfile
import time
import zipfile
from collections.abc import Callable
from pathlib import Path
from urllib.parse import quote, urlsplit

from ..errors import LeaderboardError
from ..sandbox import LIMITED, SandboxLimits
from ..submission import Limits, PredictionSet, read_predictions
from .intake import safe_filename

CHUNK = 256 * 1024


def parse_meta(items: list[str]) -> dict[str, str]:
    """`k=v` pairs from the command line, as form fields."""
    meta = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise LeaderboardError(f"--meta {item!r} is not key=value", hint="e.g. --meta trained_on_val=false")
        meta[key.strip()] = value
    return meta


def check_locally(path: str | os.PathLike, split: str | None, limits: SandboxLimits = LIMITED
                  ) -> PredictionSet:
    """The checks that need no ground truth, by the same reader the server uses, under the same limits by default
    (in a sandboxed child process; `SandboxLimits(trusted=True)` reads in this process)."""
    preds = read_predictions(path, Limits(sandbox=limits))
    if split and preds.split and preds.split != split:
        raise LeaderboardError(f"the file says split {preds.split!r} but you submit to {split!r}", path=str(path),
                               hint=f"pass --split {preds.split}")
    return preds


class Server:
    def __init__(self, url: str, token: str | None = None, timeout: float = 60.0):
        parts = urlsplit(url if "://" in url else f"http://{url}")
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise LeaderboardError(f"server URL {url!r} is not http(s)://HOST[:PORT]")
        self.url, self.scheme, self.host, self.port = url.rstrip("/"), parts.scheme, parts.hostname, parts.port
        self.base = parts.path.rstrip("/")
        self.token, self.timeout = token, timeout

    def _connection(self) -> http.client.HTTPConnection:
        cls = http.client.HTTPSConnection if self.scheme == "https" else http.client.HTTPConnection
        return cls(self.host, self.port, timeout=self.timeout)

    def _answer(self, response: http.client.HTTPResponse) -> dict:
        raw = response.read()
        try:
            body = json.loads(raw.decode("utf-8")) if raw else {}
        except (UnicodeDecodeError, json.JSONDecodeError):
            body = {"error": raw[:200].decode("utf-8", "replace")}
        if response.status >= 400:
            raise LeaderboardError(f"server answered {response.status}: {body.get('error', response.reason)}")
        return body

    def get(self, path: str) -> dict:
        conn = self._connection()
        try:
            conn.request("GET", self.base + path, headers={"Accept": "application/json"})
            return self._answer(conn.getresponse())
        except OSError as exc:
            raise LeaderboardError(f"cannot reach {self.url}: {exc}") from None
        finally:
            conn.close()

    def upload(self, path: Path, fields: dict[str, str], progress: Callable[[int], None] | None = None) -> dict:
        """POST a multipart form with the file streamed in chunks; `progress(n)` after each chunk sent."""
        boundary = f"reasonseg-{secrets.token_hex(12)}"
        head = b"".join(
            f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'.encode() + value.encode("utf-8")
            + b"\r\n" for name, value in fields.items())
        head += (f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{safe_filename(path.name)}"'
                 f"\r\nContent-Type: application/octet-stream\r\n\r\n").encode()
        tail = f"\r\n--{boundary}--\r\n".encode()
        size = path.stat().st_size
        conn = self._connection()
        try:
            # The split in the address too: a team out of slots for it is turned away before the body is sent.
            query = f"?split={quote(fields['split'])}" if fields.get("split") else ""
            conn.putrequest("POST", self.base + "/api/submissions" + query)
            conn.putheader("Authorization", f"Bearer {self.token}")
            conn.putheader("Content-Type", f"multipart/form-data; boundary={boundary}")
            conn.putheader("Content-Length", str(len(head) + size + len(tail)))
            conn.putheader("Accept", "application/json")
            conn.endheaders()
            try:
                conn.send(head)
                with open(path, "rb") as fh:
                    while chunk := fh.read(CHUNK):
                        conn.send(chunk)
                        if progress:
                            progress(len(chunk))
                conn.send(tail)
            except (BrokenPipeError, ConnectionResetError):
                pass   # the server refused early (too large, bad token): its answer says why
            return self._answer(conn.getresponse())
        except OSError as exc:
            raise LeaderboardError(f"upload to {self.url} failed: {exc}") from None
        finally:
            conn.close()

    def wait(self, submission_id: int, timeout: float = 600.0, poll: float = 0.5) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            sub = self.get(f"/api/submissions/{submission_id}")
            if sub["status"] in ("done", "failed"):
                return sub
            if time.monotonic() > deadline:
                raise LeaderboardError(f"submission {submission_id} is still {sub['status']} after {timeout:.0f} s",
                                       hint=f"look later at {self.url}/submissions/{submission_id}")
            time.sleep(poll)


def _zip_folder(folder: Path, tmp: Path) -> Path:
    out = tmp / f"{safe_filename(folder.name)}.zip"
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(folder.iterdir()):
            if path.is_file() and path.suffix.lower() == ".png":
                archive.write(path, path.name)
    return out


def submit(path: str | os.PathLike, server: str, token: str, split: str | None, method: str | None = None,
           meta: dict[str, str] | None = None, wait: bool = True, timeout: float = 600.0,
           progress_total: Callable[[int], Callable[[int], None]] | None = None,
           limits: SandboxLimits = LIMITED) -> dict:
    """Validate, upload and (by default) wait: returns the submission as the API describes it.

    `progress_total(total_bytes)` may return a callback that is told the bytes sent after each chunk.
    A folder of PNGs is zipped first. A scoring failure raises, with the server's message. `split=None` takes the
    file's split (test for a PNG folder or zip, which name none).
    """
    path = Path(path)
    preds = check_locally(path, split, limits)
    split = split or preds.split or "test"
    method = method or preds.method
    if not method:
        raise LeaderboardError("no method name: pass --method NAME (the file names none)", path=str(path))
    client = Server(server, token)
    fields = {"split": split, "method": method, **(meta or {})}
    with tempfile.TemporaryDirectory(prefix="reasonseg-submit-") as tmp:
        upload_path = _zip_folder(path, Path(tmp)) if path.is_dir() else path
        advance = progress_total(upload_path.stat().st_size) if progress_total else None
        created = client.upload(upload_path, fields, advance)
    if not wait:
        return created
    sub = client.wait(created["id"], timeout)
    if sub["status"] == "failed":
        raise LeaderboardError(f"submission {sub['id']} failed to score: {sub.get('error')}")
    return sub
