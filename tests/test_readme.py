"""The README's results table is generated from results/*.json and must be current."""
import subprocess
import sys

from conftest import ROOT


def test_readme_results_table_is_current():
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "readme_results.py"), "--check"],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_readme_starts_with_the_two_commands():
    head = (ROOT / "README.md").read_text().split("\n## ")[0]
    assert "make run" in head and "make test" in head
