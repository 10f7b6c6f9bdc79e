"""The documentation site and the packaging files agree with the code: every method has a family page with its
figure, every page is in the site's navigation, README links work on PyPI, and the citation matches the package."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest
from PIL import Image

import xvit

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
REPO_URL = "https://github.com/xvit-dev/xvit"


def _figures_module():
    spec = importlib.util.spec_from_file_location("method_figures", ROOT / "tools" / "method_figures.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_registered_method_has_one_family_page_with_its_figure():
    figures = _figures_module()
    in_families = [m for methods in figures.FAMILIES.values() for m in methods]
    assert len(in_families) == len(set(in_families)), "a method is listed in two families"
    assert sorted(in_families + list(figures.BASELINES)) == sorted(xvit.methods())
    for family, methods in figures.FAMILIES.items():
        page = (DOCS / "families" / f"{family}.md").read_text(encoding="utf-8")
        assert f"](../img/methods/{family}.png)" in page, f"{family}.md does not show its figure"
        assert (DOCS / "img" / "methods" / f"{family}.png").is_file(), f"run tools/method_figures.py --family {family}"
        for method in methods:
            assert f"`{method}`" in page, f"{family}.md does not describe {method}"
    overview = (DOCS / "families" / "index.md").read_text(encoding="utf-8")
    for baseline in figures.BASELINES:
        assert f"`{baseline}`" in overview


def _nav_pages(node) -> list[str]:
    if isinstance(node, str):
        return [node]
    if isinstance(node, dict):
        return [p for v in node.values() for p in _nav_pages(v)]
    return [p for item in node for p in _nav_pages(item)]


def test_every_docs_page_is_in_the_site_navigation():
    yaml = pytest.importorskip("yaml")
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text(encoding="utf-8"))
    nav = _nav_pages(config["nav"])
    pages = sorted(str(p.relative_to(DOCS)) for p in DOCS.rglob("*.md"))
    assert sorted(nav) == pages, "add new docs pages to the nav of mkdocs.yml (mkdocs build --strict refuses them)"


def test_readme_links_into_the_repository_are_absolute_and_point_at_files():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    for target in re.findall(r"\]\(([^)\s]+)\)", readme):
        if target.startswith(("http://", "https://", "mailto:")) and not target.startswith(REPO_URL):
            continue
        assert target.startswith(REPO_URL), (f"README link {target!r} is relative, so it breaks on PyPI: write it as "
                                            f"{REPO_URL}/blob/main/{target}")
        match = re.fullmatch(re.escape(REPO_URL) + r"/(?:blob|tree|raw)/main/([^#?]+)(?:#.*)?", target)
        if match:
            assert (ROOT / match.group(1)).exists(), f"README links to {target}, which is not in the repository"
    for image in re.findall(r"!\[[^\]]*\]\(([^)\s]+)\)", readme):
        assert image.startswith("https://raw.githubusercontent.com/xvit-dev/xvit/main/"), image
        assert (ROOT / image.removeprefix("https://raw.githubusercontent.com/xvit-dev/xvit/main/")).is_file(), image


def test_citation_and_license_match_the_package():
    yaml = pytest.importorskip("yaml")
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    citation = yaml.safe_load((ROOT / "CITATION.cff").read_text(encoding="utf-8"))
    assert citation["cff-version"] == "1.2.0"
    assert {"message", "title", "authors"} <= citation.keys()
    assert str(citation["version"]) == project["version"] == xvit.__version__
    assert citation["license"] == project["license"] == "MIT"
    assert project["license-files"] == ["LICENSE"]
    assert (ROOT / "LICENSE").read_text(encoding="utf-8").startswith("MIT License")
    changelog = (ROOT / "CHANGELOG.md").read_text(encoding="utf-8")
    assert "## [Unreleased]" in changelog and "keepachangelog.com" in changelog


def test_the_getting_started_example_runs(tmp_path, monkeypatch):
    page = (DOCS / "getting-started.md").read_text(encoding="utf-8")
    section = page.split("## The first explanation", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, flags=re.S).group(1)
    monkeypatch.chdir(tmp_path)
    exec(compile(code, "getting-started.md", "exec"), {})
    assert (tmp_path / "attnlrp.png").stat().st_size > 0


def test_the_figure_script_draws_a_family(tmp_path):
    path = _figures_module().draw_family("gradient-attention", 1, tmp_path)
    assert path == tmp_path / "gradient-attention.png"
    with Image.open(path) as image:
        assert image.mode == "P" and image.width > image.height  # palette PNG, one row of five panels
