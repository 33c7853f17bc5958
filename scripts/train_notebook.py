"""Run a notebook's training only, as a background job that later sessions resume.

Executes the cells tagged `parameters`, then the overrides given with -p, then every cell tagged
`defs`, `setup` or `train`, in the notebook's order, in the notebook's folder. Plots and evaluation
are left to the notebook's own top-to-bottom execution, which then finds every model trained
(its checkpoints) and trains nothing more.

    setsid nohup .venv/bin/python scripts/train_notebook.py notebooks/01_controlvae_dsprites.ipynb \
        -p PROFILE cpu > logs/q1_train.log 2>&1 &

--skip TEXT leaves out the `train` cells whose source contains TEXT, so that two jobs can train
different models of one notebook at once (one core each), e.g. Q2's WGAN in one job and its SSGAN
in another; each model has its own checkpoint, and a model already finished is only read back.
"""
import argparse
import ast
import os
import sys
import time
import types
from pathlib import Path

import jupytext

TAGS = ("defs", "setup", "train")


def parse_override(text):
    name, _, value = text.partition("=")
    if not value:
        raise SystemExit(f"-p expects NAME=VALUE, got {text!r}")
    try:
        return name, ast.literal_eval(value)
    except (ValueError, SyntaxError):
        return name, value  # a bare string


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("notebook", type=Path)
    parser.add_argument("-p", dest="overrides", action="append", default=[], metavar="NAME=VALUE")
    parser.add_argument("--skip", action="append", default=[], metavar="TEXT",
                        help="leave out the train cells whose source contains TEXT (repeatable)")
    args = parser.parse_args()
    os.environ.setdefault("MPLBACKEND", "Agg")
    nb = jupytext.read(args.notebook)  # an .ipynb or its percent-format .py twin
    os.chdir(args.notebook.resolve().parent)
    ns = types.ModuleType("training_job").__dict__
    started = time.time()
    for cell in nb.cells:
        tags = cell.metadata.get("tags", [])
        if cell.cell_type != "code" or not (set(tags) & {"parameters", *TAGS}):
            continue
        skipped = [text for text in args.skip if "train" in tags and text in cell.source]
        if skipped:
            print(f"skipped a train cell (it contains {skipped[0]!r})")
            continue
        exec(compile(cell.source, f"{args.notebook.name}:{tags[0]}", "exec"), ns)
        if "parameters" in tags:
            ns.update(parse_override(o) for o in args.overrides)
        sys.stdout.flush()
    print(f"training job finished in {(time.time() - started) / 3600:.2f} h")


if __name__ == "__main__":
    main()
