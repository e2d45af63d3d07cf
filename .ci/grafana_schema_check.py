"""Check dashboards/*.json against the dashboard schema of the lowest supported Grafana (11.0).

Grafana publishes its dashboard schema as the TypeScript types of the npm package
``@grafana/schema`` (one version per Grafana release). This script writes one TypeScript file per
dashboard, ``const d = <the JSON> satisfies Loose<Dashboard>``, and ``tsc --noEmit`` checks every
field name and type against Grafana 11.0.0's types (``Loose`` only turns the schema's string
enums into strings, which JSON cannot spell as TypeScript enums). Run by ``.ci/grafana-schema-check``.

A few fields that the 11.0 schema does not list are removed before the check, on purpose:
Grafana keeps unknown fields of an imported dashboard and ignores them:

* ``allowCustomValue`` of a variable (newer than 11.0; the SDK writes it, later versions read it);
* ``auto``, ``auto_count``, ``auto_min`` of a variable: the interval variable's fields, which the
  SDK writes on every variable (``false``, ``30``, ``10s``) and Grafana reads on interval
  variables only;
* ``expr``, ``titleFormat``, ``textFormat`` and ``tagKeys`` of an annotation query: the
  Prometheus data source's own fields (the query, and what a mark shows), which the generic
  schema does not list.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
NEWER_THAN_THE_SCHEMA = {
    ("templating", "allowCustomValue"),
    ("templating", "auto"),
    ("templating", "auto_count"),
    ("templating", "auto_min"),
    ("annotations", "expr"),
    ("annotations", "titleFormat"),
    ("annotations", "textFormat"),
    ("annotations", "tagKeys"),
}
HEADER = """import type { Dashboard } from '@grafana/schema';
type Loose<T> = T extends string ? string
  : T extends (infer U)[] ? Loose<U>[]
  : T extends object ? { [K in keyof T]: Loose<T[K]> }
  : T;
"""


def without_newer_fields(dashboard: dict) -> dict:
    """Return the dashboard without the fields listed in NEWER_THAN_THE_SCHEMA."""
    for section, field in NEWER_THAN_THE_SCHEMA:
        for item in dashboard.get(section, {}).get("list", []):
            item.pop(field, None)
    return dashboard


def main(out: Path) -> int:
    """Write the TypeScript files and the tsconfig.json into ``out``."""
    files = []
    for path in sorted((REPO / "dashboards").glob("*.json")):
        dashboard = without_newer_fields(json.loads(path.read_text(encoding="utf-8")))
        name = path.stem.replace("-", "_") + ".ts"
        text = f"{HEADER}export const dashboard = ({json.dumps(dashboard)}) satisfies Loose<Dashboard>;\n"
        (out / name).write_text(text, encoding="utf-8")
        files.append(name)
    config = {
        "compilerOptions": {
            "strict": True,
            "noEmit": True,
            "moduleResolution": "node",
            "target": "es2020",
            "skipLibCheck": True,
        },
        "files": files,
    }
    (out / "tsconfig.json").write_text(json.dumps(config, indent=2), encoding="utf-8")
    sys.stdout.write(f"{len(files)} dashboards written to {out} for tsc\n")
    return 0 if files else 1


if __name__ == "__main__":
    raise SystemExit(main(Path(sys.argv[1])))
