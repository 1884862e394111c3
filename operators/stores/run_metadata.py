"""What a run records in each Parquet shard's schema metadata, written and read in one place.

Each fact is a key ``pagemill.<name>`` whose value is JSON: the model (name, weights, dim), the
corpus, the text and single-vector models, and the layouts with their parameters.

    >>> import pyarrow as pa
    >>> schema = pa.schema([]).with_metadata(RunMetadata({"model": "colqwen2-tiny", "dim": 128}).encode())
    >>> RunMetadata.from_schema(schema).dim
    128
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import pyarrow as pa

PREFIX = "pagemill."


@dataclass(frozen=True)
class RunMetadata:
    values: dict = field(default_factory=dict)  # name -> the decoded JSON value

    @classmethod
    def from_schema(cls, schema: pa.Schema) -> RunMetadata:
        meta = schema.metadata or {}
        prefix = PREFIX.encode()
        return cls({k.decode()[len(PREFIX):]: json.loads(v) for k, v in meta.items() if k.startswith(prefix)})

    @classmethod
    def read(cls, store, key: str) -> RunMetadata:
        """The metadata of the shard ``key`` of an OutputStore (its footer only)."""
        import pyarrow.parquet as pq

        return cls.from_schema(pq.read_schema(store.open_input(key)))

    def encode(self) -> dict[bytes, bytes]:
        """Schema metadata entries: ``{b"pagemill.<name>": JSON}``."""
        return {f"{PREFIX}{k}".encode(): json.dumps(v).encode() for k, v in self.values.items()}

    def updated(self, **values) -> RunMetadata:
        return RunMetadata({**self.values, **values})

    @property
    def model(self) -> str | None:
        return self.values.get("model")

    @property
    def weights(self) -> str | None:
        return self.values.get("weights")

    @property
    def dim(self) -> int | None:
        return int(self.values["dim"]) if self.values.get("dim") is not None else None

    @property
    def corpus(self) -> str:
        return self.values.get("corpus", "default")

    @property
    def text_model(self) -> str | None:
        return self.values.get("text_model")

    @property
    def sv_model(self) -> str | None:
        return self.values.get("sv_model")

    @property
    def layouts(self) -> dict[str, dict]:
        """Layout name -> its parameters (``Layout.params``)."""
        return self.values.get("layouts", {})

    def _fde(self) -> dict:
        """The parameters of an FDE layout (sv-fde, sv-fde-int8, ...: one run, one FDE), or {}."""
        return next((p for p in self.layouts.values() if "fde_reps" in p), {})

    def fde_params(self):
        """The sv-fde layouts' FdeParams, or None for a run without one."""
        from operators.layouts.fde import FdeParams

        p = self._fde()
        return FdeParams(p["fde_reps"], p["fde_bits"], p["fde_proj_dim"], p["fde_seed"]) if p else None

    @property
    def fde_dim(self) -> int | None:
        return int(self._fde().get("dim", 0)) or None
