"""The layout holds: no service imports another service's package (issue 18).

Services are the processes' own code: ingestion, the query/admin API, the scorer, the notifier
and the staff console. What two of them share lives in a library (``common``, ``scoring``,
``state``, ``records``, ``alerting``, ``web``, ...). Only the composition roots put services
together: ``server`` (the one FastAPI app: ingest + api + console) and ``cli`` (the commands).
The graph is read from the source with ``ast``: every ``import`` and ``from ... import``, at
any depth (inside functions too), relative imports resolved.
"""

from __future__ import annotations

import ast
import functools
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2] / "services"
SERVICES = frozenset({"ingest", "api", "scorer", "notifier", "console"})
COMPOSERS = frozenset({"server", "cli"})  # may import services: that is their job
# (importer package, imported package) -> why; keep it short and give a reason for each
ALLOWED: dict[tuple[str, str], str] = {}


def _package(path: Path) -> str | None:
    rel = path.relative_to(ROOT)
    return rel.parts[0] if len(rel.parts) > 1 else None  # None: a module at services/ top


def imported_names(source: str, module: list[str]) -> set[str]:
    """Every ``services.<x>...`` name the code of ``module`` (its dotted parts; a package's
    ``__init__`` keeps that last part, so relative imports resolve as Python does) imports."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = ".".join(module[: -node.level] + ([node.module] if node.module else [])
                            ) if node.level else (node.module or "")
            names.add(base)
            if base == ROOT.name:  # "from services import ingest" imports the package ingest
                names.update(f"{base}.{alias.name}" for alias in node.names)
    return {n for n in names if n.split(".")[0] == ROOT.name and "." in n}


def _imported(path: Path) -> set[str]:
    module = [ROOT.name, *path.relative_to(ROOT).with_suffix("").parts]
    return imported_names(path.read_text(encoding="utf-8"), module)


@functools.cache
def import_graph() -> dict[str, dict[str, set[str]]]:
    """package -> imported package -> the edges (``module -> imported module``) behind it."""
    graph: dict[str, dict[str, set[str]]] = defaultdict(lambda: defaultdict(set))
    for path in sorted(ROOT.rglob("*.py")):
        pkg = _package(path)
        if pkg is None:
            continue
        mod = ".".join(path.relative_to(ROOT.parent).with_suffix("").parts)
        for name in _imported(path):
            parts = name.split(".")
            if len(parts) > 1 and parts[1] != pkg:
                graph[pkg][parts[1]].add(f"{mod} -> {name}")
    return graph


def _violations(graph: dict[str, dict[str, set[str]]], importers: frozenset[str] | None
                ) -> list[str]:
    out = []
    for pkg, targets in sorted(graph.items()):
        if pkg in COMPOSERS or (importers is not None and pkg not in importers):
            continue
        for target, edges in sorted(targets.items()):
            if target in SERVICES and (pkg, target) not in ALLOWED:
                out += sorted(edges)
    return out


def test_the_graph_sees_the_packages_it_judges() -> None:
    packages = {p.name for p in ROOT.iterdir() if (p / "__init__.py").exists()}
    assert SERVICES | COMPOSERS <= packages, "a package named here was renamed or removed"
    graph = import_graph()
    # the composition root does compose every HTTP service: the walk does see imports
    assert {"ingest", "api", "console"} <= set(graph["server"])


def test_no_service_imports_another_service() -> None:
    bad = _violations(import_graph(), SERVICES)
    assert not bad, ("a service imports another service's package; move what they share "
                     "into a library (common, records, alerting, web, ...):\n" + "\n".join(bad))


def test_no_library_imports_a_service() -> None:
    bad = _violations(import_graph(), None)
    assert not bad, ("a library imports a service package; only services/server and "
                     "services/cli compose services:\n" + "\n".join(bad))


def test_the_allow_list_is_still_needed() -> None:
    graph = import_graph()
    stale = [pair for pair in ALLOWED if pair[1] not in graph.get(pair[0], {})]
    assert not stale, f"no longer imported, drop from ALLOWED: {stale}"


def test_the_walk_resolves_every_form_of_import() -> None:
    source = ("import services.api.schemas\n"
              "from ..ingest import routes\n"
              "from . import web\n"
              "from services import scorer\n"
              "def late():\n    from services.notifier.worker import main\n")
    names = imported_names(source, ["services", "console", "customers"])
    assert {n.split(".")[1] for n in names} == {"api", "ingest", "console", "scorer", "notifier"}
    # in a package's __init__, "." is the package itself
    assert imported_names("from .routes import x\n", ["services", "api", "__init__"]) == {
        "services.api.routes"}
