"""The docs a clone has: README.md stays the front door, and every relative link in it and in
docs/ (a file, an image, a heading of another page) resolves inside the repository."""

from __future__ import annotations

import configparser
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")


def anchors(page: Path) -> set[str]:
    """GitHub's anchors of a page's headings: lower case, punctuation dropped, spaces as hyphens."""
    headings = re.findall(r"^#+\s+(.+?)\s*$", page.read_text(), re.MULTILINE)
    return {re.sub(r"[^\w\- ]", "", h.lower()).replace(" ", "-") for h in headings}


def relative_links(page: Path) -> list[str]:
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.DOTALL)  # code blocks hold no links
    return [t for t in LINK.findall(text) if not re.match(r"[a-z]+:", t)]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_relative_link_resolves_inside_the_repository(page: Path):
    for target in relative_links(page):
        path, _, anchor = target.partition("#")
        resolved = (page.parent / path).resolve() if path else page
        assert resolved.is_relative_to(ROOT), f"{page.name}: {target} leaves the repository"
        assert resolved.exists(), f"{page.name}: {target} does not exist"
        if anchor and resolved.suffix == ".md":
            assert anchor in anchors(resolved), f"{page.name}: {target}: no such heading"


def test_the_checks_see_links_and_would_see_a_broken_one(tmp_path):
    assert len(relative_links(ROOT / "README.md")) >= 5
    page = tmp_path / "page.md"
    page.write_text("# A page\n[ok](#a-page) [gone](missing.md) ![shot](img.png)\n```\n[not a link](x)\n```\n")
    assert relative_links(page) == ["#a-page", "missing.md", "img.png"] and anchors(page) == {"a-page"}


def test_the_readme_is_a_front_door():
    assert len((ROOT / "README.md").read_text().splitlines()) <= 150


def test_the_jetson_install_names_every_dependency_setup_cfg_does():
    """docs/jetson.md installs the dependencies by name (so pip keeps the GPU build of ONNX
    Runtime): its list must follow setup.cfg's, less what earlier steps install, plus the jetson extra."""
    config = configparser.ConfigParser()
    config.read(ROOT / "setup.cfg")
    options = config["options"]

    def names(block: str) -> set[str]:
        lines = [line.split("#")[0].split(";")[0].strip() for line in block.splitlines()]
        return {re.split(r"[=<>~!\[ ]", line)[0].lower() for line in lines if line}

    wanted = names(options["install_requires"]) | names(config["options.extras_require"]["jetson"])
    wanted -= {"onnxruntime", "onnxruntime-genai", "piper-tts", "pycuda", "llama-cpp-python"}  # by earlier steps
    step = re.search(r"pip install numpy .*?```", (ROOT / "docs" / "jetson.md").read_text(), re.DOTALL)
    assert step, "docs/jetson.md: the install step by name is gone"
    listed = {re.split(r"[=<>]", word)[0].lower() for word in step[0].replace("\\", " ").split()[2:-1]}
    assert wanted <= listed, f"docs/jetson.md misses {sorted(wanted - listed)}"
