"""The run: plan the items, answer each from the cache or the server (concurrently, with retries, within the
budget), write the results into the release and record the run in its manifest.

Order of writes per item: the reply is committed to the ledger as it arrives and to the cache before the sample
file is rewritten, and each rewrite is journaled (with the checksum the file will have) before its rename; so a
kill anywhere is healed by the next run from the ledger and the journal, without a new call (docs/rephrase.md).
"""
from __future__ import annotations

import json
import os
import random
import threading
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ...dataset import read_manifest
from .apply import (
    add_rephrasings,
    recorded_runs,
    relative,
    remove_stale_temp_files,
    update_manifest,
    write_explanatory,
    written_as_journaled,
)
from .cache import ResponseCache, default_cache_path, now_iso
from .checks import CheckResult, check_explanation, check_rephrasings
from .client import ChatClient, RephraseError, RequestRefused, RetryPolicy, TransientError
from .plan import Item, Plan, build_plan
from .pricing import Price, estimate_tokens, load_prices
from .prompts import load_template

DEFAULT_ENDPOINT = "https://api.openai.com/v1"


@dataclass(frozen=True)
class RephraseConfig:
    task: str = "rephrase"
    split: str = "train"
    n: int = 4
    model: str = "gpt-3.5-turbo"
    base_url: str | None = None
    api_key: str | None = None
    concurrency: int = 4
    temperature: float = 0.7
    seed: int | None = 0
    prompt: Path | None = None
    cache: Path | None = None
    prices: Path | None = None
    budget_usd: float | None = None
    dry_run: bool = False
    allow_eval_splits: bool = False
    timeout_s: float = 60.0
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    check_retries: int = 2
    retry_rejected: bool = False
    limit: int | None = None


@dataclass
class RunReport:
    task: str
    split: str
    model: str
    prompt_version: str
    dry_run: bool
    cache: str
    samples: int = 0
    items: int = 0  # samples that needed a reply
    skipped: dict[str, int] = field(default_factory=dict)
    cached: int = 0  # items answered from the cache
    to_call: int = 0  # dry run: items a real run would send
    ok: int = 0
    rejected: int = 0
    failed: int = 0
    not_done: int = 0  # left for a later run (budget, Ctrl-C, a fatal error)
    attempts: int = 0  # HTTP requests sent
    retries: int = 0
    texts_added: int = 0
    duplicates: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    price_known: bool = True
    status: str = "complete"  # complete | budget | interrupted | failed | dry-run
    files_written: int = 0
    manifest_written: bool = False
    run_id: str | None = None
    problems: list[tuple[str, str]] = field(default_factory=list)  # (item, reason) of rejected and failed items


@dataclass
class _Outcome:
    item: Item
    status: str  # ok | rejected | failed | budget | stopped
    outputs: tuple[str, ...] = ()
    reason: str | None = None
    attempts: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0


class Budget:
    """Spending so far plus the worst case of the calls in flight may never pass the limit."""

    def __init__(self, limit_usd: float | None):
        self.limit = limit_usd
        self.spent = 0.0
        self._reserved = 0.0
        self._lock = threading.Lock()
        self.refused = threading.Event()

    def reserve(self, worst_case: float) -> bool:
        with self._lock:
            if self.limit is not None and self.spent + self._reserved + worst_case > self.limit:
                self.refused.set()
                return False
            self._reserved += worst_case
            return True

    def settle(self, reserved: float, actual: float) -> None:
        with self._lock:
            self._reserved -= reserved
            self.spent += actual


def _config_record(config: RephraseConfig) -> dict:
    record = asdict(config)
    record.pop("api_key", None)  # never stored
    return {k: (str(v) if isinstance(v, Path) else v) for k, v in record.items()}


def _check(item: Item, task: str, n: int, reply_content: str | None, finish_reason: str | None) -> CheckResult:
    if task == "rephrase":
        return check_rephrasings(reply_content, item.text, is_sentence=item.is_sentence, n=n, classes=item.classes,
                                 finish_reason=finish_reason)
    return check_explanation(reply_content, item.text, finish_reason=finish_reason)


class _Runner:
    def __init__(self, config: RephraseConfig, cache: ResponseCache, client: ChatClient, price: Price | None,
                 prompt_version: str, run_id: str, stop: threading.Event, budget: Budget):
        self.config, self.cache, self.client, self.price = config, cache, client, price
        self.prompt_version, self.run_id, self.stop, self.budget = prompt_version, run_id, stop, budget
        self.attempts_of_raised = 0  # requests sent by answers that ended in an exception (no outcome to count)
        self._lock = threading.Lock()

    def worst_case(self, item: Item) -> float:
        if self.price is None:
            return 0.0
        # 25% over the prompt estimate: the byte-based estimate is not a tokenizer.
        return self.price.cost(int(item.prompt_tokens_estimate * 1.25) + 1, item.max_tokens)

    def answer(self, item: Item) -> _Outcome:
        """Ask the server until the reply passes the checks, the retries run out, or the run must stop.

        The replies already paid for (by any earlier run, killed or not) come first, from the ledger: one that
        passes is used without a request, and each that failed counts as a check retry spent, so no request that
        already got a failing reply is sent again with the same seed.
        """
        config, policy = self.config, self.config.retry
        rng = random.Random(f"{item.key}:{os.getpid()}:{time.monotonic_ns()}")
        outcome = _Outcome(item, "failed")
        transient = checks_failed = 0
        last: tuple[CheckResult, str | None, str | None] | None = None
        for paid in self.cache.paid_replies(item.key):
            result = self._checked(item, paid["content"], paid["finish_reason"])
            if result.ok:
                return self._settle(outcome, result, paid["content"], paid["request_id"])
            checks_failed += 1
            last = (result, paid["content"], paid["request_id"])
        cached = self.cache.get(item.key)
        # --retry-rejected opens a new round of tries for an item cached as rejected, with new seeds.
        round_start = checks_failed if cached is not None and cached.status == "rejected" else 0
        while True:
            if last is not None and checks_failed - round_start > config.check_retries:
                return self._settle(outcome, *last)
            if self.stop.is_set():
                outcome.status = "stopped"
                return outcome
            worst = self.worst_case(item)
            if not self.budget.reserve(worst):
                outcome.status, outcome.reason = "budget", "the next call could pass --budget-usd"
                return outcome
            outcome.attempts += 1
            call_id = self.cache.call_started(self.run_id, item.key, item.name, outcome.attempts)
            started = time.perf_counter()
            # A reply that failed the checks is asked again with another seed: a seeded server repeats itself.
            seed = None if config.seed is None else config.seed + checks_failed
            try:
                reply = self.client.complete(model=config.model, messages=item.messages,
                                             temperature=config.temperature, seed=seed, max_tokens=item.max_tokens)
            except TransientError as exc:
                self.budget.settle(worst, 0.0)
                self.cache.call_finished(call_id, outcome=exc.kind, latency_s=time.perf_counter() - started,
                                         request_id=exc.request_id, detail=exc.detail)
                transient += 1
                if exc.retry_after is not None and exc.retry_after > policy.max_retry_after_s:
                    outcome.reason = f"{exc.kind}: the server asks to wait {exc.retry_after:.0f} s"
                    return outcome
                if transient >= policy.max_attempts:
                    outcome.reason = f"{exc.kind} after {transient} attempts: {exc.detail}"
                    return outcome
                if self.stop.wait(policy.delay(transient, exc.retry_after, rng)):
                    outcome.status = "stopped"
                    return outcome
                continue
            except RequestRefused as exc:
                self.budget.settle(worst, 0.0)
                self.cache.call_finished(call_id, outcome=exc.kind, latency_s=time.perf_counter() - started,
                                         request_id=exc.request_id, detail=exc.detail)
                outcome.reason = f"{exc.kind}: {exc.detail}"
                return outcome
            except BaseException as exc:
                self.budget.settle(worst, 0.0)
                self.cache.call_finished(call_id, outcome="refused" if isinstance(exc, RephraseError) else "error",
                                         latency_s=time.perf_counter() - started, detail=str(exc))
                with self._lock:
                    self.attempts_of_raised += outcome.attempts
                raise
            latency = time.perf_counter() - started
            content = reply.content if isinstance(reply.content, str) else None
            prompt_tokens = reply.prompt_tokens if reply.prompt_tokens is not None else item.prompt_tokens_estimate
            completion_tokens = (reply.completion_tokens if reply.completion_tokens is not None
                                 else estimate_tokens(content or ""))
            cost = self.price.cost(prompt_tokens, completion_tokens) if self.price else 0.0
            self.budget.settle(worst, cost)
            outcome.prompt_tokens += prompt_tokens
            outcome.completion_tokens += completion_tokens
            outcome.cost_usd += cost
            result = self._checked(item, content, reply.finish_reason)
            self.cache.call_finished(call_id, outcome="ok" if result.ok else "check_failed", latency_s=latency,
                                     request_id=reply.request_id, prompt_tokens=prompt_tokens,
                                     completion_tokens=completion_tokens, cost_usd=cost, detail=result.error,
                                     content=content, finish_reason=reply.finish_reason)
            if result.ok:
                return self._settle(outcome, result, content, reply.request_id)
            checks_failed += 1
            last = (result, content, reply.request_id)

    def _checked(self, item: Item, content: str | None, finish_reason: str | None) -> CheckResult:
        """The checks of a reply; a reply they cannot handle is a failed check, never an exception."""
        try:
            return _check(item, self.config.task, self.config.n, content, finish_reason)
        except Exception as exc:  # noqa: BLE001 - whatever a hostile reply triggers, it is a failed attempt
            return CheckResult(error=f"reply could not be checked: {type(exc).__name__}")

    def _settle(self, outcome: _Outcome, result: CheckResult, content: str | None,
                request_id: str | None) -> _Outcome:
        """Cache the item's final reply (accepted, or rejected after its retries) and fill in the outcome."""
        item, config = outcome.item, self.config
        status = "ok" if result.ok else "rejected"
        self.cache.put(key=item.key, task=config.task, model=config.model, prompt_version=self.prompt_version,
                       temperature=config.temperature, seed=config.seed,
                       n=config.n if config.task == "rephrase" else 1, input_text=item.text,
                       request={"messages": item.messages, "max_tokens": item.max_tokens,
                                "response_format": {"type": "json_object"}},
                       status=status, outputs=result.accepted,
                       dropped=[{"text": r.text, "reason": r.reason} for r in result.dropped],
                       reason=result.error, content=content, request_id=request_id,
                       prompt_tokens=outcome.prompt_tokens, completion_tokens=outcome.completion_tokens,
                       cost_usd=outcome.cost_usd, attempts=outcome.attempts, run_id=self.run_id)
        outcome.status, outcome.outputs, outcome.reason = status, result.accepted, result.error
        return outcome


def _open_for_dry_run(path: Path) -> ResponseCache | None:
    return ResponseCache(path, readonly=True) if path.is_file() else None


def run_rephrase(root: str | os.PathLike, config: RephraseConfig, *, stop: threading.Event | None = None,
                 on_progress: Callable[[int, int], None] | None = None) -> RunReport:
    """Rephrase (or explain) the samples of a split of the release at `root`; see docs/rephrase.md."""
    root = Path(root)
    if config.concurrency < 1:
        raise RephraseError("--concurrency must be at least 1")
    if config.budget_usd is not None and config.budget_usd < 0:
        raise RephraseError("--budget-usd must not be negative")
    template = load_template(config.task, config.prompt)
    prices = load_prices(config.prices)
    price = prices.lookup(config.model)
    plan = build_plan(root, task=config.task, split=config.split, n=config.n, model=config.model,
                      template=template, temperature=config.temperature, seed=config.seed,
                      allow_eval_splits=config.allow_eval_splits, limit=config.limit)
    cache_path = Path(config.cache) if config.cache else default_cache_path()
    report = RunReport(config.task, config.split, config.model, template.identity, config.dry_run, str(cache_path),
                       samples=plan.samples, items=len(plan.items), skipped=dict(plan.skipped),
                       price_known=price is not None)
    if config.dry_run:
        return _dry_run(plan, config, cache_path, price, report)
    if not config.api_key:
        raise RephraseError("OPENAI_API_KEY is not set",
                            hint="export OPENAI_API_KEY=...; a local server that ignores keys accepts any value; "
                                 "--dry-run needs none")
    if config.budget_usd is not None and price is None:
        raise RephraseError(f"no price is known for model {config.model!r}, so --budget-usd cannot be enforced",
                            hint="pass --prices FILE with its input_per_1m and output_per_1m")
    stop = stop or threading.Event()
    remove_stale_temp_files(sorted({item.json_path.parent for item in plan.items}) + [root, root / "explanatory"])
    progress = _Progress(len(plan.items), on_progress)
    with ResponseCache(cache_path) as cache:
        run_id = cache.start_run(_config_record(config) | {"root": str(root), "prompt_version": template.identity})
        report.run_id = run_id
        writer = _Writer(root, config, plan, report, _journal(cache, run_id, root))
        failure: BaseException | None = None
        client = None
        try:
            # Samples that share a request (the same text[0], form and classes) share one call and one cache row.
            to_call: list[Item] = []
            sharing: dict[str, list[Item]] = {}
            for item in plan.items:
                hit = cache.get(item.key)
                if hit is None or (hit.status == "rejected" and config.retry_rejected):
                    if item.key in sharing:
                        sharing[item.key].append(item)
                    else:
                        sharing[item.key] = []
                        to_call.append(item)
                    continue
                report.cached += 1
                writer.apply(item, hit.status, hit.outputs, hit.reason)
                progress.advance()
            if to_call:
                client = ChatClient(api_key=config.api_key, base_url=config.base_url, timeout_s=config.timeout_s)
                budget = Budget(config.budget_usd)
                runner = _Runner(config, cache, client, price, template.identity, run_id, stop, budget)
                try:
                    _execute(to_call, sharing, config, runner, writer, report, stop, budget, progress)
                finally:
                    report.attempts += runner.attempts_of_raised
        except BaseException as exc:  # KeyboardInterrupt or a fatal server answer: record, then re-raise
            failure = exc
            report.status = "interrupted" if isinstance(exc, KeyboardInterrupt) else "failed"
        finally:
            if client is not None:
                client.close()
            writer.finish()
            _record(root, config, report, price, prices.as_of, template.origin, cache, run_id)
            cache.finish_run(run_id, report.status, _totals(report))
        if failure is not None:
            raise failure
    return report


def _journal(cache: ResponseCache, run_id: str, root: Path) -> Callable[[Path, str], None]:
    release = str(root.resolve())
    return lambda path, sha256: cache.write_intended(run_id, release, relative(root, path), sha256)


class _Progress:
    def __init__(self, total: int, callback: Callable[[int, int], None] | None):
        self.total, self.done, self.callback = total, 0, callback

    def advance(self) -> None:
        self.done += 1
        if self.callback:
            self.callback(self.done, self.total)


def _dry_run(plan: Plan, config: RephraseConfig, cache_path: Path, price: Price | None,
             report: RunReport) -> RunReport:
    cache = _open_for_dry_run(cache_path)
    try:
        for item in plan.items:
            hit = cache.get(item.key) if cache else None
            if hit is not None and not (hit.status == "rejected" and config.retry_rejected):
                report.cached += 1
                continue
            report.to_call += 1
            report.prompt_tokens += item.prompt_tokens_estimate
            report.completion_tokens += item.completion_tokens_estimate
    finally:
        if cache:
            cache.close()
    report.cost_usd = price.cost(report.prompt_tokens, report.completion_tokens) if price else 0.0
    report.status = "dry-run"
    return report


class _Writer:
    """Applies outcomes to the release in the main thread (one writer: no two threads touch a file)."""

    def __init__(self, root: Path, config: RephraseConfig, plan: Plan, report: RunReport,
                 before_write: Callable[[Path, str], None]):
        self.root, self.config, self.plan, self.report = root, config, plan, report
        self.before_write = before_write
        self.changed: set[str] = set()
        self.explanatory = list(plan.explanatory or [])
        self.explanatory_dirty = False

    def apply(self, item: Item, status: str, outputs: tuple[str, ...], reason: str | None) -> None:
        report = self.report
        if status == "rejected":
            report.rejected += 1
            report.problems.append((item.name, f"rejected: {reason}"))
            return
        report.ok += 1
        if self.config.task == "rephrase":
            added, duplicates = add_rephrasings(item.json_path, outputs, item.key, item.sample_id,
                                                self.before_write)
            report.texts_added += added
            report.duplicates += duplicates
            if added:
                self.changed.add(relative(self.root, item.json_path))
                report.files_written += 1
        elif outputs:
            self.explanatory.append({"image": item.image_name, "query": item.query, "outputs": outputs[0],
                                     "cache_key": item.key})
            report.texts_added += 1
            self.explanatory_dirty = True

    def finish(self) -> None:
        if self.explanatory_dirty:
            path = write_explanatory(self.root, self.explanatory, self.before_write)
            self.changed.add(relative(self.root, path))
            self.report.files_written += 1
            self.explanatory_dirty = False


def _execute(to_call: list[Item], sharing: dict[str, list[Item]], config: RephraseConfig, runner: _Runner,
             writer: _Writer, report: RunReport, stop: threading.Event, budget: Budget, progress: _Progress) -> None:
    """Send the uncached items, `concurrency` at a time; results are written as they arrive, into every sample
    that shares the item's request."""

    def collect(future: Future) -> None:
        outcome: _Outcome = future.result()
        report.attempts += outcome.attempts
        report.retries += max(0, outcome.attempts - 1)
        report.prompt_tokens += outcome.prompt_tokens
        report.completion_tokens += outcome.completion_tokens
        report.cost_usd += outcome.cost_usd
        for item in [outcome.item, *sharing[outcome.item.key]]:
            if outcome.status in ("ok", "rejected"):
                writer.apply(item, outcome.status, outcome.outputs, outcome.reason)
            elif outcome.status == "failed":
                report.failed += 1
                report.problems.append((item.name, f"failed: {outcome.reason}"))
            else:
                report.not_done += 1
            progress.advance()

    queue = iter(to_call)
    pending: set[Future] = set()
    with ThreadPoolExecutor(max_workers=config.concurrency, thread_name_prefix="rephrase") as pool:
        try:
            while True:
                halted = stop.is_set() or budget.refused.is_set()
                while not halted and len(pending) < 2 * config.concurrency:
                    item = next(queue, None)
                    if item is None:
                        break
                    pending.add(pool.submit(runner.answer, item))
                if not pending:
                    break
                finished, pending = wait(pending, timeout=0.2, return_when=FIRST_COMPLETED)
                for future in finished:
                    collect(future)
        except BaseException:
            # Ctrl-C or a fatal reply: no new calls; the ones in flight finish and are written before we go.
            stop.set()
            for future in pending:
                try:
                    collect(future)
                except BaseException:  # noqa: S110 - the first failure is the one re-raised
                    pass
            raise
    report.not_done += sum(1 + len(sharing[item.key]) for item in queue)
    if stop.is_set():
        report.status = "interrupted"
    elif budget.refused.is_set():
        report.status = "budget"


def _totals(report: RunReport) -> dict:
    return {"samples": report.samples, "items": report.items, "cached": report.cached, "ok": report.ok,
            "rejected": report.rejected, "failed": report.failed, "not_done": report.not_done,
            "calls": report.attempts, "retries": report.retries, "texts_added": report.texts_added,
            "duplicates_dropped": report.duplicates, "prompt_tokens": report.prompt_tokens,
            "completion_tokens": report.completion_tokens, "cost_usd": round(report.cost_usd, 6)}


def _record(root: Path, config: RephraseConfig, report: RunReport, price: Price | None, as_of: str,
            prompt_origin: str, cache: ResponseCache, run_id: str) -> None:
    """The manifest record of this run, and the repair of what killed runs left: the checksums of every file a
    run journaled and then replaced (whatever the later runs skip), and a record for each killed run that wrote
    into this release. Written when anything changed or a call was made; a fully cached rerun that changes
    nothing leaves the manifest alone."""
    writes = cache.unsettled_writes(str(root.resolve()))
    manifest = read_manifest(root)
    changed = written_as_journaled(root, writes, manifest)
    recorded = recorded_runs(manifest)
    killed = {}
    for write in writes:
        if write["run_id"] != run_id and write["run_id"] not in recorded:
            killed.setdefault(write["run_id"], []).append(write)
    records = [_killed_record(cache, runs_writes, changed, report.cache) for runs_writes in killed.values()]
    if changed or records or report.attempts or report.files_written:
        records.append({
            "task": config.task, "split": config.split, "model": config.model,
            "endpoint": config.base_url or DEFAULT_ENDPOINT, "prompt_version": report.prompt_version,
            "prompt": prompt_origin, "temperature": config.temperature, "seed": config.seed, "n": config.n,
            "date": now_iso(), "status": report.status, "run_id": run_id, "cache": report.cache,
            "price_per_1m": ({"input": price.input_per_1m, "output": price.output_per_1m, "as_of": as_of}
                             if price else None),
            "totals": _totals(report),
        })
        update_manifest(root, changed, records)
        report.manifest_written = True
    cache.settle_writes([write["id"] for write in writes])


def _killed_record(cache: ResponseCache, writes: list[dict], changed: list[str], cache_path: str) -> dict:
    """What the ledger knows of a run that was killed before it could record itself."""
    first = writes[0]
    config = json.loads(first["config_json"])
    ledger = cache.totals(first["run_id"])
    return {
        "task": config.get("task"), "split": config.get("split"), "model": config.get("model"),
        "endpoint": config.get("base_url") or DEFAULT_ENDPOINT, "prompt_version": config.get("prompt_version"),
        "prompt": config.get("prompt"), "temperature": config.get("temperature"), "seed": config.get("seed"),
        "n": config.get("n"), "date": first["started_at"], "status": "killed", "run_id": first["run_id"],
        "cache": cache_path,
        "totals": {"calls": ledger.calls, "lost": ledger.lost, "prompt_tokens": ledger.prompt_tokens,
                   "completion_tokens": ledger.completion_tokens, "cost_usd": round(ledger.cost_usd, 6),
                   "files_written": len({w["rel"] for w in writes if w["rel"] in changed})},
    }
