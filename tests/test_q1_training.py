"""Q1: does training do what the assignment asks? The optimised loss, what the controller is fed, the
reparameterisation, and the controller's ramp, clamps and constants. A spy controller stands in for
the real one. (The tests of issue 10's stop rules, MIG and FID helpers come with its rerun.)"""
import math

import numpy as np
import pytest
import torch

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
