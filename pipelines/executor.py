"""What every executor does: run render and embed over work units, hand finished units back.

An executor takes the planned units and two stage objects (``RenderPages`` and ``EmbedPages``,
cheap to construct and picklable) and calls ``on_unit(unit_id, info, flow_table)`` in the
driver once all of a unit's pages are embedded. Committing is the caller's business.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable

import pyarrow as pa

from operators import schema as S
from pipelines.plan import WorkUnit

OnUnit = Callable[[str, dict, pa.Table], None]


class UnitCollector:
    """Gathers embedded rows by unit; a unit is complete when its marker row has arrived and
    as many page rows as the marker announces."""

    def __init__(self, on_unit: OnUnit):
        self.on_unit = on_unit
        self._parts: dict[str, list[pa.Table]] = {}
        self._rows: dict[str, int] = {}
        self._info: dict[str, dict] = {}

    def add(self, batch: pa.Table) -> None:
        if batch.num_rows == 0:
            return
        units = batch[S.UNIT_ID].to_pylist()
        kinds = batch[S.KIND].to_pylist()
        infos = batch[S.UNIT_INFO].to_pylist()
        touched = []
        for unit_id in dict.fromkeys(units):
            mask = pa.array([u == unit_id for u in units])
            part = batch.filter(mask)
            self._parts.setdefault(unit_id, []).append(part)
            touched.append(unit_id)
        for u, k, info in zip(units, kinds, infos):
            if k in (S.KIND_PAGE, S.KIND_PAGE_FAILED):
                self._rows[u] = self._rows.get(u, 0) + 1
            else:
                self._info[u] = json.loads(info)
        for unit_id in touched:
            info = self._info.get(unit_id)
            if info is not None and self._rows.get(unit_id, 0) == info["n_pages"]:
                parts = self._parts.pop(unit_id)
                self._rows.pop(unit_id, None)
                del self._info[unit_id]
                self.on_unit(unit_id, info, pa.concat_tables(parts))

    @property
    def pending(self) -> int:
        return len(self._parts)


class Executor:
    name = "base"

    def run(self, units: Iterable[WorkUnit], render, embed, on_unit: OnUnit) -> dict:
        """Process ``units``; return executor-level stats for the summary."""
        raise NotImplementedError

    def close(self) -> None:
        pass
