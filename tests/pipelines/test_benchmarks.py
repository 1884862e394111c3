"""The GPU benchmark's procedure, run on this CPU with the tiny model so that it keeps working
(the figures that matter come from a GPU node; README.md, "On a GPU")."""

from __future__ import annotations

import re

from conftest import CORPUS


def test_gpu_benchmark_measures_model_alone_and_pipeline(ray_address, capsys):
    from benchmarks import gpu

    table = gpu.main(["--corpus", str(CORPUS), "--model", "colqwen2-tiny", "--docs", "8", "--batch-size", "4",
                      "--calibration-pages", "4", "--ray-address", ray_address])

    def value(label: str) -> float:
        return float(re.search(rf"\| {re.escape(label)}[^|]* \| ([0-9.]+) \|", table).group(1))

    alone, steady = value("model alone (calibrate), pages/s"), value("pipeline steady state")
    assert alone > 0 and steady > 0
    assert abs(value("pipeline ÷ model alone") - steady / alone) < 0.02
    assert 0 < value("accelerator busy") <= 1
    assert "CPU cores per GPU: no GPU" in table and "run's own diagnosis: bottleneck: " in table
