"""Unit tests of the Q2 notebook's own definitions (networks, losses, SSGAN parts, data, FID)."""
import math

import numpy as np
import pytest
import torch
from torch.nn.utils import parametrize

from conftest import fake_mnist


def conv(c_in, c_out, k):
    return c_in * c_out * k * k + c_out


def linear(n_in, n_out):
    return n_in * n_out + n_out


def bn(c):
    return 2 * c


# ---------------------------------------------------------------- 2-1 networks and the "?" values
def test_generator_shapes_and_question_marks(q2):
    g = q2.Generator().eval()
    out = g(torch.randn(5, 64))
    assert out.shape == (5, 1, 28, 28) and out.abs().max() <= 1
    assert g.fc[3].out_features == 64 * 7 * 7 == 3136  # Linear 2: "?" = 3136
    last_conv = [m for m in g.conv if isinstance(m, torch.nn.Conv2d)][-1]
    assert (last_conv.in_channels, last_conv.out_channels) == (8, 1)  # Conv 6: 8 -> "?" = 1
    after_first_shuffle = g.conv[0](g.fc(torch.randn(2, 64)).view(-1, 64, 7, 7))
    assert after_first_shuffle.shape == (2, 16, 14, 14)  # matches Conv 4's input of 16


def test_discriminator_shapes_and_question_mark(q2):
    d = q2.Discriminator()
    assert d(torch.randn(3, 1, 28, 28)).shape == (3,)
    assert [m for m in d.net if isinstance(m, torch.nn.Linear)][0].in_features == 3136


def test_gan_parameter_counts(q2):
    g = linear(64, 512) + bn(512) + linear(512, 3136) + bn(3136) + conv(16, 32, 3) + bn(32) + conv(8, 1, 3)
    d = conv(1, 32, 4) + conv(32, 64, 4) + linear(3136, 512) + linear(512, 1)
    assert q2.count_parameters(q2.Generator()) == g
    assert q2.count_parameters(q2.Discriminator()) == d


# ---------------------------------------------------------------- losses
def test_gan_losses_match_the_formulas(q2):
    real, fake = torch.tensor([2.0, -1.0, 0.5]), torch.tensor([0.5, -3.0, 1.0])
    sig = lambda a: 1 / (1 + math.exp(-a))
    d_expected = (-np.mean([math.log(sig(a)) for a in real.tolist()])
                  - np.mean([math.log(1 - sig(a)) for a in fake.tolist()]))
    g_expected = -np.mean([math.log(sig(a)) for a in fake.tolist()])
    assert q2.d_loss_gan(real, fake).item() == pytest.approx(d_expected, rel=1e-6)
    assert q2.g_loss_nonsaturating(fake).item() == pytest.approx(g_expected, rel=1e-6)


def test_gan_losses_are_stable_for_extreme_logits(q2):
    big = torch.tensor([200.0, -200.0])
    assert torch.isfinite(q2.d_loss_gan(big, big)) and torch.isfinite(q2.g_loss_nonsaturating(big))
    assert q2.g_loss_nonsaturating(torch.tensor([-200.0])).item() == pytest.approx(200.0)


def test_wgan_losses(q2):
    real, fake = torch.tensor([1.0, 3.0]), torch.tensor([-1.0, 0.0])
    assert q2.d_loss_wgan(real, fake).item() == pytest.approx(-0.5 - 2.0)
    assert q2.g_loss_wgan(fake).item() == pytest.approx(0.5)


def test_weight_clipping_keeps_every_critic_weight_in_bounds(q2):
    torch.manual_seed(0)
    trainer = q2.GANTrainer("wgan", q2.Generator(), q2.Discriminator(), dict(q2.WGAN, lr=q2.WGAN_LRS[0]), torch.device("cpu"))
    assert max(p.abs().max().item() for p in trainer.D.parameters()) > 0.01  # default init exceeds the bound
    _, extras = trainer.d_update(torch.rand(16, 1, 28, 28) * 2 - 1)
    assert max(p.abs().max().item() for p in trainer.D.parameters()) <= 0.01
    assert "wasserstein" in extras


# ---------------------------------------------------------------- 2-3 SSGAN
def test_ssgan_blocks_shapes(q2):
    assert q2.GBlock(8, 8)(torch.randn(2, 8, 4, 4)).shape == (2, 8, 8, 8)
    assert q2.DBlock(1, 8, True, first=True)(torch.randn(2, 1, 32, 32)).shape == (2, 8, 16, 16)
    assert q2.DBlock(8, 8, False)(torch.randn(2, 8, 8, 8)).shape == (2, 8, 8, 8)
    first = q2.DBlock(1, 8, True, first=True)
    assert not isinstance(first.block[0], torch.nn.ReLU)
    assert isinstance(q2.DBlock(8, 8, True).block[0], torch.nn.ReLU)


def test_ssgan_networks_shapes_at_spec_width(q2):
    g, d = q2.SSGenerator(ch=256).eval(), q2.SSDiscriminator(ch=128)
    x = g(torch.randn(2, 128))
    assert x.shape == (2, 1, 32, 32)
    gan_logit, rotation_logits = d(x)
    assert gan_logit.shape == (2,) and rotation_logits.shape == (2, 4)


def test_ssgan_parameter_counts_at_spec_width(q2):
    gblock = bn(256) + conv(256, 256, 3) + bn(256) + conv(256, 256, 3)
    g = linear(128, 4096) + bn(4096) + 3 * gblock + conv(256, 1, 3)
    first = conv(1, 128, 3) + conv(128, 128, 3) + conv(1, 128, 1)
    other = 2 * conv(128, 128, 3) + conv(128, 128, 1)
    d = first + 3 * other + linear(128, 1) + linear(128, 4)
    assert q2.count_parameters(q2.SSGenerator(ch=256)) == g == 4_082_433
    assert q2.count_parameters(q2.SSDiscriminator(ch=128)) == d == 1_084_805


def test_spectral_norm_on_every_discriminator_layer_and_not_in_generator(q2):
    d = q2.SSDiscriminator(ch=16)
    layers = [m for m in d.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    assert len(layers) == 4 * 3 + 2
    assert all(parametrize.is_parametrized(m, "weight") for m in layers)
    assert not any(parametrize.is_parametrized(m) for m in q2.SSGenerator(ch=16).modules())


def test_pad_and_crop_round_trip(q2):
    x = torch.rand(3, 1, 28, 28) * 2 - 1
    padded = q2.pad_to_32(x)
    assert padded.shape == (3, 1, 32, 32)
    assert torch.equal(q2.crop_to_28(padded), x)
    border = torch.ones(32, 32, dtype=torch.bool)
    border[2:30, 2:30] = False
    assert (padded[:, :, border] == -1).all()


def test_ssgan_updates_log_rotation_losses(q2):
    torch.manual_seed(0)
    t = q2.GANTrainer("ssgan", q2.SSGenerator(ch=8), q2.SSDiscriminator(ch=8), dict(q2.SSGAN), torch.device("cpu"))
    _, d_extra = t.d_update(torch.rand(4, 1, 32, 32) * 2 - 1)
    _, g_extra = t.g_update(4)
    assert math.isfinite(d_extra["d_rotation"]) and d_extra["d_rotation"] > 0
    assert math.isfinite(g_extra["g_rotation"]) and g_extra["g_rotation"] > 0


# ---------------------------------------------------------------- data, training, FID
def test_mnist_loads_and_scales(q2, tmp_path):
    fake_mnist(tmp_path)
    images, labels, info = q2.load_mnist([tmp_path], tmp_path, allow_download=False)
    assert images.shape == (512, 28, 28) and images.dtype == np.uint8 and info["n"] == 512
    assert not info["official_size"]
    x = q2.to_model_range(images)
    assert x.shape == (512, 1, 28, 28) and x.min() == -1 and x.max() == 1


def test_missing_mnist_says_where_it_looked(q2, tmp_path):
    with pytest.raises(FileNotFoundError, match="MNIST/raw"):
        q2.load_mnist([tmp_path], tmp_path, allow_download=False)


def test_to_uint8(q2):
    assert q2.to_uint8(torch.tensor([-1.0, 0.0, 1.0, 2.0]).view(1, 1, 1, 4)).tolist() == [[[0, 128, 255, 255]]]


def test_training_logs_every_iteration_and_checks_on_schedule(q2, tmp_path):
    torch.manual_seed(0)
    trainer = q2.GANTrainer("gan", q2.Generator(), q2.Discriminator(), dict(q2.GAN_DEFAULT), torch.device("cpu"))
    history, info = q2.train_gan("t", trainer, torch.rand(256, 1, 28, 28) * 2 - 1, 20, 2, torch.randn(100, 64),
                                 lambda net: 1.0, 5, tmp_path)
    assert len(history["d_loss"]) == len(history["g_loss"]) == 20
    assert [it for it, _ in history["tracked"]["raw"]] == [5, 10, 15, 20] == sorted(history["snapshots"]["raw"])
    assert history["snapshots"]["raw"][20].shape == (100, 28, 28)
    assert info["epochs"] == pytest.approx(20 * 2 * 64 / 256)


def test_the_search_grid_holds_the_dcgan_default_and_distinct_settings(q2):
    keys = [tuple(sorted((k, str(v)) for k, v in s.items())) for s in q2.SEARCH_SETTINGS]
    assert len(set(keys)) == len(keys) >= 4
    assert any(q2.same_setting(s, q2.GAN_DEFAULT) for s in q2.SEARCH_SETTINGS)


def test_fid_refuses_too_few_images(q2):
    with pytest.raises(ValueError, match="at least 2048"):
        q2.feature_statistics(np.zeros((500, 2048)), q2.MIN_FID_IMAGES)


def test_cheap_metric_separates_real_from_noise(q2, tmp_path):
    fake_mnist(tmp_path, n_train=512)
    images, labels, _ = q2.load_mnist([tmp_path], tmp_path, allow_download=False)
    clf = q2.train_classifier(images, labels, 30, torch.device("cpu"))
    real = q2.to_model_range(images)
    a = q2.gaussian_stats(q2.classifier_features(clf, real[:256]))
    b = q2.gaussian_stats(q2.classifier_features(clf, real[256:]))
    noise = q2.gaussian_stats(q2.classifier_features(clf, torch.rand(256, 1, 28, 28) * 2 - 1))
    assert q2.frechet_distance(a, b) < q2.frechet_distance(a, noise)


def test_tenth_means_follow_the_curve_stretch_by_stretch(q2):
    ramp = np.arange(100.0)
    means = q2.tenth_means(ramp)
    assert means == [float(ramp[i:i + 10].mean()) for i in range(0, 100, 10)]
    assert len(q2.tenth_means(np.ones(25))) == 10 and np.mean(q2.tenth_means(ramp)) == pytest.approx(ramp.mean())
