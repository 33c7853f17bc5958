"""Each notebook and its jupytext percent-format twin hold the same cells."""
import jupytext
import nbformat
import pytest

from conftest import NOTEBOOKS

RUN_OUTPUT_TAGS = {"injected-parameters", "run-summary"}


def cells(nb):
    # papermill's "injected-parameters" cell (what an executed run was given) and the "run-summary"
    # cell (scripts/stamp_notebooks.py) are run output, not source: the .py twin does not carry them.
    return [(c.cell_type, c.source.strip(), sorted(c.metadata.get("tags", []))) for c in nb.cells
            if not RUN_OUTPUT_TAGS & set(c.metadata.get("tags", []))]


@pytest.mark.parametrize("ipynb", sorted(NOTEBOOKS.glob("*.ipynb")), ids=lambda p: p.name)
def test_notebook_and_py_twin_are_in_sync(ipynb):
    twin = ipynb.with_suffix(".py")
    assert twin.is_file(), f"{twin.name} missing: run `jupytext --set-formats ipynb,py:percent {ipynb}`"
    assert cells(nbformat.read(ipynb, as_version=4)) == cells(jupytext.read(twin)), (
        f"{ipynb.name} and {twin.name} differ: run `make sync`")


def test_every_notebook_has_one_parameters_cell():
    for ipynb in NOTEBOOKS.glob("*.ipynb"):
        tagged = [c for c in nbformat.read(ipynb, as_version=4).cells if "parameters" in c.metadata.get("tags", [])]
        assert len(tagged) == 1, ipynb.name
