"""Write the submission zip: HW6_[Lastname]_[StudentNumber]_[Lastname]_[StudentNumber].zip.

Usage: python3 scripts/package.py [--name HW6_Ahmadi_810199101_Bagheri_810199102] [--out dist]
Without --name the name comes from report/config.toml.  The zip holds one folder of that name with
the report PDF, the executed notebooks and their .py twins, the figures, the results, README.md
and requirements.txt.  Standard library only.
"""
import argparse
import json
import re
import sys
import tomllib
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NAME_PATTERN = re.compile(r"HW6(_[A-Za-z][A-Za-z-]*_[0-9]+){1,2}")
PLACEHOLDER_LASTNAMES = {"LastnameA", "LastnameB"}
CONTENTS = ("report/report.pdf", "notebooks/*.ipynb", "notebooks/*.py", "figures/*.png", "results/*.json",
            "README.md", "requirements.txt")


class PackageError(Exception):
    pass


def name_from_config(config_path):
    students = tomllib.loads(Path(config_path).read_text()).get("students", [])
    if not 1 <= len(students) <= 2:
        raise PackageError(f"{config_path} must list one or two [[students]]")
    if any(s["lastname"] in PLACEHOLDER_LASTNAMES for s in students):
        print(f"warning: {config_path} still holds placeholder names; edit it before submitting", file=sys.stderr)
    return "HW6_" + "_".join(f"{s['lastname']}_{s['number']}" for s in students)


def check_name(name):
    if not NAME_PATTERN.fullmatch(name):
        raise PackageError(f"'{name}' is not a valid submission name: expected "
                           "HW6_[Lastname]_[StudentNumber] or HW6_[Lastname]_[StudentNumber]_[Lastname]_[StudentNumber], "
                           "e.g. HW6_Ahmadi_810199101_Bagheri_810199102 (Latin letters, digits)")


def files_to_pack(root):
    files = []
    for pattern in CONTENTS:
        found = sorted(root.glob(pattern))
        if not found:
            hint = "run `make report`" if pattern.startswith("report/") else "run `make run`"
            raise PackageError(f"nothing matches {pattern}: {hint} first")
        files += found
    for notebook in (f for f in files if f.suffix == ".ipynb"):
        cells = json.loads(notebook.read_text())["cells"]
        if not any(c.get("outputs") for c in cells if c["cell_type"] == "code"):
            raise PackageError(f"{notebook.relative_to(root)} has no saved outputs: execute it (`make run`) first")
    return files


def package(name, out_dir, root=ROOT):
    check_name(name)
    files = files_to_pack(root)
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / f"{name}.zip"
    with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in files:
            relative = path.relative_to(root)
            arcname = relative.name if relative.parts[0] == "report" else str(relative)  # report.pdf at the top
            archive.write(path, f"{name}/{arcname}")
    return target


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--name", help="zip name without .zip (default: from report/config.toml)")
    parser.add_argument("--config", type=Path, default=ROOT / "report" / "config.toml")
    parser.add_argument("--out", type=Path, default=ROOT / "dist")
    args = parser.parse_args(argv)
    try:
        target = package(args.name or name_from_config(args.config), args.out)
    except PackageError as err:
        sys.exit(f"scripts/package.py: {err}")
    with zipfile.ZipFile(target) as archive:
        print(f"wrote {target} ({len(archive.namelist())} files)")


if __name__ == "__main__":
    main()
