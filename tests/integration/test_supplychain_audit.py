"""`make audit` (scripts/supplychain.py) where the vulnerability service cannot be used: one
line saying NOT AUDITED and why, exit 2 (0 with AUDIT_IF_UNREACHABLE=warn), never a traceback,
a hang or a pass; and where it can, findings fail and a clean lock passes.

The script runs as `make audit` runs it (a child process, real pip-audit). The services are
real HTTP servers on loopback: an OSV-protocol server the test fills with advisories, one that
fails mid-run, a port nobody listens on and a socket that never answers. Nothing here needs
the network (the one DNS lookup is of a name under .invalid, which never resolves).
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from scripts.supplychain import judge
from services.common.embedded import free_port
from tests.peers import LoopbackHttp

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "supplychain.py"
PINS = {"idna": "3.7", "requests": "2.31.0", "urllib3": "2.2.1"}


class Osv(LoopbackHttp):
    """The OSV query API (``POST /v1/query``) with the advisories the test gives it; after
    ``fail_after`` answers it answers 500 (a service failing mid-run)."""

    path = "/v1/query"

    def __init__(self, vulns: dict[str, list[dict[str, Any]]] | None = None,
                 fail_after: int | None = None):
        super().__init__()
        self.vulns = vulns or {}
        self.fail_after = fail_after
        self.queries: list[str] = []

    async def _handle(self, request: web.Request) -> web.Response:
        query = await request.json()
        self.queries.append(query["package"]["name"])
        if self.fail_after is not None and len(self.queries) > self.fail_after:
            return web.Response(status=500, text="advisory database unavailable")
        found = self.vulns.get(query["package"]["name"])
        return web.json_response({"vulns": found} if found else {})


def advisory(package: str, ghsa: str, cve: str, fixed: str) -> dict[str, Any]:
    return {"id": ghsa, "aliases": [cve], "summary": f"a flaw in {package}",
            "affected": [{"package": {"name": package, "ecosystem": "PyPI"},
                          "ranges": [{"type": "ECOSYSTEM",
                                      "events": [{"introduced": "0"}, {"fixed": fixed}]}]}]}


@pytest.fixture
def lock(tmp_path: Path) -> Path:
    path = tmp_path / "requirements.lock"
    path.write_text("# a lock file of the test's own\n"
                    + "".join(f"{n}=={v}\n" for n, v in PINS.items()))
    return path


@pytest.fixture
def silent() -> Iterator[str]:
    """A port that accepts connections (the kernel's backlog) and never answers."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(8)
        yield f"http://127.0.0.1:{sock.getsockname()[1]}/v1/query"


async def run_audit(lock: Path, *args: str, python: tuple[str, ...] = (sys.executable,),
                    within_s: float = 120) -> tuple[int, str, list[str]]:
    """(exit code, stdout, stderr lines) of the audit as `make audit` runs it."""
    proc = await asyncio.create_subprocess_exec(
        *python, str(SCRIPT), "audit", "--lock", str(lock), *args, cwd=ROOT,
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), within_s)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode().splitlines()


def the_line(err: list[str]) -> str:
    """The one NOT AUDITED line; the only other line allowed is the lock-vs-.venv note."""
    lines = [line for line in err if not line.startswith("make audit: note - ")]
    assert len(lines) == 1 and lines[0].startswith("make audit: NOT AUDITED - "), err
    return lines[0]


@pytest.mark.parametrize("where, why", [
    ("refused", "127.0.0.1 refused the connection"),
    ("silent", "no answer from 127.0.0.1 within 1 s"),
    ("unresolvable", "cannot resolve 'osv.invalid'"),
])
async def test_an_unusable_service_is_one_line_and_never_a_pass(lock: Path, silent: str,
                                                                where: str, why: str) -> None:
    url = {"refused": f"http://127.0.0.1:{free_port()}/v1/query", "silent": silent,
           "unresolvable": "http://osv.invalid/v1/query"}[where]
    args = ("--service", "osv", "--osv-url", url, "--timeout", "1")
    code, out, err = await run_audit(lock, *args, within_s=30)
    line = the_line(err)
    assert code == 2 and out == "", (code, out, err)
    assert why in line and f"so no package of {lock} was checked" in line, line
    assert "AUDIT_SERVICE=pypi|osv" in line, line  # what to do about it
    assert not any("Traceback" in x for x in err)

    code, out, err = await run_audit(lock, *args, "--if-unreachable", "warn", within_s=30)
    assert code == 0 and out == "" and the_line(err).endswith(
        "(AUDIT_IF_UNREACHABLE=warn: exit 0 all the same)"), (code, err)


async def test_a_service_failing_mid_run_is_not_audited(lock: Path) -> None:
    async with Osv(fail_after=2) as osv:  # the probe and one package, then HTTP 500
        code, out, err = await run_audit(lock, "--service", "osv", "--osv-url", osv.url)
    line = the_line(err)
    assert code == 2 and "pip-audit stopped before it had checked every package" in line, err
    assert "500 Server Error" in line, line  # what stopped it, from inside its traceback
    assert len(line) < 1000 and not any("Traceback" in x for x in err), err
    assert "no known vulnerabilities" not in out


async def test_a_finding_fails_naming_it_and_a_clean_lock_passes(lock: Path) -> None:
    osv_vulns = {"requests": [advisory("requests", "GHSA-test-0001", "CVE-2099-0001", "2.32.0")]}
    async with Osv(osv_vulns) as osv:
        args = ("--service", "osv", "--osv-url", osv.url)
        code, out, err = await run_audit(lock, *args)
        assert code == 1, (code, out, err)
        assert out.splitlines() == [
            "requests==2.31.0: CVE-2099-0001 (GHSA-test-0001); fixed in 2.32.0"], out
        assert any(x.startswith("make audit: FAILED - 1 known vulnerability in 1 of the 3 "
                                "packages") for x in err), err
        assert sorted(osv.queries[1:]) == sorted(PINS)  # the probe, then every locked package

        # an advisory ignored (with its reason, in the Makefile) no longer fails
        code, out, err = await run_audit(lock, *args, "--ignore", "GHSA-test-0001")
        assert code == 0 and out.strip() == \
            f"make audit: no known vulnerabilities in the 3 packages of {lock} (osv)", (out, err)


async def test_without_pip_audit_it_says_to_run_make_install(lock: Path) -> None:
    # -S: this interpreter without its site-packages, so without pip-audit
    code, out, err = await run_audit(lock, python=(sys.executable, "-S"), within_s=30)
    line = the_line(err)
    assert code == 2 and "pip-audit is not installed" in line and "make install" in line, err


def test_packages_the_service_could_not_check_make_it_incomplete(lock: Path) -> None:
    args = argparse.Namespace(lock=str(lock), service="pypi", if_unreachable="fail")
    deps: list[dict[str, Any]] = [{"name": "idna", "version": "3.7", "vulns": []},
            {"name": "requests", "skip_reason": "Dependency not found on PyPI and could not be "
                                                "audited: requests (2.31.0)\n"}]
    assert judge(args, deps) == 2
    found = [*deps, {"name": "urllib3", "version": "2.2.1",
                     "vulns": [{"id": "PYSEC-0", "fix_versions": []}]}]
    assert judge(args, found) == 1  # a finding fails whatever else
    assert judge(args, deps[:1]) == 0


def test_the_incomplete_audit_says_so(lock: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = argparse.Namespace(lock=str(lock), service="pypi", if_unreachable="warn")
    assert judge(args, [{"name": "idna", "skip_reason": "not found"},
                        {"name": "requests", "version": "2.31.0", "vulns": []}]) == 0
    line = the_line(capsys.readouterr().err.splitlines())
    assert f"1 of the 2 packages of {lock} could not be checked (idna: not found)" in line
