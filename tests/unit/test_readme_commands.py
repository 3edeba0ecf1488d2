"""The README's shell blocks name only commands that exist (issue 21), and its links stay inside
the repository and work on any port (issue 18).

Every fenced ``sh``/``bash``/``shell`` block of README.md is split into commands the way a
shell would (quotes, ``&&``, ``;``, ``|``, ``$(...)``, line continuations, comments). A
``make`` command must name targets the Makefile defines; a ``churnwatch`` command must be
accepted by the real argument parser (subcommand and options) and be spelled
``.venv/bin/churnwatch``, since ``make install`` does not put it on PATH. `make smoke`
then runs the README's blocks for real.
"""

from __future__ import annotations

import contextlib
import io
import re
import shlex
from pathlib import Path

import pytest

from services.cli.main import _parser

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
FENCE = re.compile(r"^```([\w-]*)[ \t]*\n(.*?)^```", re.M | re.S)
SHELL_LANGS = {"sh", "bash", "shell", "console"}
PUNCT = ";&|()<>\n"
ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")
CHURNWATCH = (".venv/bin/churnwatch", "churnwatch")


def make_targets(makefile: Path = ROOT / "Makefile") -> set[str]:
    targets: set[str] = set()
    for line in makefile.read_text().splitlines():
        m = re.match(r"^([A-Za-z0-9_.-]+(?:\s+[A-Za-z0-9_.-]+)*)\s*:(?!=)", line)
        if m and not line.startswith("."):
            targets.update(m.group(1).split())
    return targets


def shell_blocks(markdown: str) -> list[str]:
    return [body for lang, body in FENCE.findall(markdown) if lang.lower() in SHELL_LANGS]


def strip_comments(block: str) -> str:
    """Drop shell comments (a word starting with # outside quotes, to the end of its line)."""
    out: list[str] = []
    quote: str | None = None
    i = 0
    while i < len(block):
        c = block[i]
        if quote:
            if c == "\\" and quote == '"' and i + 1 < len(block):
                out += [c, block[i + 1]]
                i += 2
                continue
            if c == quote:
                quote = None
        elif c in "'\"":
            quote = c
        elif c == "#" and (not out or out[-1] in " \t\n;&|("):
            while i < len(block) and block[i] != "\n":
                i += 1
            continue
        out.append(c)
        i += 1
    return "".join(out)


def commands(block: str) -> list[list[str]]:
    """The simple commands of a shell snippet, each as its words (assignments dropped)."""
    text = strip_comments(block.replace("\\\n", " "))
    lexer = shlex.shlex(text, posix=True, punctuation_chars=PUNCT)
    lexer.whitespace = " \t\r"
    lexer.commenters = ""
    lexer.wordchars += "#$=.-/:{}[],*?+@%^~!"
    out: list[list[str]] = []
    current: list[str] = []
    for token in lexer:
        if token and all(c in PUNCT for c in token):
            if current:
                out.append(current)
            current = []
            continue
        if token == "$":  # the "$" of "$(...)": the command inside follows "("
            continue
        if not current and ASSIGNMENT.match(token):
            continue  # VAR=value before a command
        current.append(token)
    if current:
        out.append(current)
    return out


def problems(markdown: str, targets: set[str], *, require_venv_path: bool = True) -> list[str]:
    found = []
    parser = _parser()
    for block in shell_blocks(markdown):
        for words in commands(block):
            cmd, args = words[0], words[1:]
            if cmd == "make":
                for arg in args:
                    if not arg.startswith("-") and not ASSIGNMENT.match(arg) and arg not in targets:
                        found.append(f"`make {' '.join(args)}`: no target {arg!r} in the Makefile")
            elif cmd in CHURNWATCH or cmd.endswith("/churnwatch"):
                if require_venv_path and cmd != ".venv/bin/churnwatch":
                    found.append(f"`{' '.join(words)}`: `make install` puts churnwatch at "
                                 ".venv/bin/churnwatch, not on PATH; spell it so")
                err = io.StringIO()
                try:
                    with contextlib.redirect_stderr(err):
                        parser.parse_args(args)
                except SystemExit:
                    last = (err.getvalue().strip().splitlines() or ["?"])[-1]
                    found.append(f"`churnwatch {' '.join(args)}`: {last}")
    return found


def test_every_readme_shell_command_exists() -> None:
    text = README.read_text()
    assert shell_blocks(text), "README.md has no fenced shell blocks?"
    assert problems(text, make_targets()) == []


def test_inline_make_commands_in_readme_and_contract_name_real_targets() -> None:
    targets = make_targets()
    for doc in (README, ROOT / "docs" / "contract.md"):
        for span in re.findall(r"`make ([^`]+)`", doc.read_text()):
            for arg in span.split():
                if ASSIGNMENT.match(arg) or arg.startswith("-"):
                    continue
                assert arg in targets, f"{doc.name}: `make {span}` names no target {arg!r}"


def test_the_checker_catches_what_does_not_exist() -> None:
    targets = make_targets()
    bad = "\n".join([
        "```sh",
        "make run DEMO=0 && make no-such-target",
        ".venv/bin/churnwatch no-such-command --x",
        "API=$(.venv/bin/churnwatch stack api_url)   # fine",
        "churnwatch up   # not on PATH",
        ".venv/bin/churnwatch generate --out h.ndjson \\",
        "  --no-such-option 1",
        "```",
    ])
    found = problems(bad, targets)
    assert any("no-such-target" in p for p in found), found
    assert any("no-such-command" in p for p in found), found
    assert any("not on PATH" in p for p in found), found
    assert any("--no-such-option" in p for p in found), found
    assert len(found) == 4, found
    assert problems("```sh\nmake lint   # make no-such-target in a comment\n```", targets) == []


def test_commands_split_like_a_shell() -> None:
    block = ("API=$(.venv/bin/churnwatch stack api_url)\n"
             "curl -s -XPOST \"$API/v1/events\" -d '[\n {\"a\": 1}]'\n"
             "# {\"accepted\":3}\n"
             "make bench QUICK=1; make lint | tee x   # note\n")
    assert commands(block) == [
        [".venv/bin/churnwatch", "stack", "api_url"],
        ["curl", "-s", "-XPOST", "$API/v1/events", "-d", '[\n {"a": 1}]'],
        ["make", "bench", "QUICK=1"], ["make", "lint"], ["tee", "x"],
    ]


@pytest.mark.parametrize("needle", ["localhost:8000", "127.0.0.1:8000"])
def test_readme_never_assumes_port_8000(needle: str) -> None:
    assert needle not in README.read_text(), f"the API may be on another port: use $API ({needle})"


def test_readme_and_contract_links_stay_inside_the_repository() -> None:
    for doc in (README, ROOT / "docs" / "contract.md"):
        text = doc.read_text()
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            if re.match(r"^[a-z]+://|^#|^mailto:", target):
                continue
            path = (doc.parent / target.split("#")[0]).resolve()
            assert path.is_relative_to(ROOT), f"{doc.name} links outside the repository: {target}"
            assert path.exists(), f"{doc.name} links to a missing file: {target}"
    assert "](../" not in README.read_text()
    assert "docs/contract.md" in README.read_text()
