"""LLM rephrasing of ReasonSeg instructions (and explanations for explanatory/train.json), through any
OpenAI-compatible chat-completions server, with a SQLite response cache, a call ledger and a cost budget.

`run_rephrase(root, RephraseConfig(...))` is the library entry point; `reasonseg rephrase DATA ...` the command.
"""
from .cache import ResponseCache, cache_key, default_cache_path
from .checks import check_explanation, check_rephrasings, normalize
from .client import RephraseError, RetryPolicy
from .plan import MAX_TEXTS
from .run import RephraseConfig, RunReport, run_rephrase

__all__ = ["MAX_TEXTS", "RephraseConfig", "RephraseError", "ResponseCache", "RetryPolicy", "RunReport",
           "cache_key", "check_explanation", "check_rephrasings", "default_cache_path", "normalize",
           "run_rephrase"]
