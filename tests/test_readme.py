"""Generated summaries are current: the README's results table and each executed notebook's run
summary both come from results/*.json."""
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


def test_executed_notebooks_open_with_their_run_summary():
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "stamp_notebooks.py"), "--check"],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
