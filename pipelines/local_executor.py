"""The plain loop: the same stages, one unit after another, in this process. For debugging."""

from __future__ import annotations

from collections.abc import Iterable

from operators.render import units_table
from pipelines.executor import Executor, OnUnit, UnitCollector
from pipelines.plan import WorkUnit


class LocalExecutor(Executor):
    name = "local"

    def run(self, units: Iterable[WorkUnit], render, embed, on_unit: OnUnit) -> dict:
        render.setup()
        embed.setup()
        collector = UnitCollector(on_unit)
        try:
            for unit in units:
                collector.add(embed(render(units_table([(unit.unit_id, unit.docs)]))))
        finally:
            render.close()
        return {"render": dict(render.stats), "embed": dict(embed.stats)}
