"""scripts/train_notebook.py: runs a notebook's parameters, defs, setup and train cells only, applies
the -p overrides after the parameters cell, and --skip leaves out the train cells that contain a text."""
import subprocess
import sys

from conftest import ROOT

NOTEBOOK = '''# %% tags=["parameters"]
OUT = "unset"
MODE = "default"

# %% tags=["defs"]
from pathlib import Path
def mark(name):
    Path(OUT, name).write_text(MODE)

# %%
mark("plot")  # an untagged cell: evaluation, not training

# %% tags=["train"]
mark("first_model")

# %% tags=["train"]
mark("second_model")
'''


def run(tmp_path, *args):
    source = tmp_path / "nb.py"
    source.write_text(NOTEBOOK)
    return subprocess.run([sys.executable, str(ROOT / "scripts" / "train_notebook.py"), str(source),
                           "-p", f"OUT={str(tmp_path)!r}", "-p", "MODE=job", *args],
                          capture_output=True, text=True, check=True)


def test_only_training_cells_run_with_the_overrides(tmp_path):
    run(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir() if p.suffix != ".py") == ["first_model", "second_model"]
    assert (tmp_path / "first_model").read_text() == "job"


def test_skip_leaves_out_the_train_cells_that_contain_the_text(tmp_path):
    done = run(tmp_path, "--skip", 'mark("second_model")')
    assert (tmp_path / "first_model").is_file() and not (tmp_path / "second_model").exists()
    assert "skipped a train cell" in done.stdout
