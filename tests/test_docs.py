"""The front page and the manual: README.md stays a front page whose test command is what CI runs, and the docs
site under docs/ builds with `mkdocs build --strict` (a broken link or anchor fails it)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT

README = ROOT / "README.md"
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def _readme_commands() -> list[str]:
    """The shell commands of the README's "Two commands" section, in order."""
    section = README.read_text().split("## Two commands", 1)[1].split("\n## ", 1)[0]
    return [block.strip() for block in re.findall(r"```bash\n(.*?)```", section, re.S)]


def _github_slug(heading: str) -> str:
    """The anchor GitHub gives a heading: lower case, punctuation dropped, spaces as hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_the_docs_build_strictly(tmp_path: Path) -> None:
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}  # Material's notice about its successor, printed on every build
    build = ["build", "--strict", "--config-file", str(ROOT / "mkdocs.yml"), "--site-dir", str(tmp_path / "site")]
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", *build],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert (tmp_path / "site" / "index.html").exists()


def test_the_readme_is_a_front_page_of_at_most_300_lines() -> None:
    assert len(README.read_text().splitlines()) <= 300


def test_the_readme_test_command_is_what_ci_runs() -> None:
    run, test = _readme_commands()
    assert "maker hanoi" in run
    ci = (ROOT / ".ci" / "run").read_text().strip().splitlines()[-1]
    assert ci == test


def test_every_relative_link_in_the_readme_reaches_a_file_and_its_heading() -> None:
    for target in LINK.findall(README.read_text()):
        if re.match(r"[a-z]+:", target):
            continue
        path, _, anchor = target.partition("#")
        assert (ROOT / path).exists(), f"README links to {path}, which does not exist"
        if anchor:
            headings = re.findall(r"^#{1,6} (.+)$", (ROOT / path).read_text(), re.M)
            assert anchor in {_github_slug(h) for h in headings}, f"README links to {target}: no such heading"
