"""Put a "this run" summary at the top of each executed notebook, from its results JSON.

Usage: python3 scripts/stamp_notebooks.py [--check]
Graders read the saved notebook from the top; the wall time is only known at the end of a run, so
after `make run` this inserts (or replaces) a markdown cell tagged `run-summary` right after the
title: profile, device, data source and size, FID sample counts, headline numbers and wall time,
all read from results/q1.json / results/q2.json. The .py twins do not carry it (it is run output).
With --check, exits 1 when a notebook's summary is missing or differs from its results.
Standard library only.
"""
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = {"q1": ROOT / "notebooks" / "01_controlvae_dsprites.ipynb",
             "q2": ROOT / "notebooks" / "02_gans_mnist.ipynb"}
TAG = "run-summary"


def run_line(r):
    run = r["run"]
    return (f"profile **{run['profile']}** on **{run['device_name']}** ({run['torch_threads']} torch threads, "
            f"torch {run['torch']}), notebook wall time **{run['wall_seconds'] / 60:.1f} min**")


def q1_summary(r):
    """The Q1 run: binary-sample FID is primary; every model trains the same N iterations."""
    data, ref = r["data"], r["reference"]
    source = data["label"] if data["reconstructed"] else data["source"]
    lines = [f"- Run: {run_line(r)}" + (", evaluated from `weights/`" if r["run"].get("from_weights") else "") + ".",
             f"- Data: {source}, {data['n_images']:,} images.",
             f"- FID: {r['fid']['num_gen']:,} generated vs {r['fid']['num_real']:,} real images (pytorch-fid); primary: "
             f"binary samples; reference (two disjoint real subsets): FID {r['fid_floor']:.2f}, precision "
             f"{ref['precision']:.3f}, recall {ref['recall']:.3f}.",
             f"- Training: every model exactly {r['training']['iterations']:,} iterations, batch {r['run']['batch_size']}."]
    for name, m in r["models"].items():
        target = "" if m["set_point"] is None else f" (set point {m['set_point']:g})"
        lines.append(f"- {name}: final KL {m['final_kl']:.2f}{target}, reconstruction {m['final_recon']:.2f}, beta "
                     f"{m['final_beta']:.2f}; FID {m['fid_binary']:.2f} (binary; means {m['fid']:.2f}), precision "
                     f"{m['precision']:.3f}, recall {m['recall']:.3f}, blank samples {100 * m['blank_share']:.1f}%, MIG "
                     f"{m['mig']:.3f}; trained in {m['segments']} segment(s), {m['train_hours']:.2f} h.")
    return lines


def q2_summary(r):
    data, ref = r["data"], r["reference"]
    size = f"{data['n_train']:,} MNIST training digits" + ("" if data["official_size"] else " (**not** the official 60,000)")
    lines = [f"- Run: {run_line(r)}" + (", evaluated from `weights/`" if r["run"].get("from_weights") else "") + ".",
             f"- Data: {size}.",
             f"- FID: {r['fid']['num_gen']:,} generated vs {r['fid']['num_real']:,} real digits (pytorch-fid, 28x28); "
             f"reference ({r['fid']['num_real']:,} test digits): FID {r['fid_floor']:.2f}, precision {ref['precision']:.3f}, recall "
             f"{ref['recall']:.3f}, legible share {ref['legible_share']:.3f}."]
    for name, m in r["models"].items():
        width = m.get("widths", {})
        note = f", **reduced width** G{width['g']}/D{width['d']}" if width.get("reduced") else ""
        rep = m["reported"]
        kind = "weight-averaged (EMA)" if rep["kind"] == "ema" else "trained"
        lines.append(f"- {name}: FID {m['fid']:.2f}, precision {m['precision']:.3f}, recall {m['recall']:.3f}, legible "
                     f"{m['legible_share']:.3f}, class shares {min(m['class_share']):.3f}-{max(m['class_share']):.3f}; "
                     f"{kind} generator at iteration {rep['iteration']:,} of {m['iterations']:,} ({m['epochs']:.1f} "
                     f"epochs, {m['segments']} segment(s), {m['train_hours']:.2f} h){note}.")
    return lines


def summary_cell(key, r):
    lines = q1_summary(r) if key == "q1" else q2_summary(r)
    source = "**The saved outputs below come from this run** (from `results/%s.json`):\n\n" % key + "\n".join(lines)
    return {"cell_type": "markdown", "id": f"{key}-run-summary", "metadata": {"tags": [TAG]}, "source": source}


def stamped(nb, cell):
    cells = [c for c in nb["cells"] if TAG not in c.get("metadata", {}).get("tags", [])]
    return dict(nb, cells=cells[:1] + [cell] + cells[1:])


def main(argv=None):
    check = "--check" in (argv if argv is not None else sys.argv[1:])
    stale = []
    for key, path in NOTEBOOKS.items():
        results = ROOT / "results" / f"{key}.json"
        if not results.is_file():
            sys.exit(f"{results} is missing: run {path.name} first")
        nb = json.loads(path.read_text())
        new = stamped(nb, summary_cell(key, json.loads(results.read_text())))
        if check:
            if new != nb:
                stale.append(path.name)
        else:
            path.write_text(json.dumps(new, indent=1, sort_keys=True, ensure_ascii=False) + "\n")
            print(f"stamped {path.relative_to(ROOT)}")
    if stale:
        sys.exit(f"run summary missing or out of date in {', '.join(stale)}: run `python3 scripts/stamp_notebooks.py`")


if __name__ == "__main__":
    main()
