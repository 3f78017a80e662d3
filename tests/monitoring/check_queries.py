#!/usr/bin/env python3
"""Checks the PromQL of deploy/monitoring against the real thing (called by run.sh).

  check_queries.py exprs DASHBOARD ALERTS OUT_RULES
      Writes every dashboard expression (Grafana variables replaced by plain values) as a
      recording rule into OUT_RULES, so that `promtool check rules` parses each one, and prints
      the expressions one a line (for the queries against a real Prometheus).
  check_queries.py names DASHBOARD ALERTS PENDING METRICS_TEXT
      Fails unless every metric name the dashboard and the alert rules use appears in the
      /metrics text METRICS_TEXT, except the names PENDING lists (features not landed yet).
"""

import json
import re
import sys

import yaml

# Grafana's variables, replaced by values Prometheus accepts.
VARIABLES = {"$__rate_interval": "1m", "$instance": ".*"}
# Series Prometheus makes itself rather than scraping them.
SYNTHETIC = {"up"}
# What a metric name looks like where it is used: before a selector, a range, a binary operator,
# a closing parenthesis or the end.
NAME = re.compile(r"\b([a-zA-Z_:][a-zA-Z0-9_:]*)\s*(?=\{|\[|\)|$|\s*[-+*/<>=!]|\s+(?:and|or|unless)\b)")
FUNCTIONS_AND_KEYWORDS = {
    "sum", "max", "min", "avg", "count", "rate", "increase", "irate", "by", "on", "without",
    "ignoring", "group_left", "group_right", "histogram_quantile", "clamp_min", "clamp_max",
    "time", "absent", "and", "or", "unless", "bool", "offset", "le", "label_values",
}


def dashboard_expressions(path):
    """Every query of the dashboard: panel targets (rows' nested panels too) and variables."""
    with open(path, encoding="utf-8") as f:
        dashboard = json.load(f)
    found = []

    def walk(panels):
        for panel in panels:
            for target in panel.get("targets", []):
                found.append((panel["title"], target["expr"]))
            walk(panel.get("panels", []))

    walk(dashboard["panels"])
    for variable in dashboard["templating"]["list"]:
        query = variable.get("query")
        if isinstance(query, dict):
            # label_values(METRIC, LABEL): the metric is a query of its own.
            match = re.fullmatch(r"label_values\((\w+),\s*\w+\)", query["query"])
            if not match:
                sys.exit(f"variable {variable['name']}: unexpected query {query['query']}")
            found.append((f"variable {variable['name']}", match.group(1)))
    return found


def alert_expressions(path):
    with open(path, encoding="utf-8") as f:
        rules = yaml.safe_load(f)
    return [
        (rule["alert"], rule["expr"])
        for group in rules["groups"]
        for rule in group["rules"]
    ]


def plain(expr):
    for variable, value in VARIABLES.items():
        expr = expr.replace(variable, value)
    return expr


def names(expr):
    # Label values and label names inside braces are not metric names.
    bare = re.sub(r"\{[^}]*\}", "{}", plain(expr))
    bare = re.sub(r"\b(by|on|without|ignoring|group_left|group_right)\s*\([^)]*\)", "", bare)
    return {
        name
        for name, in (m.groups()[:1] for m in NAME.finditer(bare))
        if name not in FUNCTIONS_AND_KEYWORDS and not re.fullmatch(r"[0-9eE.]+", name)
    }


def main():
    mode = sys.argv[1]
    if mode == "exprs":
        dashboard, alerts, out = sys.argv[2:5]
        exprs = dashboard_expressions(dashboard)
        rules = [
            {"record": f"dashboard_query_{i}", "expr": plain(expr)}
            for i, (_, expr) in enumerate(exprs)
        ]
        with open(out, "w", encoding="utf-8") as f:
            yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}, f)
        for _, expr in exprs:
            print(plain(expr).replace("\n", " "))
    elif mode == "names":
        dashboard, alerts, pending_file, metrics_file = sys.argv[2:6]
        with open(pending_file, encoding="utf-8") as f:
            pending = {
                line.strip() for line in f if line.strip() and not line.startswith("#")
            }
        with open(metrics_file, encoding="utf-8") as f:
            exposed = {
                re.split(r"[{ ]", line, maxsplit=1)[0]
                for line in f
                if line.strip() and not line.startswith("#")
            }
        used = {}
        for where, expr in dashboard_expressions(dashboard) + alert_expressions(alerts):
            for name in names(expr):
                used.setdefault(name, where)
        missing = sorted(
            f"{name} (in {where})"
            for name, where in used.items()
            if name not in exposed and name not in pending and name not in SYNTHETIC
        )
        landed = sorted(name for name in pending if name in exposed)
        print(f"{len(used)} metric names used; {len(used) - len(missing)} found or pending")
        for name in landed:
            print(f"note: {name} is in /metrics now: remove it from {pending_file}")
        if missing:
            print("not in /metrics and not listed as pending:\n  " + "\n  ".join(missing))
            sys.exit(1)
        unused = sorted(pending - set(used))
        if unused:
            print("listed as pending but used nowhere:\n  " + "\n  ".join(unused))
            sys.exit(1)
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
