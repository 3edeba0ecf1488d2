"""Helpers of the operations tests: the Prometheus tools, exposition parsing, PromQL names."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
DASHBOARDS = DEPLOY / "grafana" / "dashboards"
RULES = DEPLOY / "prometheus" / "rules.yml"
OPERATIONS_DOC = ROOT / "docs" / "operations.md"

INSTALL_HINT = ("install Debian's prometheus package (`make install` does it when run as root "
                "with apt-get: `apt-get install -y --no-install-recommends prometheus`)")

# Series Prometheus itself adds to every scrape; no service exports them.
SYNTHETIC = {"up", "scrape_duration_seconds", "scrape_samples_scraped"}


def require_tool(name: str) -> str:
    """Path of ``name``; fails (never skips) with how to install it."""
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"`{name}` is not on PATH: {INSTALL_HINT}", pytrace=False)
    return path


def exported_types(text: str) -> dict[str, str]:
    """``# TYPE`` lines of an exposition: metric family -> type."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(None, 3)
            out[name] = kind.strip()
    return out


def sample_names(types: dict[str, str]) -> set[str]:
    """Every series name a query may use for the given families: ``_total`` of counters,
    ``_bucket``/``_sum``/``_count`` of histograms, ``_sum``/``_count`` of summaries."""
    names: set[str] = set()
    for family, kind in types.items():
        names.add(family)
        if kind == "counter":
            names.add(family if family.endswith("_total") else family + "_total")
        elif kind == "histogram":
            names.update(f"{family}_{s}" for s in ("bucket", "sum", "count"))
        elif kind == "summary":
            names.update(f"{family}_{s}" for s in ("sum", "count"))
    return names


_KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "and", "or",
             "unless", "offset", "bool", "inf", "nan", "atan2"}
_STRING = re.compile(r'"(?:\\.|[^"\\])*"|\'(?:\\.|[^\'\\])*\'')
_MATCHERS = re.compile(r"\{[^{}]*\}")
_RANGES = re.compile(r"\[[^\[\]]*\]")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)")
_IDENT = re.compile(r"(?<![\w:.$])([A-Za-z_:][A-Za-z0-9_:]*)(\s*\()?")


def promql_metric_names(expr: str) -> set[str]:
    """Metric names a PromQL expression selects (functions, keywords, labels left out)."""
    text = _STRING.sub('""', expr)
    text = _MATCHERS.sub(" ", text)
    text = _RANGES.sub(" ", text)
    text = _GROUPING.sub(" ", text)
    names: set[str] = set()
    for match in _IDENT.finditer(text):
        name, call = match.group(1), match.group(2)
        if call or name.lower() in _KEYWORDS:
            continue
        names.add(name)
    return names


def dashboard_exprs() -> dict[str, list[str]]:
    """Dashboard file name -> every ``expr`` of its panels (rows included)."""
    out: dict[str, list[str]] = {}
    for path in sorted(DASHBOARDS.glob("*.json")):
        data = json.loads(path.read_text())
        exprs: list[str] = []
        todo: list[dict[str, Any]] = list(data["panels"])
        while todo:
            panel = todo.pop(0)
            exprs.extend(t["expr"] for t in panel.get("targets", []) if t.get("expr"))
            todo.extend(panel.get("panels", []))
        out[path.name] = exprs
    return out


def rule_exprs() -> dict[str, str]:
    """Alert name -> expression of every rule in rules.yml."""
    data = yaml.safe_load(RULES.read_text())
    return {r.get("alert") or r["record"]: r["expr"]
            for g in data["groups"] for r in g["rules"]}


def github_anchor(heading: str) -> str:
    """The anchor GitHub gives a Markdown heading."""
    text = heading.strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")
