"""Scoring: ground truth, per-query intersection/union, gIoU/cIoU, breakdowns and statistics."""
