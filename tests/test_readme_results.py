"""README's results section is generated from the committed metrics files, never typed by hand."""

from pathlib import Path

import pytest

from shiftlab.errors import ShiftlabError
from shiftlab.train import report


def test_readme_results_section_equals_the_committed_run(repo_root):
    text = Path(repo_root, "README.md").read_text(encoding="utf-8")
    assert report.README_START in text and report.README_END in text
    block = text.split(report.README_START, 1)[1].split(report.README_END, 1)[0]
    # the block `shiftlab report --readme README.md` writes from eval/*/results.json (committed)
    assert block.strip() == report.results_block(repo_root).strip()
    assert "no measurable effect" not in block  # the old three-verdict wording is gone


def test_update_readme_rewrites_only_the_marked_block(tmp_path, repo_root):
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{report.README_START}\nstale numbers\n{report.README_END}\noutro\n", encoding="utf-8")
    assert report.update_readme(readme, repo_root) is True
    text = readme.read_text(encoding="utf-8")
    assert text.startswith("intro\n") and text.endswith("outro\n") and "stale numbers" not in text
    assert report.update_readme(readme, repo_root) is False  # idempotent
    (tmp_path / "NO.md").write_text("no markers\n")
    with pytest.raises(ShiftlabError, match="no results markers"):
        report.update_readme(tmp_path / "NO.md", repo_root)
