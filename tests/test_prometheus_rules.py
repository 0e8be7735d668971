"""The example Prometheus rules: valid for promtool (Debian's prometheus package, installed by make test), each
alert fires when it should (promtool's own rule tests), and every metric they use is one monitor exports."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from avoviirscollector.config import load_settings
from avoviirscollector.monitor.server import Monitor

REPO = Path(__file__).resolve().parents[1]
RULES = REPO / "prometheus" / "avoviirscollector-rules.yml"
RULE_TESTS = REPO / "prometheus" / "avoviirscollector-rules.test.yml"


def promtool() -> str:
    tool = shutil.which("promtool")
    if tool is None:
        pytest.skip("promtool is not installed (make test installs Debian's prometheus package; apt-get install "
                    "prometheus)")
    return tool


def test_promtool_checks_the_rules():
    result = subprocess.run([promtool(), "check", "rules", str(RULES)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 9 rules found" in result.stdout + result.stderr


def test_each_alert_fires_when_it_should():
    result = subprocess.run([promtool(), "test", "rules", RULE_TESTS.name], capture_output=True, text=True,
                            timeout=60, cwd=RULE_TESTS.parent)
    assert result.returncode == 0, result.stdout + result.stderr


def pair_gauges(tmp_path) -> set[str]:
    """The gauges a monitor exports when the broker's status says it is one of a pair."""
    monitor = Monitor(load_settings({"VIIRS_BASE": str(tmp_path / "pair")}))
    status = {"queue length": 0, "products waiting": [], "tasks by product": {},
              "pair": {"role": "MASTER", "serving": True, "link": "alone", "lag seconds": 0.0,
                       "last promotion": "2026-12-04T03:09:46Z"}}
    monitor.live_status = lambda: status
    names = {family.name for family in monitor.collect()}
    assert {"avo_pair_active", "avo_pair_whole", "avo_pair_replication_lag_seconds",
            "avo_pair_last_promotion_timestamp_seconds"} <= names
    return names


def test_the_rules_use_only_metrics_monitor_exports(tmp_path):
    settings = load_settings({"VIIRS_BASE": str(tmp_path)})
    exported = set()
    for family in Monitor(settings).collect():
        suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count")}.get(family.type, ("",))
        exported |= {family.name + suffix for suffix in suffixes}
    # the gauges that appear only once there is something to show
    exported |= {"avo_queue_length", "avo_mirror_last_success_timestamp_seconds", "avo_healthy",
                 "avo_filesystem_free_bytes"}
    exported |= pair_gauges(tmp_path)
    groups = yaml.safe_load(RULES.read_text())["groups"]
    used = {name for group in groups for rule in group["rules"]
            for name in re.findall(r"\bavo_[a-z_]+", rule["expr"])}
    assert {"avo_files_placed_total", "avo_granules_complete", "avo_queue_length", "avo_program_starts_total",
            "avo_mirror_last_success_timestamp_seconds", "avo_latency_seconds_bucket"} <= used
    assert used <= exported, used - exported
