"""An offline stand-in for an OpenAI-compatible chat-completions server, on 127.0.0.1.

It is NOT a language model: it answers the reasonseg prompts with fixed rule-based rewordings, so that the demo,
the tests and the benchmark exercise the real HTTP path and the real `openai` client without a network or a key.
Faults can be injected (HTTP errors with Retry-After, slow replies, unreadable bodies, bad or empty content,
dropped connections) and every request is logged, so a test can check exactly what a run sent.
"""
from __future__ import annotations

import hashlib
import json
import math
import re
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

STANDIN_MODEL = "offline-stand-in"
_INSTRUCTION = re.compile(r"^Instruction:\s*(.*)$", re.MULTILINE)
_COUNT = re.compile(r"^Number of rephrasings:\s*(\d+)\s*$", re.MULTILINE)
_TARGET = re.compile(r"^Target:\s*(.*)$", re.MULTILINE)


@dataclass
class Fault:
    """What to do instead of a normal reply, `times` times, to requests whose instruction contains `match`.

    kind: an HTTP status ("429", "500", "503", "400", "401", ...), "slow" (wait `delay_s`, then reply),
    "hold" (wait until `release()` is called, at most `delay_s`, then reply: a test can act while the call is in
    flight), "bad_body" (a 200 with truncated JSON), "raw_body" (a 200 whose whole body is `content`),
    "bad_content" (prose instead of JSON), "empty" (empty content), "content" (reply with `content` verbatim),
    "length" (finish_reason "length"), "drop" (close the connection).
    """

    kind: str
    times: int = 1
    match: str | None = None
    retry_after: str | None = None
    delay_s: float = 5.0
    content: str = ""


@dataclass
class LoggedRequest:
    index: int
    at: float
    task: str
    text: str
    n: int | None
    fault: str | None
    status: int
    body_sha256: str
    body: dict = field(repr=False)


def _strip_end(text: str) -> str:
    return text.strip().rstrip(".?!").strip()


def _lower_first(text: str) -> str:
    return text[:1].lower() + text[1:]


def rephrase_rules(text: str, n: int) -> list[str]:
    """Fixed rewordings: noun phrases stay noun phrases, sentences stay sentences, none repeats the input."""
    body = _strip_end(text)
    words = body.split()
    if len(words) <= 6 and not text.strip().endswith("?"):
        core = " ".join(words[1:]) if words and words[0].lower() in ("the", "a", "an") else body
        pool = [f"the {core}", f"that {core}", f"this {core}", f"the {core} here", f"the {core} in the picture",
                f"the one {core}", f"the visible {core}"]
    else:
        end = "?" if text.strip().endswith("?") else "."
        low = _lower_first(body)
        pool = [f"In this picture, {low}{end}", f"Looking at the image, {low}{end}",
                f"Here is my request: {low}{end}", f"Please help with this: {low}{end}",
                f"Take a careful look at the scene: {low}{end}", f"About this photo: {low}{end}"]
    original = " ".join(text.lower().split())
    return [p for p in pool if " ".join(p.lower().split()) != original][:max(n, 0)]


def explain_rule(text: str, target: str) -> str:
    named = target if target and not target.startswith("(") else "object"
    return f"The {named} is the answer because it is what the instruction describes: {_lower_first(_strip_end(text))}."


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out in two writes: Nagle would add ~40 ms per reply
    server: _Server

    def log_message(self, format, *args):  # noqa: A002 - quiet: the stand-in keeps its own log
        pass

    def do_GET(self):  # noqa: N802
        if self.path.rstrip("/").endswith("/models"):
            self._json(200, {"object": "list", "data": [{"id": STANDIN_MODEL, "object": "model"}]})
        else:
            self._json(404, {"error": {"message": f"no route {self.path}", "type": "not_found"}})

    def do_POST(self):  # noqa: N802
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length)
        if not self.path.rstrip("/").endswith("/chat/completions"):
            self._json(404, {"error": {"message": f"no route {self.path}", "type": "not_found"}})
            return
        try:
            body = json.loads(raw)
            messages = body["messages"]
            user = next(m["content"] for m in reversed(messages) if m.get("role") == "user")
        except (ValueError, KeyError, TypeError, StopIteration):
            self._json(400, {"error": {"message": "body must be a chat-completions request", "type": "invalid"}})
            return
        self.server.standin.handle(self, body, user, hashlib.sha256(raw).hexdigest())

    def _json(self, status: int, payload: dict, headers: dict | None = None) -> None:
        data = json.dumps(payload).encode("utf-8")
        self._send(status, data, headers)

    def _send(self, status: int, data: bytes, headers: dict | None = None) -> None:
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (a timeout test): nothing to send to


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    standin: StandInServer


class StandInServer:
    """`with StandInServer() as server: ... server.url ...` — a local chat-completions endpoint in a thread."""

    def __init__(self, *, latency_s: float = 0.0, faults: list[Fault] | None = None, api_key: str | None = None,
                 log_path: Path | None = None, port: int = 0):
        self.latency_s = latency_s
        self.faults = list(faults or [])
        self.api_key = api_key
        self.log_path = Path(log_path) if log_path else None
        self.log: list[LoggedRequest] = []
        self._lock = threading.Lock()
        self._released = threading.Event()
        self._httpd = _Server(("127.0.0.1", port), _Handler)
        self._httpd.standin = self
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}/v1"

    def start(self) -> StandInServer:
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="standin-openai", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> StandInServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def add_fault(self, fault: Fault) -> None:
        with self._lock:
            self.faults.append(fault)

    def release(self) -> None:
        """Let the requests held by "hold" faults (and any later ones) be answered."""
        self._released.set()

    def requests_for(self, text: str) -> list[LoggedRequest]:
        with self._lock:
            return [r for r in self.log if r.text == text]

    # ------------------------------------------------------------------------------------------- replies

    def _take_fault(self, text: str) -> Fault | None:
        with self._lock:
            for fault in self.faults:
                if fault.times > 0 and (fault.match is None or fault.match in text):
                    fault.times -= 1
                    return fault
        return None

    def _record(self, body: dict, task: str, text: str, n: int | None, fault: str | None, status: int,
                digest: str) -> None:
        with self._lock:
            entry = LoggedRequest(len(self.log), time.time(), task, text, n, fault, status, digest, body)
            self.log.append(entry)
            if self.log_path is not None:
                with open(self.log_path, "a", encoding="utf-8") as fh:
                    fh.write(json.dumps({k: v for k, v in entry.__dict__.items() if k != "body"}) + "\n")

    def handle(self, handler: _Handler, body: dict, user: str, digest: str) -> None:
        instruction = _INSTRUCTION.search(user)
        text = instruction.group(1).strip() if instruction else user.strip().splitlines()[-1]
        count = _COUNT.search(user)
        task = "rephrase" if count else "explain"
        n = int(count.group(1)) if count else None
        if self.api_key is not None and handler.headers.get("Authorization") != f"Bearer {self.api_key}":
            self._record(body, task, text, n, "auth", 401, digest)
            handler._json(401, {"error": {"message": "Incorrect API key provided.", "type": "invalid_request_error",
                                          "code": "invalid_api_key"}})
            return
        fault = self._take_fault(text)
        kind = fault.kind if fault else None
        if kind == "drop":
            self._record(body, task, text, n, kind, 0, digest)
            handler.close_connection = True
            return
        if kind and kind.isdigit():
            status = int(kind)
            self._record(body, task, text, n, kind, status, digest)
            headers = {"Retry-After": fault.retry_after} if fault.retry_after is not None else {}
            handler._json(status, {"error": {"message": f"injected fault: HTTP {status}", "type": "server_error"}},
                          headers)
            return
        self._record(body, task, text, n, kind, 200, digest)  # logged on arrival: a slow reply counts at once
        if kind == "hold":
            self._released.wait(fault.delay_s)
        else:
            time.sleep(fault.delay_s if kind == "slow" else self.latency_s)
        if kind == "raw_body":
            handler._send(200, fault.content.encode("utf-8"))
            return
        if kind == "bad_body":
            handler._send(200, b'{"id": "chatcmpl-broken", "object": "chat.completion", "choices": [{"ind')
            return
        if task == "rephrase":
            content = json.dumps({"rephrasings": rephrase_rules(text, n or 0)})
        else:
            target = _TARGET.search(user)
            content = json.dumps({"explanation": explain_rule(text, target.group(1).strip() if target else "")})
        content = {"bad_content": "Sure! Here are some rephrasings: 1. the thing 2. the other thing",
                   "empty": "", "content": fault.content if fault else ""}.get(kind, content)
        prompt_tokens = sum(math.ceil(len(str(m.get("content", ""))) / 4) + 4 for m in body["messages"]) + 3
        with self._lock:
            number = len(self.log)
        handler._json(200, {
            "id": f"chatcmpl-standin-{number}", "object": "chat.completion", "created": int(time.time()),
            "model": body.get("model", STANDIN_MODEL),
            "choices": [{"index": 0, "finish_reason": "length" if kind == "length" else "stop",
                         "message": {"role": "assistant", "content": content}}],
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": math.ceil(len(content) / 4),
                      "total_tokens": prompt_tokens + math.ceil(len(content) / 4)},
        }, {"x-request-id": f"req_standin_{number}"})


def main(argv: list[str] | None = None) -> None:
    """`python -m reasonseg.builders.rephrase.standin [--port P] [--latency S]`: serve until interrupted,
    after printing the base URL on the first line of stdout (for a benchmark or a trial of the CLI)."""
    import argparse
    import signal
    import sys

    parser = argparse.ArgumentParser(description="offline stand-in OpenAI-compatible server (not an LLM)")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--latency", type=float, default=0.0, help="seconds to wait before each reply")
    args = parser.parse_args(argv)
    server = StandInServer(latency_s=args.latency, port=args.port).start()
    print(server.url, flush=True)
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    try:
        done.wait()
    except KeyboardInterrupt:
        pass
    server.stop()
    sys.exit(0)


if __name__ == "__main__":
    main()
