"""Issue 17 in studies: the run time the report's interactions, contribution intervals and
drill-down add to the shipped sentiment and diagnosis pipelines (test-sized), against the
same study with the three switched off, measured in the same run.

Both runs of a pair have conformal prediction off and no saved model (the parts that do
not change); the "off" run still computes the modality contributions. The drill-down's
encoder calls are read from the run's metrics.json.

Run: ``python benchmarks/study_explanations.py`` (prints a markdown table).
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import HEADER, Row, machine, timed  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
COMMON = ["evaluation.conformal.enabled=false", "output.save_model=false"]
OFF = ["output.interactions=false", "output.intervals=false", "output.drilldown_rows=0"]
PIPELINES = {
    "sentiment": ("sentiment.yaml", ["data.params.n_samples=180", "evaluation.bootstrap=300"]),
    "diagnosis": ("diagnosis.yaml", ["data.params.n_samples=150", "evaluation.bootstrap=300"]),
}


def _run(config_file: str, overrides: list[str]) -> Path:
    from toolkit.study import load_config, run_study

    config = load_config(ROOT / "pipelines" / config_file, [*COMMON, *overrides])
    return run_study(config, tempfile.mkdtemp(prefix="mmtk-bench-"), progress=False)


def main() -> list[Row]:
    rows = []
    for name, (config_file, overrides) in PIPELINES.items():
        off, _ = timed(_run, config_file, [*overrides, *OFF])
        on, run = timed(_run, config_file, overrides)
        summary = json.loads((run / "metrics.json").read_text())
        drill = summary["drilldown"]
        kinds = sorted({r["kind"] for r in drill.get("records", [])})
        rows.append(Row(
            "17d", f"{name} study ({overrides[0].split('=')[1]} rows): report outputs on / off",
            on / off, "x", "reported", None,
            f"off {off:.1f} s, on {on:.1f} s; drill-down "
            f"{drill.get('encoder_calls', 0):,} encoder calls ({len(drill.get('rows', []))} rows; "
            f"{', '.join(kinds)}; max_parts {drill.get('max_parts')}, "
            f"{drill.get('n_permutations')} orders)",
        ))  # fmt: skip
    return rows


if __name__ == "__main__":
    print(f"Machine: {machine()}\n")
    print(HEADER)
    for row in main():
        print(row.line())
