"""Q2: does training do what the assignment asks? Update counts, optimisers, the SSGAN losses on a
stub discriminator with known logits, pooling, the search's ranking, stop rules, resume, data and
FID helpers."""
import copy
import math

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from conftest import fake_mnist, write_idx

CPU = torch.device("cpu")


class StubDiscriminator(nn.Module):
    """Per-image linear logits: the GAN logit and 4 rotation logits are known functions of x."""

    def __init__(self, side=32):
        super().__init__()
        torch.manual_seed(5)
        self.gan = nn.Linear(side * side, 1)
        self.rot = nn.Linear(side * side, 4)

    def forward(self, x):
        h = x.flatten(1)
        return self.gan(h).squeeze(1), self.rot(h)


def quarter_in_four_orientations(x):
    q = len(x) // 4
    return torch.cat([torch.rot90(x[:q], k, dims=(2, 3)) for k in range(4)]), torch.arange(4).repeat_interleave(q)


def short_run(q2, trainer, real, iterations, d_steps, folder, check_every=2):
    """A few iterations of the notebook's train_gan, scored by a constant stand-in for the cheap FD."""
    return q2.train_gan("t", trainer, real, iterations, d_steps, torch.randn(100, 64), lambda net: 1.0, check_every, folder)


def ssgan_trainer(q2, width=8):
    torch.manual_seed(0)
    return q2.GANTrainer("ssgan", q2.SSGenerator(ch=width), StubDiscriminator(), dict(q2.SSGAN), CPU)


# ---------------------------------------------------------------- update counts and optimisers
def test_each_iteration_makes_n_critic_updates_then_one_generator_update(q2, tmp_path):
    torch.manual_seed(0)
    trainer = q2.GANTrainer("wgan", q2.Generator(), q2.Discriminator(), dict(q2.WGAN, lr=q2.WGAN_LRS[0]), CPU)
    calls = []
    d_update, g_update = trainer.d_update, trainer.g_update
    trainer.d_update = lambda real: (calls.append("D"), d_update(real))[1]
    trainer.g_update = lambda n: (calls.append("G"), g_update(n))[1]
    real = torch.rand(256, 1, 28, 28) * 2 - 1
    history, info = short_run(q2, trainer, real, 3, q2.WGAN["n_critic"], tmp_path)
    assert q2.WGAN["n_critic"] == 5 and calls == (["D"] * 5 + ["G"]) * 3
    assert info["d_steps"] == 5 and len(history["g_loss"]) == 3


def test_each_critic_update_takes_a_fresh_real_batch(q2):
    torch.manual_seed(0)
    trainer = q2.GANTrainer("gan", q2.Generator(), q2.Discriminator(), dict(q2.GAN_DEFAULT), CPU)
    seen = []
    d_update = trainer.d_update
    trainer.d_update = lambda real: (seen.append(real.clone()), d_update(real))[1]
    stream = q2.batches(256, 64, torch.Generator().manual_seed(0))
    trainer.iteration(torch.rand(256, 1, 28, 28), stream, d_steps=2)
    assert len(seen) == 2 and not torch.equal(seen[0], seen[1])


def test_optimisers_rmsprop_for_wgan_and_adam_for_the_others(q2):
    for lr in q2.WGAN_LRS:
        wgan = q2.GANTrainer("wgan", q2.Generator(), q2.Discriminator(), dict(q2.WGAN, lr=lr), CPU)
        assert all(type(o) is torch.optim.RMSprop and o.defaults["lr"] == lr for o in (wgan.opt_g, wgan.opt_d))
    assert q2.WGAN["clip"] == 0.01 and q2.WGAN_LRS[0] == 5e-5  # the paper's rate is tried first
    gan = q2.GANTrainer("gan", q2.Generator(), q2.Discriminator(), dict(q2.GAN_DEFAULT), CPU)
    ssgan = ssgan_trainer(q2)
    for trainer, config in ((gan, q2.GAN_DEFAULT), (ssgan, q2.SSGAN)):
        for opt in (trainer.opt_g, trainer.opt_d):
            assert type(opt) is torch.optim.Adam
            assert opt.defaults["lr"] == config["lr"] and opt.defaults["betas"] == tuple(config["betas"])
    assert q2.SSGAN["betas"] == (0.0, 0.9) and q2.SSGAN["lr"] == 2e-4


def test_generators_end_in_tanh(q2):
    assert isinstance(list(q2.Generator().conv)[-1], nn.Tanh)
    assert isinstance(list(q2.SSGenerator(ch=8).out)[-1], nn.Tanh)
    g = q2.Generator().eval()
    with torch.no_grad():
        g.conv[-2].bias.fill_(-50.0)  # the last conv's output far below 0: tanh gives -1, a sigmoid 0
    assert torch.allclose(g(torch.randn(2, 64)), torch.full((2, 1, 28, 28), -1.0))


# ---------------------------------------------------------------- SSGAN losses on a stub discriminator
def test_ssgan_discriminator_loss_is_gan_loss_on_upright_plus_beta_rotation_ce_on_real(q2):
    trainer = ssgan_trainer(q2)
    d_before = copy.deepcopy(trainer.D)
    real = torch.rand(8, 1, 32, 32) * 2 - 1
    torch.manual_seed(3)
    loss, extras = trainer.d_update(real)
    torch.manual_seed(3)
    fake = trainer.G(torch.randn(8, trainer.G.z_dim)).detach()
    rotated, labels = quarter_in_four_orientations(real)
    rot_ce = F.cross_entropy(d_before(rotated)[1], labels)
    expected = (F.softplus(-d_before(real)[0]).mean() + F.softplus(d_before(fake)[0]).mean()
                + q2.SSGAN["beta"] * rot_ce)
    assert q2.SSGAN["beta"] == 1.0
    assert extras["d_rotation"] == pytest.approx(rot_ce.item(), rel=1e-5)
    assert loss == pytest.approx(expected.item(), rel=1e-5)


def test_ssgan_generator_loss_is_non_saturating_plus_alpha_rotation_ce_on_fake(q2):
    trainer, twin = ssgan_trainer(q2), ssgan_trainer(q2)  # the same seeded G and D
    torch.manual_seed(4)
    loss, extras = trainer.g_update(8)
    torch.manual_seed(4)
    fake = twin.G(torch.randn(8, twin.G.z_dim))  # D is unchanged by a G update
    rotated, labels = quarter_in_four_orientations(fake)
    rot_ce = F.cross_entropy(trainer.D(rotated)[1], labels)
    expected = F.softplus(-trainer.D(fake)[0]).mean() + q2.SSGAN["alpha"] * rot_ce
    assert q2.SSGAN["alpha"] == 0.2
    assert extras["g_rotation"] == pytest.approx(rot_ce.item(), rel=1e-4)
    assert loss == pytest.approx(expected.item(), rel=1e-4)


def test_rotation_quarter_and_its_logits(q2):
    x = torch.arange(8 * 9, dtype=torch.float32).view(8, 1, 3, 3)
    rotated, labels = q2.rotation_quarter(x)
    assert rotated.shape == (6, 1, 3, 3) and labels.tolist() == [0, 0, 1, 1, 2, 2, 3, 3]
    assert torch.equal(rotated[:2], torch.rot90(x[:2], 1, dims=(2, 3)))
    assert torch.equal(rotated[4:], torch.rot90(x[:2], 3, dims=(2, 3)))
    assert torch.equal(rotated[0, 0, 0], x[0, 0, :, -1])  # 90 degrees counter-clockwise
    logits = torch.arange(14).view(14, 1)  # a pass over cat([x (8), rotated (6)])
    assert q2.rotation_logits_of_quarter(logits, 8, 2).flatten().tolist() == [0, 1, 8, 9, 10, 11, 12, 13]


def test_ssgan_discriminator_uses_global_sum_pooling(q2):
    d = q2.SSDiscriminator(ch=8).eval()  # eval: spectral norm does no power iteration, outputs repeat
    x = torch.randn(3, 1, 32, 32)
    with torch.no_grad():
        h = d.blocks(x)
        gan, rot = d(x)
        assert torch.allclose(gan, d.gan_head(h.sum(dim=(2, 3))).squeeze(1), atol=1e-5)
        assert torch.allclose(rot, d.rotation_head(h.sum(dim=(2, 3))), atol=1e-5)
    assert h.shape == (3, 8, 8, 8) and (h >= 0).all()  # ReLU before pooling, 32 -> 16 -> 8


def test_ssgan_samples_are_cropped_to_28_for_fid(q2, monkeypatch):
    monkeypatch.setattr(q2, "DEVICE", CPU, raising=False)
    images = q2.generated_digits(ssgan_trainer(q2).G, 6, seed=0, crop=True)
    assert images.shape == (6, 28, 28) and images.dtype == np.uint8


# ---------------------------------------------------------------- the search
def test_search_score_punishes_a_run_falling_away_from_its_best(q2):
    assert q2.search_score([(1, 50.0), (2, 20.0), (3, 30.0)]) == 40.0
    assert q2.search_score([(1, 50.0), (2, 30.0)]) == 30.0


# ---------------------------------------------------------------- data and FID helpers
def test_q2_real_subset_is_reproducible_and_a_stale_one_is_rewritten(q2, tmp_path):
    images = (np.random.default_rng(0).random((300, 28, 28)) * 255).astype(np.uint8)
    folder, indices = q2.fixed_real_subset(images, 40, 7, tmp_path / "a")
    _, again = q2.fixed_real_subset(images, 40, 7, tmp_path / "b")
    _, other = q2.fixed_real_subset(images, 40, 8, tmp_path / "c")
    assert np.array_equal(indices, again) and not np.array_equal(indices, other)
    np.save(folder / "indices.npy", other)
    q2.fixed_real_subset(images, 40, 7, folder)
    assert np.array_equal(np.load(folder / "indices.npy"), indices)
    assert np.array_equal(q2.read_pngs(folder), images[indices])


def test_fid_count_guard(q2):
    q2.check_fid_counts((5000, 5000), q2.MIN_FID_IMAGES)
    with pytest.raises(ValueError, match=">= 2048.*got 1000"):
        q2.check_fid_counts((5000, 1000), q2.MIN_FID_IMAGES)


def test_mnist_with_wrong_image_size_is_refused(q2, tmp_path):
    fake_mnist(tmp_path)
    raw = tmp_path / "MNIST" / "raw"
    write_idx(raw / "train-images-idx3-ubyte", np.zeros((512, 28, 27)), 2051)
    with pytest.raises((ValueError, RuntimeError)):
        q2.load_mnist([tmp_path], tmp_path, allow_download=False)


def test_class_shares_count_the_classifier_labels(q2):
    class FixedClassifier(nn.Module):
        def forward(self, x):  # label = 1 for bright images, 7 for dark ones
            bright = (x.flatten(1).mean(1) > 0).float()
            logits = torch.zeros(len(x), 10)
            logits[:, 1], logits[:, 7] = bright, 1 - bright
            return logits

    images = np.r_[np.full((3, 28, 28), 255), np.zeros((1, 28, 28))].astype(np.uint8)
    shares = q2.class_shares(q2.classifier_probabilities(FixedClassifier(), images, CPU))
    assert shares[1] == 0.75 and shares[7] == 0.25 and sum(shares) == 1.0


# ---------------------------------------------------------------- found by the independent mutation audit
@pytest.mark.parametrize("kind", ["gan", "wgan", "ssgan"])
def test_a_generator_update_changes_the_generator_and_not_the_discriminator(q2, kind):
    torch.manual_seed(0)
    if kind == "ssgan":
        trainer = ssgan_trainer(q2)
    else:
        config = dict(q2.WGAN, lr=q2.WGAN_LRS[0]) if kind == "wgan" else dict(q2.GAN_DEFAULT)
        trainer = q2.GANTrainer(kind, q2.Generator(), q2.Discriminator(), config, CPU)
    g_before = [p.detach().clone() for p in trainer.G.parameters()]
    d_before = [p.detach().clone() for p in trainer.D.parameters()]
    trainer.g_update(8)
    assert any(not torch.equal(a, b) for a, b in zip(g_before, trainer.G.parameters())), "G did not move"
    assert all(torch.equal(a, b) for a, b in zip(d_before, trainer.D.parameters())), "G's step moved D"


def test_gaussian_statistics_are_per_feature(q2):
    features = np.random.default_rng(0).normal(size=(300, 8)) + np.arange(8)
    mu, sigma = q2.gaussian_stats(features)
    assert mu.shape == (8,) and sigma.shape == (8, 8) and np.allclose(sigma, np.cov(features.T))


def test_the_real_subset_has_no_repeated_image(q2, tmp_path):
    images = (np.random.default_rng(0).random((120, 28, 28)) * 255).astype(np.uint8)
    _, indices = q2.fixed_real_subset(images, 100, 3, tmp_path / "s")
    assert len(set(np.asarray(indices).tolist())) == 100
