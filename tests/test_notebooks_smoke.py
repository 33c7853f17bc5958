"""End-to-end smoke run of the Q2 notebook with the `smoke` profile on a tiny MNIST the test makes (Q1's,
with its rerun from the final weights, is in test_q1_pipeline.py)."""
import json

import numpy as np

from conftest import run_notebook


def image_outputs(nb):
    return sum("image/png" in o.get("data", {}) for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))


def outputs_text(nb):
    return "\n".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))


def test_q2_notebook_runs_end_to_end_on_a_tiny_mnist(tmp_path):
    from conftest import Q2, fake_mnist

    data = fake_mnist(tmp_path / "data")
    nb = run_notebook(Q2, tmp_path, PROFILE="smoke", DATA_ROOT=str(data), DATA_DIR=str(data),
                      OUTPUT_DIR=str(tmp_path), ALLOW_DOWNLOAD=False)
    results = json.loads((tmp_path / "results" / "q2.json").read_text())
    assert results["run"]["profile"] == "smoke" and results["data"]["n_train"] == 512
    rows = results["search"]["rows"]
    assert len(rows) == 8 and results["search"]["rungs"] == [2, 4, 6]
    assert {k: rows[0][k] for k in ("lr", "d_steps")} == {k: results["search"]["chosen"][k] for k in ("lr", "d_steps")}
    assert [r["iterations"] for r in rows] == [6, 6, 4, 4, 2, 2, 2, 2]  # successive halving, ranked best first
    assert results["settings"]["wgan"]["n_critic"] == 5 and results["settings"]["ssgan"]["alpha"] == 0.2
    # the critic steps actually used by the runs, not only the settings
    assert [results["models"][n]["d_steps"] for n in ("wgan", "ssgan")] == [5, results["settings"]["ssgan"]["n_dis"]]
    assert np.isfinite(results["fid_floor"]) and results["fid"]["num_gen"] == results["fid"]["num_real"] == 16
    for name in ("gan", "wgan", "ssgan"):
        model = results["models"][name]
        assert np.isfinite(model["fid"]) and model["fid"] > 0 and model["params_g"] > 0
        assert len(model["class_share"]) == 10 and abs(sum(model["class_share"]) - 1) < 1e-9
        assert model["image_size"] == [28, 28] and model["stop_reason"] == "iteration cap"
        for figure in ("losses", "stages"):
            assert (tmp_path / "figures" / f"q2_{name}_{figure}.png").stat().st_size > 1000
        assert len(list((tmp_path / "samples" / f"q2_{name}").glob("*.png"))) == 16
    assert results["models"]["ssgan"]["widths"]["reduced"] is True
    written = list((tmp_path / "figures").glob("q2_*.png"))
    assert {"q2_quality_over_training.png", "q2_class_shares.png", "q2_search.png"} <= {p.name for p in written}
    assert image_outputs(nb) >= len(written), "every saved figure must also be shown in the notebook"
    text = outputs_text(nb)
    assert "not the official 60,000" in text and "REDUCED WIDTH" in text
