"""`python -m monitoring [--check]`: writes (or checks) the dashboard and the alert rules from their sources."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from monitoring.alerts import helm_rules_file, plain_rules_file
from monitoring.dashboard import dashboard

REPO = Path(__file__).resolve().parents[1]
CHART_FILES = REPO / "charts/onnx-operator/files"


def outputs() -> dict[Path, str]:
    return {
        CHART_FILES / "dashboard.json": json.dumps(dashboard(), indent=2) + "\n",
        CHART_FILES / "alert-rules.yaml": helm_rules_file(),
        REPO / "monitoring/onnx-operator.rules.yaml": plain_rules_file(),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m monitoring", description=__doc__)
    parser.add_argument("--check", action="store_true", help="fail when a written file differs from its source")
    args = parser.parse_args(argv)
    stale = []
    for path, text in outputs().items():
        if args.check:
            if not path.exists() or path.read_text() != text:
                stale.append(path.relative_to(REPO))
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
    for path in stale:
        print(f"{path} is stale: run `make monitoring`", file=sys.stderr)
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main())
