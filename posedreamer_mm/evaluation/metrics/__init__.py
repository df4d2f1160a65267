"""Registered mmengine metrics: thin ``BaseMetric`` wrappers around ``evaluation.functional``."""
