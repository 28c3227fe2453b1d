"""The Grafana dashboard in docs/ imports as is (its data source is an
input chosen at import) and asks only for metrics the project exports, as
the README's Monitoring tables name them. Its queries are run against a
real Prometheus in the default scenario (test_monitoring.py)."""

from __future__ import annotations

import json
import re

from conftest import ROOT

DASHBOARD = json.loads((ROOT / "docs/grafana-dashboard.json").read_text())
README = (ROOT / "README.md").read_text()
MONITORING = README[README.index("\n## Monitoring"):README.index("\n## ", README.index("\n## Monitoring") + 1)]


def test_the_data_source_is_chosen_at_import():
    assert [i["pluginId"] for i in DASHBOARD["__inputs"]] == ["prometheus"]
    for panel in DASHBOARD["panels"]:
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
    assert len({p["id"] for p in DASHBOARD["panels"]}) == len(DASHBOARD["panels"])


def test_every_query_asks_for_documented_metrics_only():
    documented = set(re.findall(r"^\| `(gearman_[a-z_]+)`", MONITORING, re.MULTILINE))
    assert {"gearman_function_jobs_queued", "gearman_worker_jobs_total"} <= documented
    for panel in DASHBOARD["panels"]:
        for target in panel["targets"]:
            for name in re.findall(r"\bgearman_[a-z_]+", target["expr"]):
                assert re.sub(r"_(bucket|sum|count)$", "", name) in documented, (panel["title"], name)
