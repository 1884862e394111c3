"""infra/prometheus/alerts.yaml: Prometheus' own promtool checks the rules and runs their unit tests
(alerts_test.yaml: series in, the alerts that fire or stay quiet out); a broken copy of a rule must
make those tests fail; the PrometheusRule in infra/k8s/monitoring.yaml holds the same groups; the
rules read only pagemill's metrics as the metrics work of issue 29 names them."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest
import yaml
from conftest import REPO

PROMETHEUS = REPO / "infra" / "prometheus"
ALERTS = PROMETHEUS / "alerts.yaml"
RULES = yaml.safe_load(ALERTS.read_text())
# What pagemill pushes (issue 29's metrics): gauges per run, by the Pushgateway.
PAGEMILL_METRICS = {"pagemill_run_exit_status", "pagemill_run_success_timestamp_seconds",
                    "pagemill_quarantined_total", "pagemill_pages_total", "pagemill_store_rows",
                    "pagemill_archive_rows"}
ALERT_NAMES = {"PagemillRunFailed", "PagemillNoSuccessfulRun", "PagemillRunMetricsAbsent",
               "PagemillQuarantineRateJump", "PagemillStoreBehindShards"}


def promtool() -> str:
    found = shutil.which("promtool")
    if not found:
        pytest.fail("promtool is missing: apt-get install prometheus (Debian's package; .ci/run installs it)")
    return found


def run_promtool(*args, cwd=PROMETHEUS) -> subprocess.CompletedProcess:
    return subprocess.run([promtool(), *args], cwd=cwd, capture_output=True, text=True, timeout=120)


def test_promtool_checks_the_rules_and_every_alert_fires_and_stays_quiet_in_its_unit_tests():
    checked = run_promtool("check", "rules", "alerts.yaml")
    assert checked.returncode == 0 and "SUCCESS: 7 rules found" in checked.stdout, checked.stdout + checked.stderr
    tested = run_promtool("test", "rules", "alerts_test.yaml")
    assert tested.returncode == 0 and "SUCCESS" in tested.stdout, tested.stdout + tested.stderr
    unit = yaml.safe_load((PROMETHEUS / "alerts_test.yaml").read_text())
    cases = [c for t in unit["tests"] for c in t.get("alert_rule_test", [])]
    assert {c["alertname"] for c in cases if c["exp_alerts"]} == ALERT_NAMES  # each one fires somewhere
    assert {c["alertname"] for c in cases if not c["exp_alerts"]} == ALERT_NAMES  # and stays quiet somewhere


@pytest.mark.parametrize("old,new,alert", [
    ("and pagemill:pages_processed >= 100", "", "PagemillQuarantineRateJump"),  # small runs
    ("or\n" + " " * 12 + "pagemill:pages_processed * 0", "", "PagemillQuarantineRateJump"),  # no quarantine
    ('{outcome=~"indexed|quarantined"}', "", "PagemillQuarantineRateJump"),  # deleted pages counted
    ("> 26 * 3600", "> 24 * 3600", "PagemillNoSuccessfulRun"),
    ("for: 1h", "for: 0m", "PagemillStoreBehindShards"),
], ids=["no-page-floor", "no-zero-baseline", "deleted-pages", "24h", "no-for"])
def test_the_unit_tests_catch_a_broken_rule(tmp_path, old, new, alert):
    text = ALERTS.read_text()
    broken = text.replace(old, new)
    assert broken != text
    (tmp_path / "alerts.yaml").write_text(broken)
    shutil.copy(PROMETHEUS / "alerts_test.yaml", tmp_path)
    tested = run_promtool("test", "rules", "alerts_test.yaml", cwd=tmp_path)
    assert tested.returncode == 1 and f"alertname: {alert}," in tested.stdout + tested.stderr, tested.stdout + tested.stderr


def test_rules_read_pagemills_metrics_and_say_what_to_do():
    rules = [r for g in RULES["groups"] for r in g["rules"]]
    assert {r["alert"] for r in rules if "alert" in r} == ALERT_NAMES
    recorded = {r["record"] for r in rules if "record" in r}
    names = {n for r in rules for n in re.findall(r"\bpagemill[a-z_:]*", r["expr"])}
    assert names <= PAGEMILL_METRICS | recorded, names - PAGEMILL_METRICS - recorded
    assert PAGEMILL_METRICS <= names  # every metric named in the issue is watched
    for r in rules:
        if "alert" in r:
            assert r["labels"]["severity"] in ("critical", "warning") and r["annotations"]["summary"], r["alert"]


def test_the_prometheus_rule_holds_the_same_groups():
    docs = list(yaml.safe_load_all((REPO / "infra" / "k8s" / "monitoring.yaml").read_text()))
    rule = next(d for d in docs if d["kind"] == "PrometheusRule")
    assert rule["spec"]["groups"] == RULES["groups"]
