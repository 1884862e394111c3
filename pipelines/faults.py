"""Crash-test fault points: see operators/faults.py (one scheme for the driver and the workers)."""

from operators.faults import checkpoint

__all__ = ["checkpoint"]
