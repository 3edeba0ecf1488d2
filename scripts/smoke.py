"""``make smoke``: every command the README and ``make help`` document, run from this clone.

CI runs it after ``make test`` (so ``.venv`` exists); it needs nothing else. Long commands run
in their quick mode:

- ``make lint``, ``make schemas CHECK=1``, the README's reliability table check, ``make help``,
  ``make install`` (again: must change nothing), ``churnwatch --help``;
- ``make run DEMO=0`` with its own CHURNWATCH_HOME, on a machine where port 8000 is taken (a
  stand-in server answers 418 there), then, against that stack, the README's
  "Try it by hand" block exactly as written, and its "Model" block (``generate`` with fewer
  customers, ``train``, ``model activate PATH``, ``model activate --default``; each switch is
  checked on ``/v1/status``). ``make model`` is left out: it rebuilds the shipped model;
- Ctrl-C (SIGTERM) of the stack: everything stops, stack.json is removed, the API is gone;
- ``make bench QUICK=1`` (fails on a lost or doubled event) and, in the background from the
  start, ``make soak QUICK=1`` (one minute, judged);
- at the end, ``git status`` must be what it was: quick modes commit nothing.

Prints one line per step with its time, and a table at the end; exit 1 if any step failed.
Logs: the printed work directory. SMOKE_CUSTOMERS (default 400) sizes the generated history.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
CLI = ".venv/bin/churnwatch"
CUSTOMERS = int(os.environ.get("SMOKE_CUSTOMERS", "400"))
FENCE = re.compile(r"^```([\w-]*)[ \t]*\n(.*?)^```", re.M | re.S)


@dataclass
class Result:
    name: str
    seconds: float
    ok: bool
    detail: str = ""


class Smoke:
    def __init__(self, work: Path):
        self.work = work
        self.results: list[Result] = []
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(("CHURNWATCH_", "BENCH_", "SOAK_"))}
        self.home = work / "home"
        self.env["CHURNWATCH_HOME"] = str(self.home)
        self.started = time.monotonic()
        self.stack: subprocess.Popen[bytes] | None = None
        self.soak: subprocess.Popen[bytes] | None = None
        self.squatter: ThreadingHTTPServer | None = None

    # running things ---------------------------------------------------------------------
    def log(self, name: str) -> Path:
        return self.work / (re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-") + ".log")

    def step(self, name: str, fn: Callable[[], str | None]) -> bool:
        t0 = time.monotonic()
        print(f"smoke: {name} ...", flush=True)
        try:
            detail = fn() or ""
            ok = True
        # a failed step is reported and the next steps still run (the report is the product)
        except Exception as exc:  # noqa: BLE001  top-level guard of one smoke step
            detail, ok = f"{type(exc).__name__}: {exc}", False
        result = Result(name, time.monotonic() - t0, ok, detail)
        self.results.append(result)
        print(f"smoke: {'ok  ' if ok else 'FAIL'} {name} ({result.seconds:.1f} s)"
              + (f" — {detail}" if detail else ""), flush=True)
        return ok

    def run(self, name: str, cmd: list[str] | str, *, timeout: float, cwd: Path = ROOT,
            env: dict[str, str] | None = None) -> str:
        """Run, log, and return stdout+stderr; raise with the log's tail on failure."""
        log = self.log(name)
        shell = isinstance(cmd, str)
        argv = ["bash", "-eo", "pipefail", "-c", cmd] if isinstance(cmd, str) else cmd
        try:
            proc = subprocess.run(argv,
                                  cwd=cwd, env=env or self.env, capture_output=True, text=True,
                                  timeout=timeout, stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired as exc:
            raise RuntimeError(f"did not finish within {timeout:g} s") from exc
        out = proc.stdout + proc.stderr
        log.write_text(f"$ {cmd if shell else ' '.join(cmd)}\n{out}")
        if proc.returncode != 0:
            tail = "\n".join("      | " + line for line in out.splitlines()[-25:])
            raise RuntimeError(f"exit {proc.returncode} (log: {log})\n{tail}")
        return out

    # the README -------------------------------------------------------------------------
    @staticmethod
    def readme_block(heading: str) -> str:
        text = (ROOT / "README.md").read_text()
        start = text.index(f"\n{heading}\n")
        for m in FENCE.finditer(text, start):
            if m.group(1) in ("sh", "bash", "shell"):
                return m.group(2)
        raise LookupError(f"no shell block after {heading!r} in README.md")

    def api(self) -> str:
        return str(json.loads((self.home / "stack.json").read_text())["api_url"])

    def wait_model(self, version: str, timeout: float = 20.0) -> None:
        """Until the stack's scorer reports ``version`` on /metrics, the API computes a
        point-in-time risk (``?as_of=``, scored by the API itself) with it and /v1/status
        names it."""
        info = json.loads((self.home / "stack.json").read_text())
        scorer_metrics = info["metrics_urls"][1]
        wanted = f'churnwatch_scorer_model_info{{version="{version}"}} 1.0'
        deadline = time.monotonic() + timeout
        scorer_ok, api_seen = False, None
        while time.monotonic() < deadline:
            try:
                scorer_ok = scorer_ok or wanted in httpx.get(scorer_metrics, timeout=3).text
                api_seen = httpx.get(f"{info['api_url']}/v1/customers/alice/risk",
                                     params={"as_of": "2026-06-30T00:00:00Z"},
                                     timeout=3).json().get("model_version")
            except (httpx.HTTPError, ValueError):
                pass
            if scorer_ok and api_seen == version:
                status = httpx.get(f"{info['api_url']}/v1/status", timeout=3).json()
                if status.get("model_version") == version:
                    return
                api_seen = f"{api_seen} (as_of), {status.get('model_version')} (/v1/status)"
            time.sleep(0.3)
        raise AssertionError(f"{timeout:g} s after `model activate`: scorer serves {version}: "
                             f"{scorer_ok}; the API answers with {api_seen!r}")

    # steps ------------------------------------------------------------------------------
    def start_soak(self) -> str:
        env = {**self.env, "BENCH_RESULTS": str(self.work / "soak-results")}
        self.soak = subprocess.Popen(["make", "soak", "QUICK=1"], cwd=ROOT, env=env,
                                     stdout=open(self.log("make soak QUICK=1"), "wb"),  # noqa: SIM115
                                     stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     start_new_session=True)
        return f"in the background, log {self.log('make soak QUICK=1')}"

    def wait_soak(self) -> str:
        assert self.soak is not None
        try:
            rc = self.soak.wait(240)
        except subprocess.TimeoutExpired as exc:
            raise RuntimeError("still running after 4 minutes") from exc
        text = self.log("make soak QUICK=1").read_text(errors="replace")
        verdict = next((line.strip() for line in text.splitlines() if line.startswith("soak ")
                        and ("PASS" in line or "FAIL" in line)), "no verdict")
        if rc != 0:
            tail = "\n".join("      | " + line for line in text.splitlines()[-25:])
            raise RuntimeError(f"exit {rc}: {verdict}\n{tail}")
        return verdict[:160]

    def help(self) -> str:
        out = re.sub(r"\x1b\[[0-9;]*m", "", self.run("make help", ["make", "help"], timeout=30))
        missing = [t for t in ("run", "test", "smoke", "lint", "bench", "soak", "schemas")
                   if not re.search(rf"\b{t}\b", out)]
        if missing:
            raise AssertionError(f"make help does not list {missing}")
        self.run("churnwatch --help", [CLI, "--help"], timeout=30)
        return ""

    def install_again(self) -> str:
        out = self.run("make install", ["make", "install"], timeout=300)
        if "pip install" in out:
            raise AssertionError("make install reinstalled on a second run (not idempotent)")
        return ""

    def take_port_8000(self) -> str:
        """A newcomer's machine where port 8000 is taken: something else answers there (418,
        "not churnwatch") while the stack runs, so a README command that assumed
        localhost:8000 instead of reading the address the stack chose fails loudly."""
        class NotUs(BaseHTTPRequestHandler):
            def _answer(self) -> None:
                body = b"not churnwatch: another program on port 8000\n"
                self.send_response(418)
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
            do_GET = do_POST = do_PUT = do_DELETE = _answer  # noqa: N815

            def log_message(self, *args: object) -> None:
                return None
        try:
            self.squatter = ThreadingHTTPServer(("127.0.0.1", 8000), NotUs)
        except OSError:
            with socket.socket() as probe:  # taken already: by what, does not matter
                if probe.connect_ex(("127.0.0.1", 8000)) == 0:
                    return "already taken on this machine"
            raise
        threading.Thread(target=self.squatter.serve_forever, daemon=True).start()
        return "held by a stand-in server answering 418"

    def stack_up(self) -> str:
        self.stack = subprocess.Popen(["make", "run", "DEMO=0"], cwd=ROOT, env=self.env,
                                      stdout=open(self.log("make run DEMO=0"), "wb"),  # noqa: SIM115
                                      stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                      start_new_session=True)
        deadline = time.monotonic() + 150
        while not (self.home / "stack.json").exists():
            if self.stack.poll() is not None:
                raise RuntimeError(f"`make run DEMO=0` exited {self.stack.returncode}; log "
                                   f"{self.log('make run DEMO=0')}")
            if time.monotonic() > deadline:
                raise RuntimeError("no stack.json after 150 s")
            time.sleep(0.2)
        banner = self.log("make run DEMO=0").read_text(errors="replace")
        if "Try it from another terminal" not in banner and "churnwatch is up" not in banner:
            time.sleep(1.0)  # the banner follows stack.json by a moment
        if self.squatter is not None and self.api().rstrip("/").endswith(":8000"):
            raise AssertionError(f"stack.json says {self.api()}, a port another server holds")
        return f"API at {self.api()}"

    def try_it_by_hand(self) -> str:
        """The block as written. Scoring is asynchronous: a reader typing it by hand gives the
        scorer a moment before the GETs, a script does not, so the whole block (idempotent:
        the same event ids) is run again until both reads answer, for up to 30 s."""
        deadline = time.monotonic() + 30
        runs = 0
        while True:
            runs += 1
            out = self.run("README: Try it by hand", self.readme_block("## Try it by hand"),
                           timeout=60)
            if '{"accepted":3}' not in out.replace(" ", ""):
                raise AssertionError(f"no {{\"accepted\":3}} in the output:\n{out[:500]}")
            if len(re.findall(r'"customer_id":"alice"', out)) >= 2:  # risk now, and as of then
                return f"{runs} run(s)"
            if time.monotonic() > deadline:
                raise AssertionError(f"alice's risk was not readable twice:\n{out[:800]}")
            time.sleep(1.0)

    def model_block(self) -> str:
        block = self.readme_block("## Model")
        (self.work / ".venv").symlink_to(ROOT / ".venv")  # the block says .venv/bin/churnwatch
        lines = [line.strip() for line in block.replace("\\\n", " ").splitlines()]
        ran = []
        for line in lines:
            cmd = line.split("#", 1)[0].strip() if " #" in line else line
            if not cmd or cmd.startswith("make model"):
                continue  # make model rebuilds the shipped model (minutes): not a smoke
            cmd = re.sub(r"--customers \d+", f"--customers {CUSTOMERS}", cmd)
            name = "README: " + " ".join(cmd.split()[:3]).replace(".venv/bin/", "")
            self.run(name, cmd, timeout=240, cwd=self.work)
            ran.append(cmd.split()[1] + (" " + cmd.split()[2] if cmd.split()[1] == "model" else ""))
            if "model activate" in cmd:
                if "--default" in cmd:
                    info = self.run("model info default", [CLI, "model", "info"], timeout=60)
                else:
                    artifact = cmd.split("activate", 1)[1].split()[0]
                    info = self.run("model info", [CLI, "model", "info", str(self.work / artifact)],
                                    timeout=60)
                self.wait_model(json.loads(info)["version"])
        if not any(r.startswith("train") for r in ran) or not any("activate" in r for r in ran):
            raise AssertionError(f"the Model block ran only {ran}")
        return f"ran {', '.join(ran)} ({CUSTOMERS} customers); skipped make model"

    def stack_down(self) -> str:
        assert self.stack is not None
        api = self.api()
        os.killpg(self.stack.pid, signal.SIGTERM)  # what Ctrl-C does to the make/up group
        try:
            self.stack.wait(60)
        except subprocess.TimeoutExpired as exc:
            raise RuntimeError("the stack did not stop within 60 s of SIGTERM") from exc
        if (self.home / "stack.json").exists():
            raise AssertionError("stack.json is still there after the stack stopped")
        try:
            httpx.get(f"{api}/health", timeout=2)
        except httpx.HTTPError:
            return ""
        raise AssertionError(f"something still answers at {api} after the stack stopped")

    def cleanup(self) -> None:
        if self.squatter is not None:
            self.squatter.shutdown()
            self.squatter.server_close()
        for proc in (self.stack, self.soak):
            if proc is not None and proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGTERM)
                    proc.wait(30)
                except (ProcessLookupError, subprocess.TimeoutExpired):
                    os.killpg(proc.pid, signal.SIGKILL)


def git_status() -> str | None:
    try:
        return subprocess.run(["git", "status", "--porcelain", "--untracked-files=all"], cwd=ROOT,
                              capture_output=True, text=True, check=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return None


def main() -> int:
    work = Path(tempfile.mkdtemp(prefix="churnwatch-smoke-"))
    print(f"smoke: logs in {work}", flush=True)
    before = git_status()
    s = Smoke(work)
    try:
        s.step("make soak QUICK=1 (start)", s.start_soak)
        s.step("make lint", lambda: s.run("make lint", ["make", "lint"], timeout=300) and None)
        s.step("make schemas CHECK=1",
               lambda: s.run("make schemas CHECK=1", ["make", "schemas", "CHECK=1"], timeout=120)
               and None)
        s.step("README reliability table is current",
               lambda: s.run("reliability --check", [".venv/bin/python", "-m", "bench.reliability",
                                                     "--check"], timeout=60) and None)
        s.step("make help, churnwatch --help", s.help)
        s.step("make install (again: nothing to do)", s.install_again)
        s.step("port 8000 taken (as on a busy machine)", s.take_port_8000)
        if s.step("make run DEMO=0", s.stack_up):
            s.step("README: Try it by hand", s.try_it_by_hand)
            s.step("README: Model (generate, train, model activate)", s.model_block)
            s.step("stop the stack (SIGTERM)", s.stack_down)
        def bench() -> str:
            out = s.run("make bench QUICK=1", ["make", "bench", "QUICK=1"], timeout=300,
                        env={**s.env, "BENCH_RESULTS": str(work / "bench-results")})
            return next((line for line in out.splitlines() if "doubled" in line), "")[:160]

        s.step("make bench QUICK=1", bench)
        s.step("make soak QUICK=1", s.wait_soak)

        def unchanged() -> str:
            after = git_status()
            if before is not None and after != before:
                raise AssertionError(f"the working tree changed:\n{after}")
            return "" if before is not None else "not a git checkout: not checked"

        s.step("nothing committed changed (git status)", unchanged)
    finally:
        s.cleanup()
    total = time.monotonic() - s.started
    width = max(len(r.name) for r in s.results)
    print("\nsmoke summary")
    for r in s.results:
        print(f"  {'ok  ' if r.ok else 'FAIL'}  {r.name:<{width}}  {r.seconds:6.1f} s")
    failed = [r for r in s.results if not r.ok]
    print(f"  {len(s.results) - len(failed)}/{len(s.results)} steps passed in {total:.0f} s; "
          f"logs in {work}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
