"""Copy the cell tags of each notebook's .py twin into the .ipynb (jupytext --sync keeps the
.ipynb's cell metadata, so a tag added in the .py would otherwise be lost)."""
import sys
from pathlib import Path

import jupytext
import nbformat


def copy_tags(py_path):
    text = jupytext.read(py_path)
    ipynb_path = Path(py_path).with_suffix(".ipynb")
    nb = nbformat.read(ipynb_path, as_version=4)
    code_text = [c for c in text.cells if c.cell_type == "code"]
    code_nb = [c for c in nb.cells if c.cell_type == "code"]
    if len(code_text) != len(code_nb):
        raise SystemExit(f"{ipynb_path}: {len(code_nb)} code cells, its twin {len(code_text)}: run jupytext --sync first")
    changed = 0
    for a, b in zip(code_text, code_nb):
        tags = a.metadata.get("tags", [])
        if b.metadata.get("tags", []) != tags:
            if tags:
                b.metadata["tags"] = tags
            else:
                b.metadata.pop("tags", None)
            changed += 1
    nbformat.write(nb, ipynb_path)
    print(f"{ipynb_path}: {changed} cells retagged")


if __name__ == "__main__":
    for path in sys.argv[1:]:
        copy_tags(path)
