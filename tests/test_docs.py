"""The README and docs/ point at things that exist: every relative link resolves, and every
repository path, recipe, config, script, make target and subcommand they name is real."""

import re
from pathlib import Path

import pytest

from rewardbridge.cli import build_parser

REPO = Path(__file__).resolve().parent.parent
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"```(\w*)\n(.*?)```", re.S)
# Paths into the repository, as the pages write them (inline or in code blocks).
REPO_PATH = re.compile(r"(?<![\w./-])((?:recipes|configs|launch|benchmarks|tests|docs|src)/[\w./-]*[\w])(?:::(\w+))?")


def test_there_are_pages():
    assert len(PAGES) >= 10 and all(page.is_file() for page in PAGES)


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_relative_links_resolve(page):
    text = page.read_text()
    for target in LINK.findall(text):
        if re.match(r"^[a-z]+://|^mailto:", target):
            continue
        path = target.split("#", 1)[0]
        if path:
            # GitHub resolves a relative link against the page's own folder.
            assert (page.parent / path).exists(), f"{page.name}: link {target!r} points at nothing"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_repository_paths_exist(page):
    text = page.read_text()
    for path, test_name in REPO_PATH.findall(text):
        if "<" in path or "*" in path:
            continue
        where = REPO / path
        assert where.exists(), f"{page.name} names {path}, which does not exist"
        if test_name:  # tests/test_x.py::test_name: the test itself
            assert re.search(rf"def {test_name}\b", where.read_text()), f"{page.name} names {path}::{test_name}, which is not there"


def shell_lines(page: Path):
    for language, block in FENCE.findall(page.read_text()):
        if language in ("bash", "sh", "shell", "console"):
            for line in block.splitlines():
                line = line.split("#", 1)[0].strip()
                if line:
                    yield line


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_shell_blocks_name_real_commands(page):
    makefile = (REPO / "Makefile").read_text()
    targets = set(re.findall(r"^([\w-]+):", makefile, re.M))
    subcommands = set(build_parser()._subparsers._group_actions[0].choices)
    for line in shell_lines(page):
        for target in re.findall(r"(?:^|&&\s*)make\s+([\w-]+)", line):
            assert target in targets, f"{page.name}: `make {target}` is not a Makefile target"
        for command in re.findall(r"(?:^|\s|/)rewardbridge(?:\.cli)?\s+(?:--debug\s+)?([a-z]+)", line):
            assert command in subcommands, f"{page.name}: `rewardbridge {command}` is not a subcommand"
        for path, _ in REPO_PATH.findall(line):
            if "<" not in path:
                assert (REPO / path).exists(), f"{page.name}: {line!r} names {path}, which does not exist"
