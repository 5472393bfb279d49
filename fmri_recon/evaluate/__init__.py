"""Scoring: the metrics, the per-experiment tables, the figures."""
