"""Deterministic synthetic data in the real on-disk formats: the embedded default and the test fixtures."""
from .release import DEFAULT_COUNTS, SPECIAL, SPECIAL_PLAN, sample_ids, special_cases, write_sample_release

__all__ = ["DEFAULT_COUNTS", "SPECIAL", "SPECIAL_PLAN", "sample_ids", "special_cases", "write_sample_release"]
