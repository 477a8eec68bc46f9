"""The template's documentation site builds without warnings."""

import subprocess
import sys
from pathlib import Path

from projects import TEMPLATE


def test_docs_build_strictly(tmp_path):
    mkdocs = Path(sys.executable).parent / "mkdocs"
    result = subprocess.run(
        [mkdocs, "build", "--strict", "--site-dir", tmp_path / "site"],
        cwd=TEMPLATE,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    for page in ("index.html", "questions/index.html", "layout/index.html", "own-data/index.html"):
        assert (tmp_path / "site" / page).is_file()
