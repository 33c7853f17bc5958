"""Shared helpers: load a notebook's own definitions, find the offline data, run notebooks."""
import os
import types
from pathlib import Path

import nbformat
import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
# HW6_NOTEBOOKS points the tests at other copies of the notebooks (scripts/mutate.py uses it)
NOTEBOOKS = Path(os.environ.get("HW6_NOTEBOOKS") or ROOT / "notebooks")
Q1 = NOTEBOOKS / "01_controlvae_dsprites.ipynb"
Q2 = NOTEBOOKS / "02_gans_mnist.ipynb"
KERNEL = os.environ.get("HW6_KERNEL", "hw6")


def read_notebook(path):
    """An .ipynb, or a jupytext percent-format .py twin read as a notebook."""
    if Path(path).suffix == ".py":
        import jupytext
        return jupytext.read(path)
    return nbformat.read(path, as_version=4)


def tagged_sources(path, tag):
    nb = read_notebook(path)
    return [c.source for c in nb.cells if c.cell_type == "code" and tag in c.metadata.get("tags", [])]


def load_definitions(path, **overrides):
    """Execute the notebook's `parameters` and `defs` cells (only those) into a fresh namespace.

    This tests the notebook's own code, not a copy: the cells are read from the .ipynb itself.
    """
    ns = types.ModuleType(f"nb_{path.stem}")
    ns.__dict__["__name__"] = ns.__name__
    for source in tagged_sources(path, "parameters"):
        exec(compile(source, f"{path.name}:parameters", "exec"), ns.__dict__)
    ns.__dict__.update(overrides)
    for i, source in enumerate(tagged_sources(path, "defs")):
        exec(compile(source, f"{path.name}:defs[{i}]", "exec"), ns.__dict__)
    return ns


def shared_data_root():
    """The offline data root ($HW6_DATA_ROOT, else ../shared/data beside the repo), or None."""
    for candidate in (os.environ.get("HW6_DATA_ROOT"), ROOT.parent / "shared" / "data"):
        if candidate and Path(candidate).is_dir():
            return Path(candidate)
    return None


def run_notebook(path, tmp_path, **parameters):
    """Execute a notebook end to end with papermill in tmp_path; returns the executed notebook."""
    import papermill as pm

    if Path(path).suffix == ".py":  # papermill runs .ipynb files: write the twin as one first
        import jupytext
        source = tmp_path / f"{path.stem}_source.ipynb"
        jupytext.write(jupytext.read(path), source)
        path = source
    out = tmp_path / path.name
    pm.execute_notebook(str(path), str(out), parameters=parameters, kernel_name=KERNEL, cwd=str(tmp_path),
                        progress_bar=False)
    return nbformat.read(out, as_version=4)


def image_outputs(nb):
    """How many images an executed notebook shows."""
    return sum("image/png" in o.get("data", {}) for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))


def outputs_text(nb):
    """Everything an executed notebook printed."""
    return "\n".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))


@pytest.fixture(scope="session")
def q1():
    return load_definitions(Q1)


def fake_dsprites_subset(seed=0, n=18432):
    """A binary (n, 64, 64) array in the course file's format and index order (shape*6144 +
    scale*1024 + posX*32 + posY): a square, a disc or a diamond whose size grows with the scale
    class, centred where dSprites puts posX (column) and posY (row). Not dSprites' content.
    `seed` jitters the sizes so that two calls can differ."""
    grid = np.stack(np.meshgrid(np.arange(3), np.arange(6), np.arange(32), np.arange(32), indexing="ij"), -1)
    grid = grid.reshape(-1, 4)[:n]
    radius = 2.5 + 0.8 * grid[:, 1] + np.random.default_rng(seed).uniform(0, 0.3, len(grid))
    cx, cy = 15.5 + 32 * grid[:, 2] / 31, 15.5 + 32 * grid[:, 3] / 31
    imgs = np.zeros((len(grid), 64, 64), dtype=np.uint8)
    rows, cols = np.arange(64)[None, :, None], np.arange(64)[None, None, :]
    for start in range(0, len(grid), 2048):
        s = slice(start, start + 2048)
        dy, dx = np.abs(rows - cy[s, None, None]), np.abs(cols - cx[s, None, None])
        r, shape = radius[s, None, None], grid[s, 0, None, None]
        inside = np.where(shape == 0, np.maximum(dx, dy) <= r,
                          np.where(shape == 1, dx ** 2 + dy ** 2 <= (1.2 * r) ** 2, dx + dy <= 1.4 * r))
        imgs[s] = inside
    return imgs


@pytest.fixture(scope="session")
def q2():
    return load_definitions(Q2)


def write_idx(path, array, magic):
    """Write an MNIST IDX file (big-endian header, uint8 payload)."""
    header = np.array([magic, *array.shape], dtype=">i4").tobytes()
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def fake_mnist(root, n_train=512, n_test=128, seed=0):
    """A tiny MNIST in torchvision's raw layout: blurry random strokes, labels 0-9."""
    rng = np.random.default_rng(seed)
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        images = np.zeros((n, 28, 28), dtype=np.uint8)
        rows = rng.integers(6, 22, (n, 2))
        images[np.arange(n), rows[:, 0], 4:24] = 255
        images[np.arange(n)[:, None], 4:24, rows[:, 1:2]] = 255
        write_idx(raw / f"{prefix}-images-idx3-ubyte", images, 2051)
        write_idx(raw / f"{prefix}-labels-idx1-ubyte", rng.integers(0, 10, n), 2049)
    return root


def rendered_by_scripts(key, results):
    """The README rows and the notebook's run summary that scripts/ make from a results JSON."""
    import sys
    sys.path.insert(0, str(ROOT / "scripts"))
    import readme_results
    import stamp_notebooks
    rows = list(getattr(readme_results, f"{key}_rows")(results))
    return rows, getattr(stamp_notebooks, f"{key}_summary")(results)
