"""The Persian report: its numbers come from results/*.json, its figures exist, it builds, and the
submission zip has the assignment's name and contents."""
import importlib.util
import json
import re
import shutil
import subprocess
import unicodedata
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
REPORT = ROOT / "report"
# the report's text without comments (an unescaped % starts one)
TEX = re.sub(r"(?<!\\)%.*", "", (REPORT / "report.tex").read_text())


def load_script(path, name):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


generate = load_script(REPORT / "generate.py", "report_generate")
packager = load_script(ROOT / "scripts" / "package.py", "report_package")


def used_keys(tex):
    return {k for k in re.findall(r"\\r[vtp]\{([^}]+)\}", tex) if "#" not in k}  # not the macros' own #1


def used_figures(tex):
    found = re.findall(r"\\(?:fig|includegraphics)(?:\[[^\]]*\])?\{([^}]+)\}", tex)
    return {f for f in found if "#" not in f}


def test_every_value_the_report_quotes_is_generated_from_the_results(tmp_path):
    values = generate.generate(ROOT / "results", tmp_path, REPORT / "config.toml")
    missing = used_keys(TEX) - set(values)
    assert used_keys(TEX), "report.tex quotes no result at all"
    assert not missing, f"report.tex uses keys that report/generate.py does not write: {sorted(missing)}"
    q1 = json.loads((ROOT / "results" / "q1.json").read_text())
    assert values["q1.vae.fid"] == f"{q1['models']['vae']['fid']:.2f}"
    for table in ("q1_table.tex", "q2_table.tex", "search_table.tex"):
        assert (tmp_path / table).read_text().count(r"\\") >= 3, table


def test_every_bibitem_is_cited_and_no_float_is_pinned():
    items = set(re.findall(r"\\bibitem\{([^}]+)\}", TEX))
    cited = {key.strip() for group in re.findall(r"\\cite\{([^}]+)\}", TEX) for key in group.split(",")}
    assert items and not items - cited, f"never cited: {sorted(items - cited)}"
    assert not cited - items, f"cited but not listed: {sorted(cited - items)}"
    assert "[H]" not in TEX


def test_every_figure_the_report_includes_exists():
    figures = used_figures(TEX)
    assert len(figures) >= 15
    missing = [f for f in figures if not (ROOT / "figures" / f).is_file()]
    assert not missing, f"figures missing (run the notebooks): {missing}"
    untitled = [f for f in figures if not (ROOT / "figures" / "report" / f).is_file()]
    assert not untitled, f"report copies (no English title) missing; run the notebooks: {untitled}"


def test_a_missing_result_stops_the_generator_with_its_name(tmp_path):
    results = tmp_path / "results"
    shutil.copytree(ROOT / "results", results)
    q2 = json.loads((results / "q2.json").read_text())
    del q2["models"]["wgan"]["fid"]
    (results / "q2.json").write_text(json.dumps(q2))
    with pytest.raises(generate.MissingResult, match=r"q2\.json has no 'models\.wgan\.fid'.*02_gans_mnist"):
        generate.generate(results, tmp_path / "out", REPORT / "config.toml")
    (results / "q1.json").unlink()
    with pytest.raises(generate.MissingResult, match=r"q1\.json is missing"):
        generate.generate(results, tmp_path / "out", REPORT / "config.toml")


def test_results_that_contradict_the_analysis_stop_the_generator(tmp_path):
    results = tmp_path / "results"
    shutil.copytree(ROOT / "results", results)
    q1 = json.loads((results / "q1.json").read_text())
    models = q1["models"]
    models["vae"]["fid_binary"] = models["controlvae_kl14"]["fid_binary"] - 5  # the VAE now best by the primary FID
    q1["fid"]["ranking"] = sorted(models, key=lambda n: models[n]["fid_binary"])
    (results / "q1.json").write_text(json.dumps(q1))
    with pytest.raises(generate.OutdatedAnalysis, match="by the primary FID both ControlVAEs beat the VAE"):
        generate.generate(results, tmp_path / "out", REPORT / "config.toml")


def test_the_filled_in_architecture_tables_add_up_to_the_trained_networks(tmp_path):
    values = generate.generate(ROOT / "results", tmp_path / "out", REPORT / "config.toml")
    table = (tmp_path / "out" / "gan_architecture_table.tex").read_text()
    assert table.count("colorbox") == 3  # the three "?" of Tables 2 and 3, shaded
    gan = json.loads((ROOT / "results" / "q2.json").read_text())["models"]["gan"]
    assert values and all(f"${generate.count(gan[k])}$ \\\\" in table for k in ("params_g", "params_d"))  # the totals
    results = tmp_path / "results"
    shutil.copytree(ROOT / "results", results)
    q2 = json.loads((results / "q2.json").read_text())
    q2["models"]["gan"]["params_d"] += 1  # a network that differs from the table by one parameter
    (results / "q2.json").write_text(json.dumps(q2))
    with pytest.raises(generate.MissingResult, match="1,640,033 parameters, the trained network 1,640,034"):
        generate.generate(results, tmp_path / "out2", REPORT / "config.toml")


def test_a_config_with_three_students_is_refused(tmp_path):
    config = tmp_path / "config.toml"
    student = '[[students]]\nname_fa = "x"\nlastname = "A"\nnumber = "1"\n'
    header = (REPORT / "config.toml").read_text().split("\n[[students]]")[0]
    config.write_text(header + student * 3)
    with pytest.raises(generate.MissingResult, match="one or two"):
        generate.generate(ROOT / "results", tmp_path / "out", config)


TOOLS = ("xelatex", "latexmk", "pdftotext")


@pytest.mark.skipif(not all(shutil.which(t) for t in TOOLS),
                    reason=f"TeX toolchain absent ({', '.join(TOOLS)}): apt-get install texlive-xetex "
                           "texlive-lang-arabic texlive-fonts-recommended latexmk poppler-utils")
def test_the_report_builds_and_quotes_the_results(tmp_path):
    generate.generate(ROOT / "results", REPORT / "generated", REPORT / "config.toml")
    build = subprocess.run(["latexmk", "-xelatex", "-interaction=nonstopmode", "-halt-on-error",
                            f"-outdir={tmp_path}", "report.tex"], cwd=REPORT, capture_output=True, text=True)
    log = (tmp_path / "report.log").read_text(errors="replace") if (tmp_path / "report.log").exists() else ""
    assert build.returncode == 0, build.stdout[-3000:] + log[-3000:]
    assert "Missing character" not in log
    text = subprocess.run(["pdftotext", str(tmp_path / "report.pdf"), "-"], capture_output=True, text=True).stdout
    text = unicodedata.normalize("NFKC", text)  # Arabic presentation forms -> letters
    text = text.translate(str.maketrans("۰۱۲۳۴۵۶۷۸۹٫٬", "0123456789.,"))  # numbers print in Persian digits
    q1 = json.loads((ROOT / "results" / "q1.json").read_text())
    q2 = json.loads((ROOT / "results" / "q2.json").read_text())
    for number in (q1["models"]["vae"]["fid"], q1["models"]["controlvae_kl8"]["final_kl"], q2["models"]["ssgan"]["fid"]):
        assert f"{number:.2f}" in text, f"{number:.2f} not in the PDF"
    assert "ControlVAE" in text
    assert "پرسش" in text and "مقایسه" in text


def test_the_zip_has_the_assignment_name_and_contents(tmp_path):
    target = packager.package("HW6_Ahmadi_810199101_Bagheri_810199102", tmp_path)
    assert target.name == "HW6_Ahmadi_810199101_Bagheri_810199102.zip"
    names = zipfile.ZipFile(target).namelist()
    assert {n.split("/")[0] for n in names} == {"HW6_Ahmadi_810199101_Bagheri_810199102"}
    expected = {"report.pdf", "notebooks/01_controlvae_dsprites.ipynb", "notebooks/02_gans_mnist.ipynb",
                "notebooks/01_controlvae_dsprites.py", "figures/q1_vae_samples.png", "results/q2.json"}
    assert expected <= {n.partition("/")[2] for n in names}


def test_the_zip_name_comes_from_the_config_and_bad_names_are_refused():
    assert packager.name_from_config(REPORT / "config.toml") == "HW6_LastnameA_810100000_LastnameB_810100001"
    for bad in ("HW6_Ahmadi", "HW6_Ahmadi_810199101_Bagheri", "hw6_Ahmadi_1", "HW6_A_1_B_2_C_3"):
        with pytest.raises(packager.PackageError, match="not a valid submission name"):
            packager.check_name(bad)
