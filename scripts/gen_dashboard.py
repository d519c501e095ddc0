"""Generate the Grafana dashboard ``ops/grafana/bridge.json``.

The dashboard is data: the panels of ``bridge_dev/dashboard_panels.py``, each a title, a PromQL
query or a few, a unit and thresholds; ``bridge_dev/dashboard.py`` turns them into Grafana's
dashboard JSON model, so a change to a panel is a short diff instead of hundreds of lines of
JSON. The JSON is committed (import it in Grafana: Dashboards -> New -> Import);
``tests/ops/test_dashboard.py`` fails when it is stale and ``tests/ops/test_metric_names.py``
checks every metric it uses against ``schemas/metrics.toml``.
Usage: ``python scripts/gen_dashboard.py [--out FILE]``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from bridge_dev.dashboard import render

OUT = Path(__file__).resolve().parents[1] / "ops" / "grafana" / "bridge.json"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(render(), "utf-8")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
