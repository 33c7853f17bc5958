"""Q1: does training do what the assignment asks? The optimised loss, what the controller is fed,
the reparameterisation, the controller's ramp and clamps, the stop rules, MIG and the FID helpers.
Small stubs and spies stand in for the data and the controller."""
import copy
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from conftest import fake_dsprites_subset


class SpyController:
    """Returns a fixed beta and records every KL it is fed."""

    def __init__(self, beta):
        self.beta, self.fed = beta, []

    def step(self, kl):
        self.fed.append(kl)
        return self.beta

    def state_dict(self):
        return {}

    def load_state_dict(self, state):
        pass


def batch(n=8, seed=0):
    return torch.from_numpy(fake_dsprites_subset(seed, n=2048)[::256][:n]).float().unsqueeze(1)


# ---------------------------------------------------------------- the optimised loss
def test_update_minimises_recon_plus_controller_beta_times_kl(q1):
    torch.manual_seed(0)
    model, x = q1.VAE(), batch()
    twin = copy.deepcopy(model)
    spy = SpyController(7.5)
    torch.manual_seed(1)
    values, _ = q1.vae_step(model, torch.optim.SGD(model.parameters(), lr=1e-3), spy, x)
    # the same step by hand, with the same reparameterisation noise
    torch.manual_seed(1)
    logits, mean, logvar = twin(x)
    recon = F.binary_cross_entropy_with_logits(logits, x, reduction="sum") / len(x)
    kl = (-0.5 * (1 + logvar - mean ** 2 - logvar.exp())).sum(1).mean()
    loss = recon + 7.5 * kl
    twin.zero_grad()
    loss.backward()
    with torch.no_grad():
        for p in twin.parameters():
            p -= 1e-3 * p.grad
    assert values["total"] == pytest.approx(loss.item(), rel=1e-5)
    assert values["beta"] == 7.5 and values["recon"] == pytest.approx(recon.item(), rel=1e-5)
    for p_step, p_hand in zip(model.parameters(), twin.parameters()):
        assert torch.allclose(p_step, p_hand, atol=1e-6)


def test_controller_is_fed_the_batch_kl(q1):
    torch.manual_seed(0)
    model, x = q1.VAE(), batch()
    with torch.no_grad():
        expected = q1.gaussian_kl(*model.encoder(x)).item()
    spy = SpyController(1.0)
    values, per_latent = q1.vae_step(model, torch.optim.Adam(model.parameters(), lr=1e-4), spy, x)
    assert spy.fed == [pytest.approx(expected, rel=1e-5)]
    assert values["kl"] == pytest.approx(expected, rel=1e-5)
    assert per_latent.sum() == pytest.approx(expected, rel=1e-4)


def test_training_feeds_the_controller_once_per_iteration_with_the_logged_kl(q1, tmp_path):
    spy = SpyController(1000.0)  # large, so recon + KL and recon + beta*KL differ clearly
    _, history, info = q1.train_vae("spy", fake_dsprites_subset(n=256), spy, iterations=5,
                                    config=dict(batch_size=16, learning_rate=1e-4), device=torch.device("cpu"),
                                    checkpoint_dir=tmp_path, print_every=100)
    assert spy.fed == pytest.approx(history["kl"]) and len(spy.fed) == 5 == info["iterations"]
    assert history["beta"] == [1000.0] * 5
    assert history["total"] == pytest.approx([r + 1000.0 * k for r, k in zip(history["recon"], history["kl"])], rel=1e-6)


def test_reparameterisation_uses_the_logvar_head_and_std_exp_half_logvar(q1, monkeypatch):
    model = q1.VAE()
    with torch.no_grad():
        for head, bias in ((model.encoder.mean, 1.0), (model.encoder.logvar, math.log(4.0))):
            head.weight.zero_()
            head.bias.fill_(bias)
    seen = []
    decoder_forward = model.decoder.forward
    monkeypatch.setattr(model.decoder, "forward", lambda z: (seen.append(z.clone()), decoder_forward(z))[1])
    monkeypatch.setattr(torch, "randn_like", lambda t: torch.ones_like(t))
    _, mean, logvar = model(torch.zeros(2, 1, 64, 64))
    assert torch.allclose(mean, torch.ones(2, 10)) and torch.allclose(logvar, torch.full((2, 10), math.log(4.0)))
    assert torch.allclose(seen[0], torch.full((2, 10), 1.0 + 2.0))  # mean + sqrt(4) * eps


def test_a_nan_loss_stops_training_with_a_clear_error_and_keeps_the_checkpoint(q1, tmp_path):
    imgs = fake_dsprites_subset(n=256)
    kw = dict(config=dict(batch_size=16, learning_rate=1e-4), device=torch.device("cpu"), checkpoint_dir=tmp_path,
              print_every=100, checkpoint_every=2)
    q1.train_vae("nan", imgs, q1.ConstantBeta(1.0), iterations=2, **kw)
    with pytest.raises(FloatingPointError, match=r"nan, iteration 3: loss is nan.*checkpoint \(iteration 2\)"):
        q1.train_vae("nan", imgs, SpyController(float("nan")), iterations=4, **kw)
    assert torch.load(tmp_path / "q1_nan.pt", weights_only=False)["step"] == 2


# ---------------------------------------------------------------- the PI controller
def test_paper_constants_are_in_force(q1):
    assert (q1.KP, q1.KI, q1.BETA_MIN) == (0.01, 0.001, 1.0) and q1.SET_POINTS == [8.0, 14.0]
    c = q1.PIController(8.0)
    assert (c.kp, c.ki, c.beta_min) == (0.01, 0.001, 1.0)


def test_controller_follows_the_ramped_target(q1):
    c = q1.PIController(8.0, kp=0.01, ki=0.001, ramp_iters=10, ramp_start=0.5)
    kl = 3.0  # above the ramp's start, below the set point
    error = 0.5 - kl
    assert c.step(kl) == pytest.approx(1.0 + 0.01 / (1 + math.exp(error)) - 0.001 * error, rel=1e-12)


def test_lower_anti_windup_clamp_lets_beta_rise_at_once(q1):
    c = q1.PIController(8.0, kp=0.01, ki=0.001, beta_min=1.0, beta_max=100.0)
    for _ in range(2000):
        assert c.step(0.0) >= 1.0  # KL far below the set point: beta held at beta_min
    assert c.integral >= -0.01  # clamped: a winding-down integral would be about -16
    assert c.step(20.0) > 1.0 + 0.005  # KL above the set point again: beta rises on the first step


def test_controller_output_is_clipped_to_its_bounds(q1):
    c = q1.PIController(8.0, beta_min=1.0, beta_max=2.0)
    assert max(c.step(1e6) for _ in range(10)) == 2.0


# ---------------------------------------------------------------- stop rules
def test_window_drift_compares_the_last_tenth_with_the_tenth_before(q1):
    assert q1.window_drift(np.r_[np.full(80, 5.0), np.full(10, 2.0), np.full(10, 1.0)]) == pytest.approx(-0.5)
    assert np.isnan(q1.window_drift([1.0]))  # too short to have two tenths


# ---------------------------------------------------------------- FID helpers and blank samples
def test_floor_subset_is_disjoint_from_the_fid_subset(q1, tmp_path):
    imgs = fake_dsprites_subset(n=300)
    _, first = q1.fixed_real_subset(imgs, 100, 1, tmp_path / "a")
    _, floor = q1.fixed_real_subset(imgs, 100, 2, tmp_path / "b", exclude=first)
    assert len(set(first) | set(floor)) == 200
    with pytest.raises(ValueError, match="only 100 are available"):
        q1.subset_indices(300, 101, 3, exclude=np.r_[first, floor])


def test_a_stale_real_subset_is_rewritten_and_its_statistics_dropped(q1, tmp_path):
    imgs = fake_dsprites_subset(n=300)
    folder, indices = q1.fixed_real_subset(imgs, 40, 7, tmp_path / "s")
    np.save(folder / "indices.npy", indices[::-1])  # another selection left on disk
    np.save(folder / "features.npy", np.zeros((40, 3)))
    q1.fixed_real_subset(imgs, 40, 7, folder)
    assert np.array_equal(np.load(folder / "indices.npy"), indices)
    assert not (folder / "features.npy").exists()
    assert np.array_equal(q1.read_pngs(folder), imgs[indices] * 255)


def test_blank_share_and_binarise(q1):
    probabilities = np.zeros((4, 8, 8))
    probabilities[0] = 0.9  # bright
    probabilities[1, :2, :2] = 0.9  # 4 of 64 pixels: mean 0.056
    assert q1.blank_share(probabilities, data_mean_pixel=0.5) == 0.75
    assert q1.blank_share(probabilities, data_mean_pixel=0.2) == 0.5
    assert q1.binarise(np.array([0.2, 0.5, 0.51])).tolist() == [0, 0, 255]


def test_singular_covariances_give_a_note_not_a_warning(q1, capsys, recwarn):
    rng = np.random.default_rng(0)
    a = rng.normal(size=(50, 8))
    a[:, 0] = 0  # a dimension that never varies
    stats = q1.gaussian_stats(a) if hasattr(q1, "gaussian_stats") else (a.mean(0), np.cov(a, rowvar=False))
    value = q1.frechet_distance(stats, stats)
    assert np.isfinite(value) and abs(value) < 1e-3
    assert not [w for w in recwarn if "singular" in str(w.message).lower()]


# ---------------------------------------------------------------- MIG
def test_mig_is_near_one_for_a_code_that_copies_the_factors(q1):
    factors = q1.subset_latent_grid()
    code = np.c_[factors.astype(float) + 0.1 * np.random.default_rng(0).random(factors.shape),
                 np.random.default_rng(1).normal(size=(len(factors), 6))]
    score, gaps, normalised = q1.mig(code, factors)
    assert 0.9 < score <= 1.0 and normalised.shape == (10, 4)  # MI normalised by each factor's entropy
    # shape and scale (3 and 6 values) fall into distinct bins: all of their entropy is captured; the 32
    # positions share 20 bins, so less; no normalised MI can exceed 1
    assert normalised.max(axis=0)[:2] == pytest.approx([1.0, 1.0], abs=0.02) and normalised.max() <= 1 + 1e-9
    assert list(normalised.argmax(axis=0)) == [0, 1, 2, 3]


def test_mig_is_near_zero_for_a_random_code(q1):
    factors = q1.subset_latent_grid()
    score, _, _ = q1.mig(np.random.default_rng(0).normal(size=(len(factors), 10)), factors)
    assert score < 0.05


def test_mig_is_low_when_each_factor_is_split_over_two_latents(q1):
    factors = q1.subset_latent_grid()
    copy_twice = np.repeat(factors.astype(float), 2, axis=1) + 0.01 * np.random.default_rng(0).random((len(factors), 8))
    assert q1.mig(copy_twice, factors)[0] < 0.2


def test_factor_order_is_checked_on_the_images(q1):
    imgs, factors = fake_dsprites_subset(), q1.subset_latent_grid()
    corr = q1.check_factor_order(imgs, factors)
    assert min(corr.values()) > 0.9
    swapped = factors[:, [0, 1, 3, 2]]  # posX and posY exchanged
    with pytest.raises(ValueError, match="index order"):
        q1.check_factor_order(imgs, swapped)


def test_mutual_information_of_a_variable_with_itself_is_its_entropy(q1):
    labels = np.repeat(np.arange(4), 25)
    assert q1.mutual_information(labels, labels) == pytest.approx(math.log(4))
    assert q1.mutual_information(labels, np.tile(np.arange(5), 20)) == pytest.approx(0.0, abs=1e-12)


# ---------------------------------------------------------------- final values and stale checkpoints
def test_final_values_are_means_of_the_last_tenth(q1):
    assert q1.tail_mean(np.arange(100.0)) == pytest.approx(94.5)  # mean of 90..99
    assert q1.tail_mean([3.0, 5.0]) == 5.0  # at least one value


def test_a_checkpoint_made_with_other_settings_is_not_reused(q1, tmp_path, capsys):
    imgs = fake_dsprites_subset(n=256)
    kw = dict(iterations=3, device=torch.device("cpu"), checkpoint_dir=tmp_path, print_every=100)
    first, _, _ = q1.train_vae("s", imgs, q1.PIController(8.0), config=dict(batch_size=16, learning_rate=1e-4), **kw)
    second, history, info = q1.train_vae("s", imgs, q1.PIController(8.0),
                                         config=dict(batch_size=16, learning_rate=1e-2), **kw)
    assert "made with other settings" in capsys.readouterr().out
    assert info["iterations"] == 3 == len(history["kl"])
    assert not all(torch.allclose(a, b) for a, b in zip(first.parameters(), second.parameters()))


# ---------------------------------------------------------------- found by the independent mutation audit
def test_controller_state_round_trips_its_integral(q1):
    controller = q1.PIController(8.0)
    for _ in range(50):
        controller.step(20.0)  # KL above the set point: the integral grows
    twin = q1.PIController(8.0)
    twin.load_state_dict(controller.state_dict())
    assert twin.integral == controller.integral > 0
    assert twin.step(20.0) == controller.step(20.0)


def test_training_feeds_the_model_binary_pixels(q1, tmp_path, monkeypatch):
    seen = []
    real_step = q1.vae_step

    def spy(model, optimizer, controller, x):
        seen.append(x.detach().clone())
        return real_step(model, optimizer, controller, x)

    monkeypatch.setattr(q1, "vae_step", spy)
    q1.train_vae("b", fake_dsprites_subset(n=256), q1.ConstantBeta(), iterations=2,
                 config=dict(batch_size=16, learning_rate=1e-4), device=torch.device("cpu"),
                 checkpoint_dir=tmp_path, print_every=100)
    x = torch.cat(seen)
    assert set(x.unique().tolist()) == {0.0, 1.0} and x.shape[1:] == (1, 64, 64)


def test_feature_statistics_are_per_feature_mean_and_covariance(q1):
    features = np.random.default_rng(0).normal(size=(300, 8)) + np.arange(8)  # 300 images, 8 features
    mu, sigma = q1.feature_statistics(features, min_images=2)
    assert mu.shape == (8,) and sigma.shape == (8, 8)
    assert np.allclose(mu, features.mean(axis=0)) and np.allclose(sigma, np.cov(features.T))
    with pytest.raises(ValueError, match="at least 400"):
        q1.feature_statistics(features, min_images=400)
