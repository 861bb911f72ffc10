"""Checks of the alert rules and the dashboard that promtool does not make
(scripts/validate-deploy.sh).

    python check_monitoring.py rules ALERTS.yml TESTS.yml OPERATIONS.md
        every alert has a `runbook` annotation naming a heading of OPERATIONS.md, a severity,
        and unit tests in which it fires and in which it does not.
    python check_monitoring.py dashboard DASHBOARD.json DATASOURCES.yml
        the dashboard parses, every panel has queries on the `datasource` variable, ids are
        unique, and a provisioned Prometheus datasource exists.
    python check_monitoring.py metrics ALERTS.yml DASHBOARD.json SCRAPE.txt...
        every metric named by a rule or a panel is exported by the scraped services (Prometheus
        text format), a recording rule's name counts as defined, and histogram series
        (_bucket, _sum, _count) map to their family.
Prints every problem and exits 1 if there is any.
"""

import json
import re
import sys
from pathlib import Path

import yaml

# Series Prometheus makes itself for every target, and of its own rule evaluation.
PROMETHEUS_SERIES = {"up", "scrape_duration_seconds", "scrape_samples_scraped",
                     "scrape_samples_post_metric_relabeling", "scrape_series_added",
                     "ALERTS", "ALERTS_FOR_STATE"}
KEYWORDS = {"and", "or", "unless", "by", "without", "on", "ignoring", "group_left",
            "group_right", "offset", "bool", "inf", "nan", "atan2"}
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")


def promql_metric_names(expr):
    """The metric names an expression selects. A small tokenizer, not a parser: strings,
    label matchers, ranges and grouping label lists are removed, then every identifier that
    is neither a function (followed by "("), a keyword nor a $variable is a metric name."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`', '""', expr)
    text = re.sub(r"\{[^{}]*\}", " ", text)
    text = re.sub(r"\[[^\[\]]*\]", " ", text)
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)", " ", text)
    names = set()
    for match in re.finditer(r"(?<![\w$.])([A-Za-z_:][\w:]*)(\s*\()?", text):
        name, call = match.group(1), match.group(2)
        if call or name in KEYWORDS:
            continue
        names.add(name)
    return names


def self_test():
    cases = {
        'sum by (le, route) (rate(x_bucket{route=~"/a|b", le!="1"}[5m])) > 2 and on (route) y_count > 0.1': {"x_bucket", "y_count"},
        'a:b:sum > 1e5 and deriv(a:b:sum[15m]) > 0': {"a:b:sum"},
        '(sum(rate(c_total[5m])) or vector(0)) + d unless e offset 10m': {"c_total", "d", "e"},
        'histogram_quantile(0.99, sum by (le) (rate(h_bucket{job="j"}[$__rate_interval])))': {"h_bucket"},
        'x / ignoring (limiter) group_left sum(y)': {"x", "y"},
        'absent(up{job="a"}) or count(up{role="r"} == 1)': {"up"},
    }
    for expr, expected in cases.items():
        got = promql_metric_names(expr)
        assert got == expected, f"metric name extraction: {expr!r} gave {sorted(got)}, expected {sorted(expected)}"


def slug(heading):
    """GitHub's anchor for a Markdown heading."""
    text = heading.strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def alerts_and_records(alerts_path):
    groups = yaml.safe_load(Path(alerts_path).read_text())["groups"]
    rules = [r for g in groups for r in g["rules"]]
    return [r for r in rules if "alert" in r], [r for r in rules if "record" in r]


def check_rules(alerts_path, tests_path, operations_path):
    problems = []
    alerts, _ = alerts_and_records(alerts_path)
    headings = {slug(m.group(1)) for m in re.finditer(r"^#+\s+(.*)$", Path(operations_path).read_text(), re.M)}
    tests = yaml.safe_load(Path(tests_path).read_text())["tests"]
    fires, stays_quiet = set(), set()
    for test in tests:
        for case in test.get("alert_rule_test") or []:
            (fires if case.get("exp_alerts") else stays_quiet).add(case["alertname"])
    for alert in alerts:
        name = alert["alert"]
        runbook = (alert.get("annotations") or {}).get("runbook", "")
        doc, _, anchor = runbook.partition("#")
        if doc != "docs/OPERATIONS.md" or not anchor:
            problems.append(f"{name}: runbook annotation {runbook!r} is not docs/OPERATIONS.md#<section>")
        elif anchor not in headings:
            problems.append(f"{name}: runbook {runbook!r} names no heading of {operations_path}")
        if (alert.get("labels") or {}).get("severity") not in ("warning", "critical"):
            problems.append(f"{name}: severity label must be warning or critical")
        if name not in fires:
            problems.append(f"{name}: no unit test in {tests_path} where it fires")
        if name not in stays_quiet:
            problems.append(f"{name}: no unit test in {tests_path} where it must not fire")
    for name in sorted((fires | stays_quiet) - {a["alert"] for a in alerts}):
        problems.append(f"{tests_path}: tests {name}, which {alerts_path} does not define")
    ok = f"{len(alerts)} alerts, each with a runbook section and tests that fire and stay quiet"
    return problems, ok


def panels_of(dashboard):
    for panel in dashboard.get("panels") or []:
        yield panel
        yield from panel.get("panels") or []


def check_dashboard(dashboard_path, datasources_path):
    problems = []
    dashboard = json.loads(Path(dashboard_path).read_text())
    sources = yaml.safe_load(Path(datasources_path).read_text()).get("datasources") or []
    if not any(s.get("type") == "prometheus" for s in sources):
        problems.append(f"{datasources_path}: no Prometheus datasource is provisioned")
    variables = {v.get("name"): v for v in (dashboard.get("templating") or {}).get("list") or []}
    if (variables.get("datasource") or {}).get("query") != "prometheus":
        problems.append("no `datasource` variable of Prometheus datasources (panels use ${datasource})")
    ids = [p.get("id") for p in panels_of(dashboard)]
    if len(ids) != len(set(ids)):
        problems.append(f"panel ids are not unique: {ids}")
    queries = 0
    for panel in panels_of(dashboard):
        if panel.get("type") == "row":
            continue
        where = f"panel {panel.get('title')!r}"
        targets = panel.get("targets") or []
        if not targets:
            problems.append(f"{where}: no query")
        for target in targets:
            queries += 1
            if (target.get("datasource") or panel.get("datasource") or {}).get("uid") != "${datasource}":
                problems.append(f"{where}: query {target.get('refId')} is not on ${{datasource}}")
            if not promql_metric_names(target.get("expr", "")):
                problems.append(f"{where}: query {target.get('refId')} selects no metric")
    return problems, f"{len(ids)} panels, {queries} queries"


def used_names(alerts_path, dashboard_path):
    """{metric name: [where it is used]} over the rules and the dashboard."""
    used = {}
    alerts, records = alerts_and_records(alerts_path)
    for rule in alerts + records:
        for name in promql_metric_names(rule["expr"]):
            used.setdefault(name, []).append(rule.get("alert") or rule.get("record"))
    dashboard = json.loads(Path(dashboard_path).read_text())
    for panel in panels_of(dashboard):
        for target in panel.get("targets") or []:
            for name in promql_metric_names(target.get("expr", "")):
                used.setdefault(name, []).append(f"panel {panel.get('title')!r}")
    return used, {r["record"] for r in records}


def exported_names(scrape_paths):
    """Names in Prometheus text format: each family, each sample name, and a histogram's or
    summary's series names."""
    names = set()
    for path in scrape_paths:
        for line in Path(path).read_text().splitlines():
            typed = re.match(r"^# TYPE (\S+) (\w+)", line)
            if typed:
                family, kind = typed.groups()
                names.add(family)
                if kind in ("histogram", "summary"):
                    names.update(family + s for s in HISTOGRAM_SUFFIXES)
            elif line and not line.startswith("#"):
                names.add(re.match(r"^[^{\s]+", line).group(0))
    return names


def check_metrics(alerts_path, dashboard_path, scrape_paths):
    problems = []
    used, recorded = used_names(alerts_path, dashboard_path)
    exported = exported_names(scrape_paths)
    if not exported:
        problems.append(f"no metric in {', '.join(scrape_paths)}")
    for name in sorted(used):
        if name in exported or name in recorded or name in PROMETHEUS_SERIES:
            continue
        where = ", ".join(sorted(set(used[name])))
        problems.append(f"{name} is not exported by the running services (used by {where})")
    return problems, f"{len(used)} metric names used by the rules and the dashboard are exported ({len(exported)} exported)"


def main():
    self_test()
    command, args = sys.argv[1], sys.argv[2:]
    check = {"rules": check_rules, "dashboard": check_dashboard,
             "metrics": lambda a, d, *s: check_metrics(a, d, s)}[command]
    problems, ok = check(*args)
    for p in problems:
        print(f"check-monitoring {command}: {p}", file=sys.stderr)
    if not problems:
        print(f"check-monitoring {command}: {ok}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
