"""The locked dependency set and its vulnerability audit (`make lock`, `make audit`).

``lock``   prints the exact versions of churnwatch[embedded,dev] and every dependency, as
           installed in the running interpreter's environment (the .venv of `make install`).
``audit``  pip-audits a lock file. pip-audit needs a vulnerability service (PyPI's per-version
           JSON API, or OSV). It is probed first: when it does not answer, nothing was audited,
           and that is never reported as a pass — ``--if-unreachable fail`` (the default) exits
           2; ``warn`` prints a banner saying the audit did NOT run and exits 0 (for a CI machine
           that can reach the package index but no advisory database). Any finding fails.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import urllib.request
from importlib.metadata import distribution, version

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


def probe(service: str, osv_url: str) -> str | None:
    """None when the service answers; otherwise why not."""
    if service == "pypi":
        url, data = f"https://pypi.org/pypi/pip/{version('pip')}/json", None
    else:
        url = osv_url
        data = json.dumps({"package": {"name": "pip", "ecosystem": "PyPI"}, "version": "23.0"}).encode()
    try:
        with urllib.request.urlopen(urllib.request.Request(url, data=data), timeout=20) as r:
            json.load(r)
    except Exception as exc:  # noqa: BLE001 - any failure means: not audited
        return f"{url}: {type(exc).__name__}: {exc}"
    return None


def audit(args: argparse.Namespace) -> int:
    current = lock()
    with open(args.lock) as f:
        if f.read() != current:
            print(f"make audit: note - .venv differs from {args.lock} (run 'make lock' to re-pin); "
                  f"auditing {args.lock}", file=sys.stderr)
    why = probe(args.service, args.osv_url)
    if why is not None:
        banner = (f"make audit: NOT AUDITED - the '{args.service}' vulnerability service does not "
                  f"answer from this machine ({why}). The locked dependencies were not checked. "
                  "Run `make audit` where it is reachable, or pick another: AUDIT_SERVICE=pypi|osv "
                  "(AUDIT_OSV_URL for an OSV mirror).")
        print("\n" + "!" * 78 + "\n" + banner + "\n" + "!" * 78, file=sys.stderr)
        return 0 if args.if_unreachable == "warn" else 2
    cmd = [sys.executable, "-m", "pip_audit", "-r", args.lock, "--no-deps", "--disable-pip",
           "--strict", "--progress-spinner", "off", "-s", args.service, "--osv-url", args.osv_url]
    for vuln in args.ignore:
        cmd += ["--ignore-vuln", vuln]
    code = subprocess.call(cmd)
    if code == 0:
        print(f"make audit: no known vulnerabilities in {args.lock} ({args.service})")
    return code


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
    args = parser.parse_args(argv)
    if args.command == "lock":
        sys.stdout.write(lock())
        return 0
    return audit(args)


if __name__ == "__main__":
    sys.exit(main())
