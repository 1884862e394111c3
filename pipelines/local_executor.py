"""The plain loop: the same stages, one unit after another, in this process. For debugging."""

from __future__ import annotations

from collections.abc import Iterable

from operators.render import units_table
from pipelines.executor import Executor, OnUnit, UnitCollector
from pipelines.faults import checkpoint
from pipelines.plan import WorkUnit


class LocalExecutor(Executor):
    name = "local"

    def run(self, units: Iterable[WorkUnit], render, embed, on_unit: OnUnit) -> dict:
        collector = UnitCollector(on_unit)
        started = False
        try:
            for unit in units:
                if not started:  # load the model only when there is work
                    render.setup()
                    embed.setup()
                    started = True
                rendered = render(units_table([(unit.unit_id, unit.docs)]))
                checkpoint("rendered")
                embedded = embed(rendered)
                checkpoint("embedded")
                collector.add(embedded)
        finally:
            render.close()
        return {"render": dict(render.stats), "embed": dict(embed.stats)} if started else {}
