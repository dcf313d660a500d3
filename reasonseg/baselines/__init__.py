"""Baseline methods, registered by name; each writes a predictions file through `predict.py`."""
