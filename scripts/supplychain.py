"""The locked dependency set and its vulnerability audit (`make lock`, `make audit`).

``lock``   prints the exact versions of churnwatch[embedded,dev] and every dependency, as
           installed in the running interpreter's environment (the .venv of `make install`).
``audit``  pip-audits a lock file against a vulnerability service (PyPI's per-version JSON
           API, or OSV); there is no offline advisory database to audit against. The service
           is probed first. Whenever the audit cannot run, or cannot check every package (no
           network, a package mirror without PyPI's JSON API, a service failing mid-run, no
           pip-audit), one line says ``NOT AUDITED`` and why, never a traceback, and that is
           never a pass: ``--if-unreachable fail`` (the default) exits 2; ``warn`` exits 0 (for
           a CI machine that reaches the package index but no advisory database). Every wait
           is bounded (``--timeout`` per request, ``--run-timeout`` for pip-audit). A finding
           is listed and exits 1.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import re
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import urllib.error
import urllib.request
from importlib.metadata import distribution, version
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

HEADER = ("# Exact versions of churnwatch[embedded,dev] and all their dependencies, as installed in\n"
          "# .venv by `make install`. Regenerate with `make lock`; `make audit` pip-audits this file.")


def lock() -> str:
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name as cn

    pins: dict[str, str] = {}
    seen: set[tuple[str, frozenset[str]]] = set()
    todo = [("churnwatch", frozenset({"embedded", "dev"}))]
    while todo:
        name, extras = todo.pop()
        if (cn(name), extras) in seen:
            continue
        seen.add((cn(name), extras))
        dist = distribution(name)
        if cn(name) != "churnwatch":
            pins[cn(dist.metadata["Name"])] = dist.version
        for raw in dist.requires or []:
            req = Requirement(raw)
            if req.marker is None or any(req.marker.evaluate({"extra": e}) for e in (*extras, "")):
                todo.append((req.name, frozenset(req.extras)))
    pins["pip"] = distribution("pip").version
    return HEADER + "\n" + "\n".join(f"{n}=={v}" for n, v in sorted(pins.items())) + "\n"


def _host(url: str) -> str:
    parts = urlsplit(url)
    return parts.hostname or url


def _why(exc: BaseException, url: str, service: str, timeout: float) -> str:
    """What a failed request to the vulnerability service says, in words."""
    host = _host(url)
    if isinstance(exc, urllib.error.HTTPError):
        if service == "pypi" and exc.code == 404:
            return (f"{host} serves packages but not PyPI's per-version JSON API, which "
                    f"carries the vulnerability data (HTTP 404 for {url}): a mirror or proxy")
        return f"{url} answered HTTP {exc.code} {exc.reason}"
    reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
    if isinstance(reason, socket.gaierror):
        return f"cannot resolve {host!r} (no DNS answer for it: this machine looks offline)"
    if isinstance(reason, ConnectionRefusedError):
        return f"{host} refused the connection ({url})"
    if isinstance(reason, TimeoutError | socket.timeout):
        return f"no answer from {host} within {timeout:g} s"
    if isinstance(reason, ssl.SSLError):
        return f"TLS with {host} failed ({reason})"
    if isinstance(reason, OSError):
        return f"cannot connect to {host} ({reason.strerror or reason})"
    if isinstance(exc, ValueError):  # json.JSONDecodeError
        return f"{url} answered something that is not the service's JSON (a proxy or portal page?)"
    return f"{url}: {type(exc).__name__}: {exc}"


def probe(service: str, osv_url: str, timeout: float = 20.0) -> str | None:
    """None when the service answers; otherwise why not. Bounded: a DNS lookup that hangs
    (no timeout applies to it) is given up on after ``timeout`` + 5 seconds."""
    if service == "pypi":
        url, data = f"https://pypi.org/pypi/pip/{version('pip')}/json", None
    else:
        url = osv_url
        data = json.dumps({"package": {"name": "pip", "ecosystem": "PyPI"}, "version": "23.0"}).encode()
    outcome: list[str | None] = []

    def ask() -> None:
        try:
            with urllib.request.urlopen(urllib.request.Request(url, data=data), timeout=timeout) as r:
                json.load(r)
        except Exception as exc:  # noqa: BLE001 - any failure means: not audited
            outcome.append(_why(exc, url, service, timeout))
        else:
            outcome.append(None)

    asker = threading.Thread(target=ask, daemon=True)
    asker.start()
    asker.join(timeout + 5)
    if not outcome:
        return f"no answer from {_host(url)} within {timeout + 5:g} s (not even its DNS lookup)"
    return outcome[0]


def not_audited(args: argparse.Namespace, why: str, advice: str = "") -> int:
    """One line saying that nothing (or not everything) was checked, why, and what to do;
    exit 2, or 0 with ``--if-unreachable warn`` (the line says so)."""
    warn = args.if_unreachable == "warn"
    advice = advice or (f"Run `make audit` where the '{args.service}' service is reachable, or "
                        "use another: AUDIT_SERVICE=pypi|osv, AUDIT_OSV_URL=<an OSV mirror>")
    print(f"make audit: NOT AUDITED - {why}. {advice}"
          + (" (AUDIT_IF_UNREACHABLE=warn: exit 0 all the same)" if warn else ""),
          file=sys.stderr)
    return 0 if warn else 2


_EXCEPTION_LINE = re.compile(r"^[\w.]+(Error|Exception|Timeout)\w*: \S")


def _stopped(stderr: str) -> str:
    """The gist of pip-audit's error output: the last exception of its traceback that has a
    message (a bare ``ServiceError`` is raised from the HTTP error that says what happened),
    else its last line."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    said = [line for line in lines if _EXCEPTION_LINE.match(line)]
    last = said[-1] if said else lines[-1] if lines else "no error output"
    return last if len(last) <= 300 else last[:297] + "..."


def audit(args: argparse.Namespace) -> int:
    if importlib.util.find_spec("pip_audit") is None:
        return not_audited(args, f"pip-audit is not installed for {sys.executable}, so no "
                                 f"package of {args.lock} was checked",
                           "Run `make install` (pip-audit is a dev dependency pinned in the lock)")
    current = lock()
    with open(args.lock) as f:
        if f.read() != current:
            print(f"make audit: note - .venv differs from {args.lock} (run 'make lock' to re-pin); "
                  f"auditing {args.lock}", file=sys.stderr)
    why = probe(args.service, args.osv_url, args.timeout)
    if why is not None:
        return not_audited(args, f"the '{args.service}' vulnerability service cannot be used "
                                 f"here, so no package of {args.lock} was checked: {why}")
    with tempfile.TemporaryDirectory(prefix="churnwatch-audit-") as tmp:
        report = Path(tmp) / "report.json"
        cmd = [sys.executable, "-m", "pip_audit", "-r", args.lock, "--no-deps", "--disable-pip",
               "--progress-spinner", "off", "-s", args.service, "--osv-url", args.osv_url,
               "--timeout", f"{args.timeout:g}", "-f", "json", "-o", str(report)]
        for vuln in args.ignore:
            cmd += ["--ignore-vuln", vuln]
        try:
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=args.run_timeout,
                                  stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            return not_audited(args, f"pip-audit did not finish within {args.run_timeout:g} s, "
                                     f"so {args.lock} was not fully checked")
        try:
            deps = json.loads(report.read_text())["dependencies"]
        except (OSError, ValueError, KeyError, TypeError):
            return not_audited(args, "pip-audit stopped before it had checked every package "
                                     f"of {args.lock} (exit {done.returncode}: "
                                     f"{_stopped(done.stderr)})")
    return judge(args, deps)


def judge(args: argparse.Namespace, deps: list[dict[str, Any]]) -> int:
    """Findings fail (exit 1) and are listed; packages the service could not check make the
    audit incomplete (NOT AUDITED); otherwise it passed."""
    skipped = [d for d in deps if d.get("skip_reason")]
    findings = [(d, v) for d in deps for v in d.get("vulns") or []]
    unchecked = (f"{len(skipped)} of the {len(deps)} packages of {args.lock} could not be "
                 f"checked ({skipped[0]['name']}: {skipped[0]['skip_reason'].strip()})"
                 ) if skipped else ""
    if findings:
        for dep, vuln in findings:
            fixed = ", ".join(vuln.get("fix_versions") or []) or "no fixed release yet"
            aliases = [a for a in vuln.get("aliases") or [] if a != vuln["id"]]
            also = f" ({', '.join(aliases)})" if aliases else ""
            print(f"{dep['name']}=={dep['version']}: {vuln['id']}{also}; fixed in {fixed}")
        packages = len({d["name"] for d, _ in findings})
        print(f"make audit: FAILED - {len(findings)} known vulnerabilit"
              f"{'y' if len(findings) == 1 else 'ies'} in {packages} of the {len(deps)} packages "
              f"of {args.lock} ({args.service}); upgrade them and `make lock`, or ignore one "
              "with its reason (AUDIT_IGNORE in the Makefile)"
              + (f"; also {unchecked}" if unchecked else ""), file=sys.stderr)
        return 1
    if skipped:
        return not_audited(args, unchecked)
    print(f"make audit: no known vulnerabilities in the {len(deps)} packages of {args.lock} "
          f"({args.service})")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("lock", help="print the lock file for the installed environment")
    a = sub.add_parser("audit", help="pip-audit a lock file")
    a.add_argument("--lock", default="requirements.lock")
    a.add_argument("--service", choices=("pypi", "osv"), default="pypi")
    a.add_argument("--osv-url", default="https://api.osv.dev/v1/query")
    a.add_argument("--if-unreachable", choices=("fail", "warn"), default="fail")
    a.add_argument("--ignore", action="append", default=[],
                   help="a vulnerability id to ignore (give the reason in the Makefile)")
    a.add_argument("--timeout", type=float, default=20.0,
                   help="seconds to wait for the service, per request")
    a.add_argument("--run-timeout", type=float, default=900.0,
                   help="seconds pip-audit may take for the whole lock file")
    args = parser.parse_args(argv)
    if args.command == "lock":
        sys.stdout.write(lock())
        return 0
    return audit(args)


if __name__ == "__main__":
    sys.exit(main())
