"""The Q1 notebook's pipeline: the dSprites reconstruction, equal-length resumable training, the
evaluation path as properties, and the whole notebook end to end (then again from its weights)."""
import json

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import Q1, fake_dsprites_subset, image_outputs, outputs_text, rendered_by_scripts, run_notebook, shared_data_root


@pytest.fixture(scope="module")
def samples_file():
    root = shared_data_root()
    if root is None or not (root / "dsprites" / "dsprites_samples.npz").is_file():
        pytest.skip("offline dSprites samples not found (set HW6_DATA_ROOT)")
    return root / "dsprites" / "dsprites_samples.npz"


# ---------------------------------------------------------------- the reconstruction (issue 18)
def test_reconstruction_is_pixel_exact_on_every_real_orientation0_sample(q1, samples_file):
    real, latents = q1.load_real_orientation0_samples(samples_file)
    assert len(real) == 338
    subset = q1.render_dsprites_subset()
    assert subset.shape == (18432, 64, 64) and subset.dtype == np.uint8 and set(np.unique(subset)) == {0, 1}
    index = latents[:, 0] * 6144 + latents[:, 1] * 1024 + latents[:, 2] * 32 + latents[:, 3]
    assert np.array_equal(subset[index], real)  # all 338, every pixel, in the data's index order


def test_the_rule_with_rotation_reproduces_the_other_orientations(q1, samples_file):
    with np.load(samples_file, allow_pickle=True) as f:
        imgs, classes, values = f["imgs"], f["latents_classes"], f["latents_values"]
    rendered = q1.render_sprites(classes[:, [0, 1, 3, 4]], values[:, 2])
    wrong = (rendered != imgs).sum(axis=(1, 2))
    assert len(imgs) == 19800 and wrong.sum() <= 10 and (wrong == 0).mean() >= 0.999


def test_sprites_sit_where_their_factors_say(q1):
    grid = q1.subset_latent_grid()
    pick = grid[[0, 6144 + 5 * 1024 + 31 * 32, 2 * 6144 + 3 * 1024 + 31]]  # varied shape, scale and position
    imgs = q1.render_sprites(pick)
    for img, (shape, scale, px, py) in zip(imgs, pick):
        rows, cols = np.nonzero(img)
        centre = 64 * (0.25 + 0.5 * np.array([px, py]) / 31)
        assert abs(cols.mean() + 0.5 - centre[0]) < 2.5 and abs(rows.mean() + 0.5 - centre[1]) < 2.5
    sizes = q1.render_sprites(np.array([[0, s, 16, 16] for s in range(6)])).sum(axis=(1, 2))
    assert np.all(np.diff(sizes) > 0)  # a square's area grows with its scale class
    assert sizes[-1] == pytest.approx((2 * 9.6) ** 2, rel=0.1)


def test_reconstruction_is_used_only_without_a_file_and_says_so(q1, samples_file, tmp_path):
    imgs, info = q1.load_dsprites([samples_file.parents[1]], tmp_path, allow_download=False,
                                       allow_reconstruction=True)
    assert info["reconstructed"] and "not the course file" in info["source"]
    assert info["verified_against"]["pixel_exact"] == info["verified_against"]["images"] == 338
    assert "338/338" in q1.describe_data(info)
    with pytest.raises(FileNotFoundError, match="ALLOW_RECONSTRUCTION"):
        q1.load_dsprites([tmp_path], tmp_path, allow_download=False, allow_reconstruction=False)


def test_a_course_file_is_loaded_first_and_compared_with_the_reconstruction(q1, tmp_path):
    exact = q1.render_dsprites_subset()
    np.savez_compressed(tmp_path / q1.COURSE_FILE, imgs=exact)
    loaded, info = q1.load_dsprites([tmp_path], tmp_path, allow_download=False, allow_reconstruction=True)
    assert info["source"] == "course file" and not info["reconstructed"] and np.array_equal(loaded, exact)
    assert info["agreement_with_reconstruction"] == dict(images=18432, pixel_exact=18432, differing_pixels=0)
    changed = exact.copy()
    changed[5, 0, 0] ^= 1
    np.savez_compressed(tmp_path / q1.COURSE_FILE, imgs=changed)
    _, info = q1.load_dsprites([tmp_path], tmp_path, allow_download=False, allow_reconstruction=True)
    assert info["agreement_with_reconstruction"] == dict(images=18432, pixel_exact=18431, differing_pixels=1)


# ---------------------------------------------------------------- run control (issue 19, 22)
KW = dict(config=dict(batch_size=16, learning_rate=1e-4), device=torch.device("cpu"), print_every=100)


def test_a_finished_run_trains_nothing_more_when_resumed(q1, tmp_path, monkeypatch):
    imgs = fake_dsprites_subset(n=256)
    model, history, info = q1.train_vae("f", imgs, q1.ConstantBeta(), iterations=5, checkpoint_dir=tmp_path, **KW)
    calls = []
    monkeypatch.setattr(q1, "vae_step", lambda *a: calls.append(1))
    again, history2, info2 = q1.train_vae("f", imgs, q1.ConstantBeta(), iterations=5, checkpoint_dir=tmp_path, **KW)
    assert calls == [] and info2["iterations"] == 5 and info2["segments"] == 1
    assert history2["kl"] == history["kl"]
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), again.state_dict().values()))


def test_a_paused_segment_resumes_to_the_same_model_as_one_run(q1, tmp_path, monkeypatch):
    imgs = fake_dsprites_subset(n=256)
    straight, h1, _ = q1.train_vae("s", imgs, q1.PIController(8.0), iterations=6, checkpoint_dir=tmp_path / "a", **KW)
    clock = iter(np.arange(0, 1e6, 30.0))  # every reading of the clock is 30 s later
    monkeypatch.setattr(q1.time, "time", lambda: next(clock))
    with pytest.raises(q1.TrainingPaused, match="run the notebook again"):
        q1.train_vae("s", imgs, q1.PIController(8.0), iterations=6, checkpoint_dir=tmp_path / "b",
                          segment_minutes=1.5, **KW)
    monkeypatch.undo()
    saved = torch.load(tmp_path / "b" / "q1_s.pt", weights_only=False)
    assert 0 < saved["step"] < 6 and saved["segments"][0]["end"] == saved["step"]
    assert saved["segments"][0]["seconds"] >= 1.5 * 60  # a segment lasts segment_minutes *minutes*
    resumed, h2, info = q1.train_vae("s", imgs, q1.PIController(8.0), iterations=6, checkpoint_dir=tmp_path / "b", **KW)
    assert info["segments"] == 2 and info["iterations"] == 6 and len(h2["kl"]) == 6
    assert [s["start"] for s in info["segment_log"]] == [0, saved["step"]] and info["segment_log"][-1]["end"] == 6
    assert np.allclose(h1["beta"], h2["beta"]) and np.allclose(h1["kl"], h2["kl"])
    assert all(torch.allclose(a, b) for a, b in zip(straight.parameters(), resumed.parameters()))


def test_every_image_is_used_once_per_epoch(q1):
    stream = q1.batches(100, 10, torch.Generator().manual_seed(0))
    epoch = torch.cat([next(stream) for _ in range(10)])
    assert sorted(epoch.tolist()) == list(range(100))
    stream = q1.batches(105, 10, torch.Generator().manual_seed(0))  # the partial batch is dropped
    assert all(len(next(stream)) == 10 for _ in range(25))


def test_convergence_is_judged_on_the_last_two_tenths(q1):
    history = dict(recon=[100.0] * 80 + [40.5] * 10 + [40.0] * 10, beta=[3.0] * 100)
    c = q1.convergence(history, dict(recon_plateau=0.02, beta_drift=0.01))
    assert c["recon_plateau"]["value"] == pytest.approx(40 / 40.5 - 1) and c["recon_plateau"]["within"]
    assert c["beta_drift"]["value"] == 0 and c["beta_drift"]["within"]
    history["recon"][-10:] = [38.0] * 10
    assert not q1.convergence(history, dict(recon_plateau=0.02, beta_drift=0.01))["recon_plateau"]["within"]
    # a run shorter than ten iterations still compares windows of one value each: the last with the one before
    short = q1.convergence(dict(recon=[5.0, 4.0, 2.0], beta=[1.0, 2.0, 3.0]), dict(recon_plateau=0.02, beta_drift=0.01))
    assert short["recon_plateau"]["value"] == pytest.approx(-0.5) and short["beta_drift"]["value"] == pytest.approx(0.5)
    assert q1.tail_mean([1.0, 2.0, 3.0]) == 3.0 and q1.tail_mean(list(range(100))) == pytest.approx(94.5)


def test_weights_round_trip_and_refuse_other_settings(q1, tmp_path):
    imgs = fake_dsprites_subset(n=256)
    model, history, info = q1.train_vae("w", imgs, q1.ConstantBeta(), iterations=3, checkpoint_dir=tmp_path, **KW)
    q1.export_weights(tmp_path / "w.pt", model, history, info, KW["config"])
    loaded, h, i = q1.load_weights(tmp_path / "w.pt", KW["config"], torch.device("cpu"))
    x = torch.from_numpy(imgs[:4]).float().unsqueeze(1)
    assert torch.allclose(model.encoder(x)[0], loaded.encoder(x)[0]) and list(h["kl"]) == history["kl"] and i == info
    with pytest.raises(ValueError, match="FROM_WEIGHTS = False"):
        q1.load_weights(tmp_path / "w.pt", dict(KW["config"], learning_rate=1.0), torch.device("cpu"))
    with pytest.raises(FileNotFoundError, match="weights/"):
        q1.load_weights(tmp_path / "none.pt", KW["config"], torch.device("cpu"))


# ---------------------------------------------------------------- evaluation inputs (issue 22)
def test_prior_codes_are_standard_normal_and_repeat_with_their_seed(q1):
    z = q1.prior_codes(20000, seed=3)
    assert z.shape == (20000, 10)
    assert np.allclose(z.mean(0).numpy(), 0, atol=0.05) and np.allclose(z.var(0).numpy(), 1, atol=0.05)
    assert torch.equal(z, q1.prior_codes(20000, seed=3)) and not torch.equal(z, q1.prior_codes(20000, seed=4))


def test_samples_are_the_sigmoid_of_the_decoder_logits_of_prior_codes(q1):
    torch.manual_seed(0)
    model = q1.VAE().eval()
    probabilities = q1.prior_samples(model, 7, seed=5)
    with torch.no_grad():
        expected = torch.sigmoid(model.decoder(q1.prior_codes(7, 5))).squeeze(1).numpy()
    assert probabilities.shape == (7, 64, 64) and np.allclose(probabilities, expected, atol=1e-6)
    assert probabilities.min() >= 0 and probabilities.max() <= 1
    assert np.allclose(probabilities, model.sample(7, torch.Generator().manual_seed(5)).squeeze(1).numpy(), atol=1e-6)


def test_precision_and_recall_separate_fidelity_from_coverage(q1):
    rng = np.random.default_rng(0)
    real = rng.normal(size=(600, 8))
    same = q1.precision_recall(real, rng.normal(size=(600, 8)))
    assert same["precision"] > 0.8 and same["recall"] > 0.8
    collapsed = q1.precision_recall(real, rng.normal(scale=0.1, size=(600, 8)))  # faithful but not diverse
    assert collapsed["precision"] > 0.9 and collapsed["recall"] < 0.2
    far = q1.precision_recall(real, rng.normal(loc=6.0, size=(600, 8)))  # diverse but off the data
    assert far["precision"] < 0.05
    with pytest.raises(ValueError, match="more than 3"):
        q1.precision_recall(real[:3], real[:3])


def test_the_real_data_has_no_blank_image_through_the_models_function(q1):
    imgs = q1.render_dsprites_subset()
    assert q1.blank_share(imgs.astype(float), imgs.mean()) == 0.0
    assert q1.blank_share(np.zeros((4, 64, 64)), imgs.mean()) == 1.0


def test_sampled_codes_follow_the_posterior(q1):
    means, logvars = np.full((40000, 2), 3.0), np.log(np.full((40000, 2), 0.25))
    z = q1.sampled_codes(means, logvars, seed=0)
    assert np.allclose(z.mean(0), 3.0, atol=0.02) and np.allclose(z.std(0), 0.5, atol=0.02)


def test_a_carrier_does_not_survive_on_a_latent_that_passes_nothing(q1):
    factors = q1.subset_latent_grid()
    rng = np.random.default_rng(0)
    means = np.c_[factors.astype(float), rng.normal(size=(len(factors), 6))]
    logvars = np.zeros_like(means)
    logvars[:, :4] = np.log(1e-4)  # latents 0-3 pass their factor; now make latent 0 (shape) pure noise
    logvars[:, 0] = np.log(100.0)
    _, gaps, normalised = q1.mig(means, factors)
    _, _, sampled = q1.mig(q1.sampled_codes(means, logvars, 0), factors)
    entropies = np.array([q1.entropy(factors[:, k]) for k in range(4)])
    c = q1.carriers(normalised, sampled, gaps, entropies, kl_latents=np.r_[0.01, 5, 5, 5, np.zeros(6)])
    assert c["shape"]["latent"] == 0 and not c["shape"]["survives"]
    assert c["scale"]["survives"] and c["posX"]["survives"] and c["posY"]["survives"]


def test_rankings_follow_the_primary_metric_and_report_disagreements(q1):
    scores = dict(a=dict(fid_binary=10.0, fid=50.0), b=dict(fid_binary=20.0, fid=40.0), c=dict(fid_binary=30.0, fid=60.0))
    assert q1.rank_by(scores, "fid_binary") == ["a", "b", "c"]
    assert q1.ranking_disagreements(scores) == [("a", "b")]


# ---------------------------------------------------------------- the notebook, end to end

def assert_close(recorded, recomputed, path="", rel=1e-6, abs_=1e-9):
    """Nested results (JSON-like) equal up to float rounding between two processes."""
    if isinstance(recomputed, dict):
        assert set(recorded) == set(recomputed), path
        for k in recomputed:
            assert_close(recorded[k], recomputed[k], f"{path}.{k}", rel, abs_)
    elif isinstance(recomputed, (float, np.floating)) and not isinstance(recomputed, bool):
        assert recorded == pytest.approx(float(recomputed), rel=rel, abs=abs_, nan_ok=True), path
    else:
        assert recorded == recomputed, path


def assert_recorded_values_follow_from_the_weights(q1, out, results, images):
    """What results/q1.json says of each model, recomputed from that model's own saved network and
    history with the notebook's functions: the call sites pass each function the right model, history,
    codes, outputs and constants."""
    seed, n_gen, mean_pixel = results["run"]["seed"], results["fid"]["num_gen"], results["data"]["mean_pixel"]
    factors = q1.subset_latent_grid()
    entropies = np.array([q1.entropy(factors[:, k]) for k in range(factors.shape[1])])
    controller = results["controller"]
    betas = {}
    for name, recorded in results["models"].items():
        config = torch.load(out / "weights" / f"q1_{name}.pt", weights_only=False)["config"]
        model, history, _ = q1.load_weights(out / "weights" / f"q1_{name}.pt", config, torch.device("cpu"))
        # the training summary comes from this model's history
        for key in ("kl", "recon", "total", "beta"):
            assert recorded[f"final_{key}"] == pytest.approx(q1.tail_mean(history[key])), (name, key)
        kl_latents = q1.final_kl_per_latent(history)
        assert recorded["kl_per_latent"] == pytest.approx(kl_latents.tolist()), name
        assert recorded["active_latents"] == int((kl_latents > 0.1).sum())
        assert_close(recorded["convergence"], q1.convergence(history, results["training"]["tolerances"]), name)
        # beta(t) is the controller of the recorded constants fed the recorded KL, step by step
        if recorded["set_point"] is None:
            replayed = q1.ConstantBeta(1.0)
        else:
            assert config["set_point"] == recorded["set_point"]
            replayed = q1.PIController(recorded["set_point"], controller["kp"], controller["ki"], controller["beta_min"],
                                       controller["beta_max"], ramp_iters=controller["ramp_iters"])
        assert np.allclose([replayed.step(kl) for kl in history["kl"]], history["beta"], rtol=1e-9), name
        betas[name] = np.asarray(history["beta"])
        # the scores and the blank-sample geometry come from this model's prior samples
        codes = q1.prior_codes(n_gen, seed + 1, model.latent_dim)
        probabilities = q1.decode(model, codes)
        on_disk = q1.read_pngs(out / "samples" / f"q1_{name}_binary")
        assert np.array_equal(on_disk, q1.binarise(probabilities, 0.5)), name  # BINARY_THRESHOLD's value
        assert np.array_equal(q1.read_pngs(out / "samples" / f"q1_{name}"), q1.to_uint8(probabilities)), name
        assert recorded["blank_share"] == pytest.approx(q1.blank_share(probabilities, mean_pixel))
        geometry = q1.model_blank_geometry(model, history, codes, probabilities, images, mean_pixel)
        assert_close(recorded["blank_geometry"], json.loads(json.dumps(geometry["summary"])), name)
        # MIG of this model's posterior means (and of one sampled code per image, seeded)
        means, logvars = q1.encode(model, images)
        score, gaps, normalised = q1.mig(means, factors)
        score_sampled, _, normalised_sampled = q1.mig(q1.sampled_codes(means, logvars, seed), factors)
        assert recorded["mig"] == pytest.approx(score, abs=1e-6), name
        assert recorded["mig_sampled"] == pytest.approx(score_sampled, abs=1e-6), name
        assert_close(recorded["mig_factors"], q1.carriers(normalised, normalised_sampled, gaps, entropies, kl_latents), name)
    # the run tells the models apart: each controller acted, differently, and the VAE kept beta = 1
    assert np.all(betas["vae"] == 1.0) and all(betas[n].max() > 1.0 for n in betas if n != "vae")
    assert not np.allclose(betas["controlvae_kl1"], betas["controlvae_kl3"])

def test_q1_runs_end_to_end_and_again_from_its_weights(q1, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    np.savez_compressed(data / "sh3_sc6_y32_x32_imgs.npz", imgs=fake_dsprites_subset())
    # a learning rate and set points at which 12 iterations move the KL past the set points, and strong
    # constants, so that the controller acts and the three models differ from the first iterations
    # (at the paper's settings a smoke run keeps beta = 1 and three identical networks)
    params = dict(PROFILE="smoke", DATA_ROOT=str(data), DATA_DIR=str(data), OUTPUT_DIR=str(tmp_path),
                  ALLOW_DOWNLOAD=False, ALLOW_RECONSTRUCTION=False, LEARNING_RATE=1e-2, SET_POINTS=[1.0, 3.0],
                  KP=0.5, KI=0.05)
    nb = run_notebook(Q1, tmp_path, **params)
    results = json.loads((tmp_path / "results" / "q1.json").read_text())
    assert results["run"]["profile"] == "smoke"
    assert results["data"]["source"] == "course file" and results["data"]["reconstructed"] is False
    # the course file is checked against the reconstruction (a fake one agrees on few images)
    check = results["data"]["agreement_with_reconstruction"]
    assert check["images"] == 18432 and check["pixel_exact"] < 18432
    assert set(results["models"]) == {"vae", "controlvae_kl1", "controlvae_kl3"}
    assert results["fid"]["primary"] == "fid_binary" and results["training"]["iterations"] == 12
    for name, model in results["models"].items():
        assert model["iterations"] == 12 and model["segments"] == 1 and model["train_hours"] > 0
        assert np.isfinite(model["fid"]) and model["fid"] > 0 and np.isfinite(model["fid_binary"])
        assert 0 <= model["precision"] <= 1 and 0 <= model["recall"] <= 1
        assert 0 <= model["blank_share"] <= 1 and 0 <= model["mig"] <= 1 and 0 <= model["mig_sampled"] <= 1
        assert set(model["mig_factors"]) == {"shape", "scale", "posX", "posY"}
        assert set(model["convergence"]) == {"recon_plateau", "beta_drift"}
        assert model["convergence"]["recon_plateau"]["tolerance"] == 0.02
        assert len(model["kl_per_latent"]) == 10
    reference = results["reference"]
    assert reference["blank_share"] == 0.0 and 0 <= reference["precision"] <= 1 and 0 <= reference["recall"] <= 1
    assert results["fid"]["ranking"] == sorted(results["models"], key=lambda n: results["models"][n]["fid_binary"])
    # each ControlVAE ran with its own set point
    assert results["models"]["controlvae_kl1"]["set_point"] == 1.0
    assert results["models"]["controlvae_kl3"]["set_point"] == 3.0
    assert results["controller"] == dict(results["controller"], kp=0.5, ki=0.05, beta_min=1.0)
    assert_recorded_values_follow_from_the_weights(q1, tmp_path, results, fake_dsprites_subset())
    assert results["fid"]["num_real"] == results["fid"]["num_gen"] == 16 and np.isfinite(results["fid_floor"])
    # the FID subset and the floor subset are disjoint draws from the data
    folders = sorted((data / "fid").glob("q1_*"))  # the FID subset, then its "_floor"
    indices = [set(np.load(f / "indices.npy").tolist()) for f in folders]
    assert len(folders) == 2 and not indices[0] & indices[1] and all(len(i) == 16 for i in indices)
    # the call sites: the floor is drawn with the FID subset excluded, and the references are computed
    # on the two subsets' own (cached) features
    real_idx, floor_idx = (np.load(f / "indices.npy") for f in folders)
    assert np.array_equal(floor_idx, q1.subset_indices(18432, 16, results["fid"]["floor_subset_seed"], exclude=real_idx))
    real_f, floor_f = (np.load(f / "features.npy") for f in folders)
    assert {k: reference[k] for k in ("precision", "recall", "precision_se", "recall_se")} == q1.precision_recall(real_f, floor_f)
    assert results["fid_floor"] == pytest.approx(q1.frechet_distance(
        q1.feature_statistics(real_f, 2), q1.feature_statistics(floor_f, 2)))
    written = sorted(p.stem for p in (tmp_path / "figures").glob("q1_*.png"))
    for name in ("q1_data", "q1_vae_losses", "q1_vae_samples", "q1_controlvae_kl", "q1_controlvae_recon",
                 "q1_controlvae_beta", "q1_controlvae_kl1_samples", "q1_controlvae_kl3_samples",
                 "q1_vae_traversal", "q1_kl_per_latent"):
        assert name in written and (tmp_path / "figures" / f"{name}.png").stat().st_size > 1000
    assert image_outputs(nb) >= len(written), "every saved figure must also be shown in the notebook"
    assert sorted(p.stem for p in (tmp_path / "figures" / "report").glob("q1_*.png")) == written  # the report's copies
    samples = sorted((tmp_path / "samples" / "q1_vae").glob("*.png"))
    assert len(samples) == 16 and Image.open(samples[0]).size == (64, 64)
    binary = np.stack([np.array(Image.open(p)) for p in sorted((tmp_path / "samples" / "q1_vae_binary").glob("*.png"))])
    assert binary.shape == (16, 64, 64) and set(np.unique(binary)) <= {0, 255}
    assert '"profile": "smoke"' in outputs_text(nb)
    rows, summary = rendered_by_scripts("q1", results)  # the README table and the run summary read this format
    assert [row[0] for row in rows] == [f"Q1 {n}" for n in results["models"]] and all(len(row) == 7 for row in rows)
    assert all(f"{m['fid_binary']:.2f}" in row[2] for row, m in zip(rows, results["models"].values()))
    assert sum(line.startswith(("- vae", "- controlvae")) for line in summary) == 3

    # the final weights reproduce every number without training
    assert sorted(p.name for p in (tmp_path / "weights").glob("*.pt")) == [
        "q1_controlvae_kl1.pt", "q1_controlvae_kl3.pt", "q1_vae.pt"]
    (tmp_path / "checkpoints").rename(tmp_path / "checkpoints_moved")
    # ... and each model is scored with its own network: perturb one model's decoder, and only its scores move
    perturbed = tmp_path / "weights" / "q1_controlvae_kl1.pt"
    saved = torch.load(perturbed, map_location="cpu", weights_only=False)
    generator = torch.Generator().manual_seed(0)
    # (its encoder too: 12 smoke iterations leave posterior means that carry nothing of the factors, MIG 0;
    # a perturbed trunk and mean head give means that do, and a log-variance head with zero weights keeps the
    # sampled codes finite, so that MIG below is computed on informative means)
    def perturb(key, value):
        if key == "encoder.logvar.weight":
            return torch.zeros_like(value)
        if key.startswith(("decoder", "encoder.features", "encoder.mean")) and value.is_floating_point():
            return value + 0.3 * torch.randn(value.shape, generator=generator)
        return value
    saved["model"] = {k: perturb(k, v) for k, v in saved["model"].items()}
    torch.save(saved, perturbed)
    nb = run_notebook(Q1, tmp_path, FROM_WEIGHTS=True, **params)
    again = json.loads((tmp_path / "results" / "q1.json").read_text())
    assert not (tmp_path / "checkpoints" / "q1_vae.pt").exists(), "FROM_WEIGHTS must not train"
    for name, model in results["models"].items():
        for key in ("fid", "fid_binary", "precision", "recall", "mig", "final_kl", "iterations", "segments"):
            if name != "controlvae_kl1" or key not in ("fid", "fid_binary", "precision", "recall", "mig"):  # its network
                assert again["models"][name][key] == model[key], (name, key)
        assert name != "controlvae_kl1" or (again["models"][name]["fid"] != model["fid"]
                                            and again["models"][name]["fid_binary"] != model["fid_binary"])
    assert "final weights loaded" in outputs_text(nb)
    assert again["models"]["controlvae_kl1"]["mig"] > 0.005 and again["models"]["controlvae_kl1"]["mig"] != results["models"]["controlvae_kl1"]["mig"]
    assert_recorded_values_follow_from_the_weights(q1, tmp_path, again, fake_dsprites_subset())


# ---------------------------------------------------------------- the evaluation path, as properties (issue 22)
def test_mig_is_zero_for_a_factor_that_two_latents_carry_equally(q1):
    rng = np.random.default_rng(0)
    factors = np.stack([rng.integers(0, 3, 3000), rng.integers(0, 32, 3000)], axis=1)
    copy_of_first = factors[:, :1] + rng.normal(0, 0.01, (3000, 1))
    noise = rng.normal(size=(3000, 2))
    codes = np.concatenate([copy_of_first, copy_of_first.copy(), factors[:, 1:2] + 0.0, noise], axis=1)
    score, gaps, normalised = q1.mig(codes, factors)
    assert gaps[0] == pytest.approx(0, abs=1e-9)  # redundancy is not disentanglement
    assert gaps[1] > 0.75 and score == pytest.approx(gaps.mean())  # 20 bins cap a 32-value copy near 0.82
    assert normalised[0, 0] == pytest.approx(1, abs=1e-6) and normalised[3:, 0].max() < 0.05


def test_the_real_subset_on_disk_holds_the_data_as_8_bit_images(q1, tmp_path):
    images = (np.random.default_rng(0).random((40, 64, 64)) < 0.1).astype(np.uint8)  # dSprites: 0/1 pixels
    folder, indices = q1.fixed_real_subset(images, 10, 0, tmp_path / "real")
    on_disk = q1.read_pngs(folder)
    assert np.array_equal(on_disk, images[indices] * 255)  # what FID reads is the data, white on black


def test_the_final_kl_per_latent_averages_the_last_tenth_of_training(q1):
    history = dict(kl_per_latent=[[float(i), 2.0 * i] for i in range(100)])  # KL rising through training
    assert q1.final_kl_per_latent(history) == pytest.approx([94.5, 189.0])  # iterations 90-99
    assert q1.final_kl_per_latent(history, fraction=0.5) == pytest.approx([74.5, 149.0])
    assert q1.final_kl_per_latent(dict(kl_per_latent=[[1.0], [3.0]])) == pytest.approx([3.0])  # at least the last


def test_a_code_at_an_encoded_data_mean_lies_at_distance_zero_from_the_data(q1):
    torch.manual_seed(0)
    model = q1.VAE().eval()
    images = (np.random.default_rng(3).random((30, 64, 64)) < 0.1).astype(np.uint8)
    means = q1.encode(model, images)[0]
    history = dict(kl_per_latent=[[1.0] * 5 + [0.0] * (model.latent_dim - 5)] * 10)  # five active latents
    codes = np.concatenate([means[:4], means[:4] + 3.0])
    probabilities = np.zeros((8, 64, 64))
    probabilities[4:] = 0.5  # the first four are blank
    geometry = q1.model_blank_geometry(model, history, codes, probabilities, images, data_mean_pixel=0.1)
    assert geometry["nearest"][:4] == pytest.approx(0, abs=1e-5)  # measured to the data's means, not log-variances
    assert np.all(geometry["nearest"][4:] <= 3.0 * np.sqrt(5) + 1e-5)  # over the five active latents only
    assert np.all(geometry["nearest"][4:] > 0.5)
    assert geometry["norm"][:4] == pytest.approx(np.linalg.norm(means[:4, :5], axis=1), rel=1e-5)
    assert geometry["summary"]["blank"]["n"] == 4 and list(geometry["blank"]) == [True] * 4 + [False] * 4


def test_the_sigma_distance_counts_each_posteriors_own_standard_deviations(q1):
    means = np.array([[0.0, 0.0], [10.0, 10.0]])
    logvars = np.log(np.array([[0.01, 0.01], [4.0, 4.0]]))  # sigma 0.1 and 2
    codes = np.array([[0.0, 0.0], [0.3, 0.0], [10.0, 14.0], [5.0, 5.0]])
    found = q1.nearest_posterior_sigmas(codes, means, logvars, chunk=3)  # chunks must not change the answer
    expected = [0.0, 3.0, 2.0, min(np.hypot(50, 50), np.hypot(2.5, 2.5))]  # the wide posterior is nearer in its sigmas
    assert found == pytest.approx(expected)
    geometry = q1.blank_sample_geometry(codes, np.zeros((4, 2, 2)), means, np.array([True, True]), 0.1, logvars)
    assert geometry["sigmas"] == pytest.approx(expected)
    assert geometry["summary"]["blank"]["median_nearest_sigmas"] == pytest.approx(np.median(expected))


class FeatureProbe:
    """Stands in for Inception: 3 features per image (mean pixel, share of pixels at 0 or 255, a fixed
    projection), enough to tell binary images from Bernoulli means apart."""

    def __call__(self, images, model, device, batch_size=100):
        flat = images.reshape(len(images), -1).astype(np.float64)
        extreme = np.isin(images.reshape(len(images), -1), (0, 255)).mean(1)
        projection = flat @ np.random.default_rng(1).normal(size=flat.shape[1]) / flat.shape[1]
        return np.stack([flat.mean(1), extreme, projection], axis=1)


def stand_in_evaluation(q1, monkeypatch, tmp_path, probe, real):
    """generated_scores' globals with `probe` for Inception and `real` (probe features) as the real subset."""
    for name, value in dict(inception_features=probe, INCEPTION=None, DEVICE=torch.device("cpu"), FID_BATCH_SIZE=10,
                            SAMPLES=tmp_path, MIN_IMAGES=2, REAL_FEATURES=real, REAL_STATS=q1.feature_statistics(real, 2),
                            REAL_ROOT=q1.covariance_root(q1.feature_statistics(real, 2)[1]),
                            FID_FLOOR=0.0, REFERENCE=dict(precision=1.0, recall=1.0), REAL_INDICES=np.arange(50),
                            DATA_INFO=dict(mean_pixel=0.1)).items():
        monkeypatch.setattr(q1, name, value, raising=False)


def test_each_q1_score_is_computed_on_the_images_it_names(q1, tmp_path, monkeypatch):
    torch.manual_seed(0)
    model = q1.VAE().eval()
    probe = FeatureProbe()
    # "real" images: the model's own binary samples from other codes, so that its binary samples lie on the
    # real manifold (precision and recall well above 0) and its Bernoulli means do not
    real = probe(q1.binarise(q1.prior_samples(model, 50, seed=7)), None, None)
    stand_in_evaluation(q1, monkeypatch, tmp_path, probe, real)
    scores, codes, probabilities = q1.generated_scores("m", model, 40, seed=0)
    assert codes.shape == (40, model.latent_dim) and probabilities.min() >= 0 and probabilities.max() <= 1
    binary = q1.binarise(probabilities, q1.BINARY_THRESHOLD)
    means = q1.to_uint8(probabilities)
    stats = lambda imgs: q1.feature_statistics(probe(imgs, None, None), 2)
    assert scores["fid_binary"] == pytest.approx(q1.frechet_distance(q1.REAL_STATS, stats(binary)))
    assert scores["fid"] == pytest.approx(q1.frechet_distance(q1.REAL_STATS, stats(means)))
    assert scores["fid"] != pytest.approx(scores["fid_binary"])
    # its standard error is the spread over resamples of the features the primary FID sees
    assert scores["fid_binary_se"] == q1.fid_standard_error(q1.REAL_STATS, q1.REAL_ROOT, probe(binary, None, None),
                                                            q1.FID_BOOTSTRAP, 0)
    pr = q1.precision_recall(real, probe(binary, None, None))
    assert (scores["precision"], scores["recall"]) == (pr["precision"], pr["recall"])
    assert pr != q1.precision_recall(real, probe(means, None, None))  # the probe tells the two apart
    assert scores["blank_share"] == q1.blank_share(probabilities, 0.1)
    assert scores["blank_share_binary"] == q1.blank_share(binary / 255.0, 0.1)  # counted on what the primary FID sees
    assert np.array_equal(q1.read_pngs(tmp_path / "q1_m_binary"), binary)


def test_the_binary_blank_share_counts_the_binary_samples_not_the_means(q1, tmp_path, monkeypatch):
    torch.manual_seed(0)
    model = q1.VAE().eval()
    decoder_out = [m for m in model.decoder.modules() if isinstance(m, (torch.nn.ConvTranspose2d, torch.nn.Conv2d))][-1]
    with torch.no_grad():
        decoder_out.bias.fill_(-1.0)  # every Bernoulli mean below 0.5: grey means, all-black binary samples
    probe = FeatureProbe()
    real = probe((np.random.default_rng(3).random((50, 64, 64)) < 0.1).astype(np.uint8) * 255, None, None)
    stand_in_evaluation(q1, monkeypatch, tmp_path, probe, real)
    scores, _, probabilities = q1.generated_scores("m", model, 20, seed=0)
    assert probabilities.max() < 0.5 and probabilities.mean() > 0.1
    assert scores["blank_share"] == 0.0 and scores["blank_share_binary"] == 1.0


def test_generated_features_are_read_back_only_for_the_same_images(q1, tmp_path, monkeypatch):
    calls = []
    features = lambda images: images.reshape(len(images), -1)[:, :3].astype(np.float64)

    def probe(images, model, device, batch_size=100):
        calls.append(len(images))
        return features(images)

    for name, value in dict(inception_features=probe, FEATURE_CACHE=tmp_path / "cache", INCEPTION=None, DEVICE=None,
                            FID_BATCH_SIZE=10).items():
        monkeypatch.setattr(q1, name, value, raising=False)
    images = np.random.default_rng(0).integers(0, 256, (5, 64, 64), dtype=np.uint8)
    first = q1.generated_features(images)
    assert calls == [5] and np.array_equal(first, features(images))
    assert np.array_equal(q1.generated_features(images.copy()), first) and calls == [5]  # read back, no pass
    other = images.copy()
    other[0, 0, 0] ^= 1  # one pixel differs: embedded afresh
    assert np.array_equal(q1.generated_features(other), features(other)) and calls == [5, 5]


def test_discretise_puts_every_value_in_one_of_its_bins(q1):
    codes = np.random.default_rng(0).normal(size=(200, 3)) * [1.0, 5.0, 0.1]
    binned = q1.discretise(codes, bins=20)
    assert binned.min() == 0 and binned.max() == 19  # 20 bins, each column over its own range
    assert (binned[codes.argmax(0), range(3)] == 19).all() and (binned[codes.argmin(0), range(3)] == 0).all()
    assert all(np.all(np.diff(binned[np.argsort(codes[:, j]), j]) >= 0) for j in range(3))  # order kept



def test_finished_weights_are_recognised_only_for_their_settings_and_length(q1, tmp_path):
    imgs = fake_dsprites_subset(n=256)
    model, history, info = q1.train_vae("f", imgs, q1.ConstantBeta(), iterations=3, checkpoint_dir=tmp_path, **KW)
    path = tmp_path / "weights" / "f.pt"
    q1.export_weights(path, model, history, info, KW["config"])
    assert q1.finished_with(path, KW["config"], 3)
    assert not q1.finished_with(path, KW["config"], 4)  # a longer run asked for: train (resuming any checkpoint)
    assert not q1.finished_with(path, dict(KW["config"], learning_rate=1.0), 3)
    assert not q1.finished_with(tmp_path / "none.pt", KW["config"], 3)
