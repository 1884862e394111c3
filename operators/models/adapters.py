"""The adapter class of each family (operators/models/family.py)."""

from __future__ import annotations

from operators.models.colmodernvbert import ColModernVBertAdapter
from operators.models.colpali import ColPaliAdapter
from operators.models.colqwen2 import ColQwen2Adapter

ADAPTERS = {"colqwen2": ColQwen2Adapter, "colpali": ColPaliAdapter, "colmodernvbert": ColModernVBertAdapter}
