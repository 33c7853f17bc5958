"""Write the README's results table from results/*.json (never typed by hand).

Usage: python scripts/readme_results.py [--check]
Replaces the text between the two marker lines in README.md; with --check, exits 1 when the
README differs from what the results say (the test suite runs this).
"""
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
START, END = "<!-- results:start -->", "<!-- results:end -->"


def minutes(seconds):
    return f"{seconds / 60:.1f} min"


def hours(m):
    return f"{m['train_hours']:.2f} h in {m['segments']} segment(s)"


def q1_rows(r):
    """The Q1 run: binary-sample FID is primary; every model trains the same N iterations."""
    data = r["data"]["label"] if r["data"]["reconstructed"] else r["data"]["source"]
    for name, m in r["models"].items():
        kl = f"{m['final_kl']:.2f}" + (f" (set point {m['set_point']:g})" if m["set_point"] is not None else "")
        more = (f"FID of the means {m['fid']:.2f}; precision {m['precision']:.3f}, recall {m['recall']:.3f}; "
                f"blank {100 * m['blank_share']:.1f}%; MIG {m['mig']:.3f}")
        yield (f"Q1 {name}", data, f"{m['fid_binary']:.2f} ± {m['fid_binary_se']:.2f} (binary samples)", more, kl, f"{m['iterations']:,}", hours(m))


def q2_rows(r):
    data = f"MNIST train n={r['data']['n_train']:,}"
    for name, m in r["models"].items():
        label = f"Q2 {name}"
        if m.get("widths", {}).get("reduced"):
            label += f" (reduced width G{m['widths']['g']}/D{m['widths']['d']})"
        rep = m["reported"]  # which generator every number comes from
        more = (f"{'EMA' if rep['kind'] == 'ema' else 'trained'} generator at iteration {rep['iteration']:,}; "
                f"precision {m['precision']:.3f}, recall {m['recall']:.3f}; legible {m['legible_share']:.3f}; "
                f"class shares {min(m['class_share']):.3f}-{max(m['class_share']):.3f}")
        yield label, data, f"{m['fid']:.2f} ± {m['fid_se']:.2f}", more, "-", f"{m['iterations']:,}", hours(m)


def table():
    results = {p.stem: json.loads(p.read_text()) for p in sorted((ROOT / "results").glob("q*.json"))}
    if not results:
        return "_No results yet: run `make run`._"
    lines = ["| model | data | FID | more | final KL | iterations | training time |", "|---|---|---|---|---|---|---|"]
    notes = []
    for key, rows in (("q1", q1_rows), ("q2", q2_rows)):
        if key not in results:
            continue
        r = results[key]
        lines += ["| " + " | ".join(row) + " |" for row in rows(r)]
        notes.append(f"`results/{key}.json`: profile `{r['run']['profile']}` on `{r['run']['device']}` "
                     f"({r['run']['torch_threads']} torch threads), FID on {r['fid']['num_gen']:,} generated vs "
                     f"{r['fid']['num_real']:,} real images; "
                     + f"FID floor (two disjoint real sets) {r['fid_floor']:.2f}; "
                     + f"real-vs-real precision {r['reference']['precision']:.3f}, recall {r['reference']['recall']:.3f}; "
                     + f"notebook wall time {minutes(r['run']['wall_seconds'])}.")
    return "\n".join(lines + [""] + [f"- {n}" for n in notes])


def render(readme):
    if START not in readme or END not in readme:
        sys.exit(f"README.md lacks the markers {START} ... {END}")
    head, rest = readme.split(START, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{START}\n{table()}\n{END}{tail}"


def main():
    path = ROOT / "README.md"
    current = path.read_text()
    wanted = render(current)
    if "--check" in sys.argv:
        if current != wanted:
            sys.exit("README.md's results table is stale: run `make readme`")
        return
    path.write_text(wanted)


if __name__ == "__main__":
    main()
