"""Unit tests of the Q1 notebook's own definitions (data, model, losses, controller, FID)."""
import math

import numpy as np
import pytest
import torch

from conftest import fake_dsprites_subset


def conv_params(c_in, c_out, k):
    return c_in * c_out * k * k + c_out


def linear_params(n_in, n_out):
    return n_in * n_out + n_out


# ---------------------------------------------------------------- model (Table 6)
def test_encoder_has_two_heads_of_ten_and_right_shapes(q1):
    enc = q1.Encoder()
    mean, logvar = enc(torch.zeros(3, 1, 64, 64))
    assert mean.shape == logvar.shape == (3, 10)
    assert isinstance(enc.mean, torch.nn.Linear) and isinstance(enc.logvar, torch.nn.Linear)
    assert enc.mean.out_features == enc.logvar.out_features == 10


def test_decoder_outputs_64x64_logits(q1):
    assert q1.Decoder()(torch.zeros(5, 10)).shape == (5, 1, 64, 64)


def test_parameter_counts_match_table6(q1):
    encoder = (conv_params(1, 32, 4) + conv_params(32, 32, 4) + conv_params(32, 64, 4) + conv_params(64, 64, 4)
               + linear_params(1024, 256) + 2 * linear_params(256, 10))
    decoder = (linear_params(10, 256) + linear_params(256, 1024) + conv_params(64, 64, 4) + conv_params(64, 32, 4)
               + conv_params(32, 32, 4) + conv_params(32, 1, 4))
    assert q1.count_parameters(q1.Encoder()) == encoder == 382_932
    assert q1.count_parameters(q1.Decoder()) == decoder == 381_313


# ---------------------------------------------------------------- losses
def test_bernoulli_loss_matches_hand_computation(q1):
    logits = torch.tensor([[[[2.0, -1.0], [0.0, 3.0]]], [[[-2.0, 0.5], [1.0, -3.0]]]])
    x = torch.tensor([[[[1.0, 0.0], [1.0, 0.0]]], [[[0.0, 1.0], [1.0, 1.0]]]])
    p = 1 / (1 + np.exp(-logits.numpy()))
    nll = -(x.numpy() * np.log(p) + (1 - x.numpy()) * np.log(1 - p))
    expected = nll.reshape(2, -1).sum(axis=1).mean()  # sum over pixels, mean over the batch
    assert q1.bernoulli_reconstruction_loss(logits, x).item() == pytest.approx(expected, rel=1e-6)


def test_kl_matches_closed_form(q1):
    mean = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    logvar = torch.tensor([[0.0, math.log(2.0)], [math.log(0.5), 0.0]])
    def kl(m, v):  # KL(N(m, v) || N(0, 1)) for one latent
        return 0.5 * (v + m * m - 1 - math.log(v))
    per_sample = [kl(1, 1) + kl(0, 2), kl(0, 0.5) + kl(2, 1)]
    assert q1.gaussian_kl(mean, logvar).item() == pytest.approx(np.mean(per_sample), rel=1e-6)
    assert q1.kl_per_latent(mean, logvar).shape == (2,)
    assert q1.gaussian_kl(torch.zeros(4, 10), torch.zeros(4, 10)).item() == 0.0


# ---------------------------------------------------------------- PI controller (Algorithm 1)
def test_controller_first_step_is_algorithm_1(q1):
    c = q1.PIController(set_point=8.0, kp=0.01, ki=0.001, beta_min=1.0, beta_max=100.0)
    kl = 20.0
    error = 8.0 - kl
    expected = 0.01 / (1 + math.exp(error)) - 0.001 * error + 1.0
    assert c.step(kl) == pytest.approx(expected, rel=1e-12)


def test_controller_raises_beta_above_set_point_and_returns_to_min_below(q1):
    c = q1.PIController(set_point=8.0, kp=0.01, ki=0.001, beta_min=1.0, beta_max=100.0)
    rising = [c.step(20.0) for _ in range(200)]
    assert all(b2 > b1 for b1, b2 in zip(rising, rising[1:]))
    assert rising[-1] == pytest.approx(1.0 + 0.01 / (1 + math.exp(-12)) + 200 * 0.001 * 12, rel=1e-6)
    falling = [c.step(2.0) for _ in range(1000)]
    assert falling[-1] == pytest.approx(1.0, abs=1e-9)
    assert min(falling) >= 1.0


def test_controller_anti_windup_freezes_integral_at_the_bound(q1):
    c = q1.PIController(set_point=8.0, kp=0.01, ki=0.001, beta_min=1.0, beta_max=3.0)
    betas = [c.step(1000.0) for _ in range(100)]  # error -992: saturates beta_max in 3 steps
    assert betas[-1] == pytest.approx(3.0)
    assert c.integral <= 3.0 - 1.0  # held at the bound: a winding-up integrator would hold ~99
    first_below = c.step(0.0)  # KL now far below the set point: beta leaves the bound at once
    assert first_below < 3.0


def test_controller_ramp_reaches_set_point(q1):
    c = q1.PIController(set_point=8.0, ramp_iters=10, ramp_start=0.5)
    targets = []
    for _ in range(12):
        targets.append(c.target())
        c.step(5.0)
    assert targets[0] == 0.5 and targets[-1] == 8.0 and targets[5] == pytest.approx(0.5 + 7.5 * 0.5)


# ---------------------------------------------------------------- data
def test_validate_subset_rejects_wrong_shape_and_values(q1):
    with pytest.raises(ValueError, match=r"expected \(18432, 64, 64\)"):
        q1.validate_subset(np.zeros((10, 64, 64), np.uint8), "some.npz")
    bad = np.zeros((18432, 64, 64), np.uint8)
    bad[0, 0, 0] = 255
    with pytest.raises(ValueError, match="expected only 0 and 1"):
        q1.validate_subset(bad, "some.npz")


def test_corrupt_file_gets_a_clear_error(q1, tmp_path):
    path = tmp_path / q1.COURSE_FILE
    path.write_bytes(b"not a zip file")
    with pytest.raises(ValueError, match="cannot be read"):
        q1.load_dsprites([tmp_path], tmp_path, allow_download=False, allow_reconstruction=False)


def test_course_file_is_used_first(q1, tmp_path):
    imgs = fake_dsprites_subset()
    np.savez_compressed(tmp_path / q1.COURSE_FILE, imgs=imgs)
    loaded, info = q1.load_dsprites([tmp_path], tmp_path, allow_download=False, allow_reconstruction=True)
    assert info["source"] == "course file" and not info["reconstructed"]
    assert np.array_equal(loaded, imgs)


def test_official_file_is_cut_to_orientation_0_in_order(tmp_path):
    from conftest import Q1, load_definitions
    small = load_definitions(Q1)  # a fresh namespace whose subset size we shrink
    small.SUBSET_SHAPE = (6, 64, 64)
    small.render_dsprites_subset = lambda: np.zeros((6, 64, 64), np.uint8)  # the agreement check's reference
    rng = np.random.default_rng(1)
    imgs = (rng.random((18, 64, 64)) < 0.1).astype(np.uint8)
    classes = np.zeros((18, 6), dtype=int)
    classes[:, 3] = np.tile([0, 1, 2], 6)  # orientation column of the official file
    np.savez(tmp_path / small.OFFICIAL_FILE, imgs=imgs, latents_classes=classes)
    out = tmp_path / "out"
    out.mkdir()
    loaded, info = small.load_dsprites([tmp_path], out, allow_download=False, allow_reconstruction=False)
    assert np.array_equal(loaded, imgs[0::3])
    assert info["source"].startswith("official")
    assert np.array_equal(np.load(out / small.COURSE_FILE)["imgs"], imgs[0::3])


def test_missing_data_error_says_what_to_do(q1, tmp_path):
    with pytest.raises(FileNotFoundError, match="sh3_sc6_y32_x32_imgs.npz"):
        q1.load_dsprites([tmp_path], tmp_path, allow_download=False, allow_reconstruction=False)


def test_failed_download_is_reported(q1, tmp_path, monkeypatch):
    monkeypatch.setattr(q1, "OFFICIAL_URL", "http://127.0.0.1:9/dsprites.npz")
    with pytest.raises(FileNotFoundError, match="download failed"):
        q1.load_dsprites([tmp_path], tmp_path, allow_download=True, allow_reconstruction=False)


def test_latent_grid_order_matches_official_index_formula(q1):
    grid = q1.subset_latent_grid()
    assert grid.shape == (18432, 4)
    index = grid[:, 0] * 6144 + grid[:, 1] * 1024 + grid[:, 2] * 32 + grid[:, 3]
    assert np.array_equal(index, np.arange(18432))


# ---------------------------------------------------------------- training and checkpoints
def test_training_resumes_exactly_from_a_checkpoint(q1, tmp_path):
    imgs = fake_dsprites_subset(n=256)
    config = dict(batch_size=16, learning_rate=1e-4, data="fake", seed=0)
    kw = dict(config=config, device=torch.device("cpu"), resume=True, checkpoint_every=2, print_every=100, seed=0)
    straight, h1, _ = q1.train_vae("a", imgs, q1.PIController(8.0), iterations=6, checkpoint_dir=tmp_path / "a", **kw)
    q1.train_vae("b", imgs, q1.PIController(8.0), iterations=3, checkpoint_dir=tmp_path / "b", **kw)
    resumed, h2, info = q1.train_vae("b", imgs, q1.PIController(8.0), iterations=6, checkpoint_dir=tmp_path / "b", **kw)
    assert info["iterations"] == 6 and len(h2["kl"]) == 6
    assert np.allclose(h1["kl"], h2["kl"]) and np.allclose(h1["beta"], h2["beta"])
    for p1, p2 in zip(straight.parameters(), resumed.parameters()):
        assert torch.allclose(p1, p2)


# ---------------------------------------------------------------- FID
def test_real_subset_is_reproducible(q1, tmp_path):
    imgs = fake_dsprites_subset(n=300)
    f1, i1 = q1.fixed_real_subset(imgs, 40, 7, tmp_path / "a")
    f2, i2 = q1.fixed_real_subset(imgs, 40, 7, tmp_path / "b")
    _, i3 = q1.fixed_real_subset(imgs, 40, 8, tmp_path / "c")
    assert np.array_equal(i1, i2) and not np.array_equal(i1, i3)
    assert np.array_equal(q1.read_pngs(f1), q1.read_pngs(f2))
    assert np.array_equal(q1.read_pngs(f1), imgs[i1] * 255)


def test_fid_refuses_too_few_images(q1):
    with pytest.raises(ValueError, match="at least 2048"):
        q1.feature_statistics(np.zeros((100, 2048)), q1.MIN_FID_IMAGES)


def test_to_uint8_rounds_probabilities(q1):
    assert q1.to_uint8(np.array([0.0, 0.5, 1.0, 1.2])).tolist() == [0, 128, 255, 255]


def test_fast_features_match_pytorch_fid_own_path(q1, tmp_path):
    from pytorch_fid.fid_score import get_activations
    from pytorch_fid.inception import InceptionV3

    imgs = fake_dsprites_subset(n=24) * 255
    folder = q1.write_pngs(imgs, tmp_path / "png")
    ours = q1.inception_features(q1.read_pngs(folder), q1.load_fid_inception(torch.device("cpu")),
                                 torch.device("cpu"), batch_size=12)
    reference_model = InceptionV3([InceptionV3.BLOCK_INDEX_BY_DIM[2048]]).eval()
    files = sorted(str(p) for p in folder.glob("*.png"))
    theirs = get_activations(files, reference_model, batch_size=12, dims=2048, device="cpu", num_workers=0)
    assert ours.shape == theirs.shape == (24, 2048)
    assert np.abs(ours - theirs).max() < 1e-4 * max(1.0, np.abs(theirs).max())
