"""Q2's notebook as a pipeline: resumable equal-length training, weight averaging, the search, and the
evaluation path, stated as properties that any correct implementation has; then whole smoke-profile
executions of the notebook (and its rerun from the final weights) with checks of what they record."""
import copy
import json
import time

import numpy as np
import pytest
import torch
import torch.nn as nn

from conftest import Q2, fake_mnist, image_outputs, outputs_text, rendered_by_scripts, run_notebook, shared_data_root

CPU = torch.device("cpu")


def small_real(n=256, side=28, seed=0):
    return torch.rand(n, 1, side, side, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def gan_trainer(q, setting=None, ema_decay=0.9):
    setting = dict(q.GAN_DEFAULT) if setting is None else setting
    return q.seeded_trainer("gan", lambda: (q.Generator(), q.Discriminator()), setting, 0, CPU, ema_decay)


def constant_tracker(value=1.0):
    return lambda net: value


def train(q, trainer, tmp_path, iterations, name="m", check_every=2, tracker=None, **kw):
    return q.train_gan(name, trainer, small_real(), iterations, trainer.config.get("d_steps", 1), torch.randn(100, 64),
                       tracker or constant_tracker(), check_every, tmp_path, **kw)


def params(net):
    return torch.cat([p.detach().flatten() for p in net.parameters()])


# ---------------------------------------------------------------- sampling and weight averaging
def test_samples_come_from_eval_mode_and_the_mode_is_restored(q2):
    torch.manual_seed(0)
    G = q2.Generator()
    G.train()(torch.randn(64, 64))  # running statistics that differ from any one batch's
    z = torch.randn(10, 64)
    out = q2.sample_images(G, z)
    assert G.training
    with torch.no_grad():
        expected = G.eval()(z)
        batch_stats = G.train()(z)
    assert torch.equal(out, expected) and not torch.allclose(out, batch_stats)
    digits = q2.generated_digits(G, 10, seed=3)
    z3 = torch.randn(10, 64, generator=torch.Generator().manual_seed(5))  # seed + 2: apart from the cheap FD's noise
    assert np.array_equal(digits, q2.to_uint8(q2.sample_images(G, z3)))
    assert digits.shape == (10, 28, 28) and digits.dtype == np.uint8


def test_recomputed_batchnorm_holds_the_mean_and_variance_of_its_inputs_under_fresh_noise(q2):
    torch.manual_seed(0)
    G = q2.Generator()
    weights = params(G).clone()
    inputs = []
    first_norm = G.fc[1]
    hook = first_norm.register_forward_hook(lambda m, i, o: inputs.append(i[0].detach()))
    q2.recompute_batchnorm(G, n_batches=4, batch_size=128, seed=7)
    hook.remove()
    seen = torch.stack(inputs)  # (4, 128, 512)
    assert not G.training and torch.equal(params(G), weights)  # weights untouched, eval mode
    assert torch.allclose(first_norm.running_mean, seen.mean(dim=(0, 1)), atol=1e-5)
    assert torch.allclose(first_norm.running_var, seen.var(dim=1, unbiased=True).mean(0), rtol=1e-4, atol=1e-6)
    assert first_norm.momentum == 0.1  # restored for training
    again = copy.deepcopy(G)
    q2.recompute_batchnorm(again, n_batches=4, batch_size=128, seed=7)
    assert torch.equal(again.fc[1].running_mean, first_norm.running_mean)  # seeded: the same statistics


def test_the_average_follows_the_closed_form_and_is_not_trained(q2, tmp_path):
    trainer = gan_trainer(q2, ema_decay=0.9)
    start = params(trainer.G).clone()
    assert torch.equal(params(trainer.G_ema), start) and not any(p.requires_grad for p in trainer.G_ema.parameters())
    lives = []
    for _ in range(3):
        trainer.iteration(small_real(), iter([torch.arange(64)] * 2), 1)
        lives.append(params(trainer.G).clone())
    expected = start
    for live in lives:
        expected = 0.9 * expected + 0.1 * live
    assert torch.allclose(params(trainer.G_ema), expected, atol=1e-6)
    assert all(id(p) not in {id(q) for g in trainer.opt_g.param_groups for q in g["params"]} for p in trainer.G_ema.parameters())


def test_the_averaged_generator_is_scored_with_its_own_batchnorm(q2):
    trainer = gan_trainer(q2, ema_decay=0.5)
    trainer.iteration(small_real(), iter([torch.arange(64)] * 2), 1)
    net = trainer.generator("ema")
    assert net is not trainer.G_ema and not net.training
    reference = q2.recompute_batchnorm(copy.deepcopy(trainer.G_ema))
    assert torch.equal(net.fc[1].running_mean, reference.fc[1].running_mean)
    assert not torch.equal(net.fc[1].running_mean, trainer.G.fc[1].running_mean)
    assert trainer.generator("raw") is trainer.G


# ---------------------------------------------------------------- run control
@pytest.mark.parametrize("d_steps", [1, 2])
def test_exact_resume_gives_the_uninterrupted_run(q2, tmp_path, d_steps):
    setting = dict(q2.GAN_DEFAULT, d_steps=d_steps)
    whole, _ = train(q2, gan_trainer(q2, setting), tmp_path / "a", 6)
    straight = torch.load(tmp_path / "a" / "q2_m.pt", weights_only=False)
    train(q2, gan_trainer(q2, setting), tmp_path / "b", 3)
    resumed_trainer = gan_trainer(q2, setting)
    history, info = train(q2, resumed_trainer, tmp_path / "b", 6)
    for key in ("G", "D", "G_ema"):
        for name, value in straight["trainer"][key].items():
            assert torch.equal(value, resumed_trainer.state_dict()[key][name]), (key, name)
    assert history["g_loss"] == whole["g_loss"] and info["segments"] == 2
    assert [s["start"] for s in info["segment_log"]] == [0, 3] and info["segment_log"][-1]["end"] == 6


def test_a_finished_run_trains_nothing_more(q2, tmp_path):
    train(q2, gan_trainer(q2), tmp_path, 4)
    trainer = gan_trainer(q2)
    history, info = train(q2, trainer, tmp_path, 4)
    saved = torch.load(tmp_path / "q2_m.pt", weights_only=False)
    assert info["iterations"] == 4 and len(history["g_loss"]) == 4 and info["segments"] == 1
    assert all(torch.equal(v, trainer.G.state_dict()[k]) for k, v in saved["trainer"]["G"].items())


def test_segments_of_one_process_count_as_one_session(q2, tmp_path):
    train(q2, gan_trainer(q2), tmp_path, 2)
    history, info = train(q2, gan_trainer(q2), tmp_path, 4)
    assert info["segments"] == 2 and info["sessions"] == 1
    other = [dict(s, process="another machine") for s in info["segment_log"][:1]] + info["segment_log"][1:]
    assert q2.sessions(other) == 2 and q2.sessions([{"start": 0}, {"start": 5}]) == 1
    assert not list(tmp_path.glob("*.tmp"))  # checkpoints are written whole, then renamed


def test_checkpoint_of_other_settings_is_set_aside(q2, tmp_path):
    train(q2, gan_trainer(q2), tmp_path, 2)
    history, info = train(q2, gan_trainer(q2, dict(q2.GAN_DEFAULT, lr=1e-3)), tmp_path, 2)
    assert info["segments"] == 1 and (tmp_path / "q2_m.other-settings.pt").is_file()


def test_every_batch_of_an_epoch_is_used_once(q2):
    stream = q2.batches(100, 8, torch.Generator().manual_seed(0))
    epoch = torch.cat([next(stream) for _ in range(100 // 8)])
    assert len(epoch) == 96 and len(set(epoch.tolist())) == 96
    assert not torch.equal(next(stream), epoch[:8])  # the next epoch is a fresh permutation


def test_the_last_iteration_is_always_checked_and_snapshotted(q2, tmp_path):
    history, _ = train(q2, gan_trainer(q2), tmp_path, 5, check_every=2)
    for kind in ("raw", "ema"):
        assert [i for i, _ in history["tracked"][kind]] == [2, 4, 5]
        assert sorted(history["snapshots"][kind]) == [2, 4, 5]
        assert history["snapshots"][kind][5].shape == (100, 28, 28) and history["snapshots"][kind][5].dtype == np.uint8


def test_segment_minutes_are_minutes_and_a_pause_keeps_the_checkpoint(q2, tmp_path):
    t0 = time.time()
    with pytest.raises(q2.TrainingPaused):
        train(q2, gan_trainer(q2), tmp_path, 10_000, segment_minutes=1.5 / 60)
    elapsed = time.time() - t0
    saved = torch.load(tmp_path / "q2_m.pt", weights_only=False)
    assert 1.5 <= elapsed < 30 and 1 <= saved["step"] < 10_000
    assert saved["segments"][0]["seconds"] >= 1.5  # minutes read as seconds would pause after ~0.03 s


def test_a_nan_loss_stops_with_a_clear_error(q2, tmp_path):
    trainer = gan_trainer(q2)
    with torch.no_grad():
        trainer.D.net[-1].bias.fill_(float("nan"))
    with pytest.raises(q2.NonFiniteLoss, match="iteration 1.*learning rate"):
        train(q2, trainer, tmp_path, 3)


# ---------------------------------------------------------------- the reported generator
def history_with(raw, ema):
    its = [500 * (i + 1) for i in range(len(raw))]
    best = lambda values: dict(iteration=its[int(np.argmin(values))], cheap_fd=float(min(values)), G=None)
    return dict(tracked=dict(raw=list(zip(its, raw)), ema=list(zip(its, ema))), best=dict(raw=best(raw), ema=best(ema)))


@pytest.mark.parametrize("raw, ema, kind, restored, iteration", [
    ([9, 5, 4, 4, 4], [9, 6, 5, 3, 3], "ema", False, 2500),   # the average is lower over the last three checks
    ([9, 5, 4, 3, 3], [9, 6, 5, 3, 3], "raw", False, 2500),   # a tie goes to the trained generator
    ([9, 2, 4, 3, 3], [9, 6, 5, 6, 6], "raw", True, 1000),    # final 3 > 1.2 x best 2: the best is reported
    ([9, 5, 2.5, 3, 3], [9, 9, 9, 9, 9], "raw", False, 2500),  # 3 <= 1.2 x 2.5: the final one stays
])
def test_the_report_picks_the_kind_and_the_iteration(q2, raw, ema, kind, restored, iteration):
    report = q2.choose_report(history_with(raw, ema))
    assert (report["kind"], report["restored_best"], report["iteration"]) == (kind, restored, iteration)
    assert report["cheap_fd"] == pytest.approx(min(raw if kind == "raw" else ema) if restored else (raw if kind == "raw" else ema)[-1])


@pytest.mark.parametrize("kind, sequence", [("raw", [5.0, 9.0, 1.0, 9.0, 9.0, 9.0]), ("ema", [9.0, 5.0, 9.0, 1.0, 9.0, 9.0])])
def test_the_restored_best_is_the_network_that_scored_best(q2, tmp_path, kind, sequence):
    scores = iter(sequence)  # checks at 2, 4, 6, each scoring raw then ema; the best (1.0) at 4
    scored = {}

    def tracker(net):
        value = next(scores)
        scored.setdefault(value, {k: v.clone() for k, v in net.state_dict().items()})
        return value

    trainer = gan_trainer(q2)
    history, _ = train(q2, trainer, tmp_path, 6, check_every=2, tracker=tracker)
    report = q2.choose_report(history)
    assert (report["kind"], report["restored_best"], report["iteration"]) == (kind, True, 4)
    net = q2.reported_generator(trainer, history, report)
    assert all(torch.equal(v, net.state_dict()[k]) for k, v in scored[1.0].items())
    assert not net.training and net is not trainer.G
    assert not torch.equal(params(net), params(trainer.G))  # the live generator is left as trained


def test_stages_are_at_5_50_and_100_percent_of_the_reported_iteration(q2):
    snapshots = {i: np.full((100, 28, 28), i % 256, np.uint8) for i in range(500, 20_001, 500)}
    stages = q2.select_stages(snapshots, 12_000)
    assert [it for it, _ in stages.values()] == [500, 6000, 12_000]
    assert all(np.array_equal(images, snapshots[it]) for it, images in stages.values())
    assert [it for it, _ in q2.select_stages(snapshots, 20_000).values()] == [1000, 10_000, 20_000]


def test_final_weights_round_trip_and_refuse_other_settings(q2, tmp_path):
    trainer = gan_trainer(q2)
    history, info = train(q2, trainer, tmp_path, 4)
    report = q2.choose_report(history)
    net = q2.reported_generator(trainer, history, report)
    config = dict(trainer.config, kind="gan", iterations=4)
    q2.export_generator(tmp_path / "w.pt", net, history, info, report, config)
    loaded, light, info2, report2 = q2.load_generator(tmp_path / "w.pt", q2.Generator(), config, CPU)
    z = torch.randn(8, 64)
    assert torch.equal(q2.sample_images(loaded, z), q2.sample_images(net, z))
    assert report2 == report and info2["iterations"] == 4 and len(light["g_loss"]) == 4
    assert set(light["snapshots"]) == {report["kind"]}
    with pytest.raises(ValueError, match="FROM_WEIGHTS = False"):
        q2.load_generator(tmp_path / "w.pt", q2.Generator(), dict(config, lr=1.0), CPU)
    with pytest.raises(FileNotFoundError, match="FROM_WEIGHTS"):
        q2.load_generator(tmp_path / "missing.pt", q2.Generator(), config, CPU)


# ---------------------------------------------------------------- the search
def test_a_finished_run_is_read_from_its_weights_without_its_checkpoint(q2, tmp_path, monkeypatch):
    trainer = gan_trainer(q2)
    history = dict(d_loss=[1.0], g_loss=[1.0], tracked=dict(raw=[(4, 9.0)], ema=[]), snapshots=dict(raw={4: np.zeros((2, 28, 28))}))
    info = dict(iterations=4, segments=1, train_hours=0.1)
    report = dict(kind="raw", iteration=4, restored_best=False)
    calls = []
    for name, value in dict(WEIGHTS=tmp_path, FROM_WEIGHTS=False, RESUME=True, DEVICE=CPU, SEED=0, EMA_DECAY=0.0,
                            DATA_INFO=dict(sha1="x")).items():
        monkeypatch.setattr(q2, name, value, raising=False)
    monkeypatch.setattr(q2, "choose_report", lambda h: report)
    fake_train = lambda name, trainer, iterations: calls.append(iterations) or (history, info)
    q2.finished_model("m", trainer, 4, fake_train)  # trains (here: the stand-in), then exports
    assert calls == [4] and (tmp_path / "q2_m.pt").is_file()
    net, _, info_again, report_again = q2.finished_model("m", trainer, 4, fake_train)
    assert calls == [4] and info_again == info and report_again == report  # finished: read back, nothing trained
    assert all(torch.equal(a, b) for a, b in zip(net.state_dict().values(), trainer.G.state_dict().values()))
    q2.finished_model("m", trainer, 6, fake_train)  # a longer budget is another run: it trains
    assert calls == [4, 6]
    monkeypatch.setattr(q2, "RESUME", False)
    q2.finished_model("m", trainer, 6, fake_train)  # RESUME = False retrains whatever is on disk
    assert calls == [4, 6, 6]


def test_every_setting_starts_from_the_same_networks(q2):
    a = gan_trainer(q2, dict(q2.GAN_DEFAULT))
    b = gan_trainer(q2, dict(q2.GAN_DEFAULT, lr=1e-3, betas=(0.0, 0.9)))
    assert torch.equal(params(a.G), params(b.G)) and torch.equal(params(a.D), params(b.D))


def test_successive_halving_keeps_the_better_half_and_ranks_the_furthest_first(q2):
    scores = {0: 5.0, 1: 1.0, 2: 3.0, 3: 2.0, 4: 4.0}
    reached = {}

    def advance(i, rung):
        reached[i] = rung
        return scores[i] + (10 if rung == 200 and i == 1 else 0)  # setting 1 collapses on the second rung

    rows = q2.successive_halving(5, [100, 200], advance)
    assert reached == {0: 100, 1: 200, 2: 100, 3: 200, 4: 100}  # the better two (1 and 3) went on
    assert [r["index"] for r in rows] == [3, 1, 2, 4, 0]  # furthest rung first, then score


def test_search_score_rewards_the_end_and_penalises_a_fall_from_the_best(q2):
    assert q2.search_score([(1, 10.0), (2, 5.0)]) == 5.0
    assert q2.search_score([(1, 3.0), (2, 5.0)]) == 7.0


def test_the_last_rung_holds_the_winner_and_the_default_once(q2):
    default = dict(lr=2e-4, betas=(0.5, 0.999), d_steps=1, batch_size=64)
    other = dict(default, betas=(0.0, 0.9))
    assert q2.final_rung_candidates(other, default) == {"gan_winner": other, "gan_default": default}
    assert q2.final_rung_candidates(dict(default, betas=[0.5, 0.999]), default) == {"gan_winner": dict(default, betas=[0.5, 0.999])}
    assert q2.final_rung_candidates(None, default) == {"gan_default": default}
    reports = {"gan_winner": dict(cheap_fd=30.0), "gan_default": dict(cheap_fd=20.0)}
    assert q2.pick_final(reports) == "gan_default" and q2.pick_final({"gan_winner": reports["gan_winner"]}) == "gan_winner"
    rows = [dict(other, tracked=[[2, 5.0], [4, 3.0]]), dict(default, betas=[0.5, 0.999], tracked=[[2, 9.0]])]
    assert q2.search_value_at(rows, default, 2) == 9.0 and q2.search_value_at(rows, other, 4) == 3.0
    assert q2.search_value_at(rows, default, 4) is None and q2.search_value_at([], default, 2) is None


def test_the_search_scores_each_row_at_its_rungs_end_and_its_winner_continues(q2, tmp_path, monkeypatch):
    monkeypatch.setattr(q2, "CHECKPOINTS", tmp_path, raising=False)
    settings = [dict(q2.GAN_DEFAULT, lr=lr) for lr in (2e-4, 1e-3, 5e-5)]
    fd = iter(np.linspace(9, 1, 200))  # every check scores lower than the one before
    tracker = lambda net: float(next(fd))
    make = lambda s: gan_trainer(q2, s)
    run = lambda name, trainer, it, s: train(q2, trainer, tmp_path, it, name=name, tracker=tracker)
    rows = q2.run_search("gan", settings, [2, 4], make, run, "s")
    assert [r["iterations"] for r in rows] == [4, 2, 2]
    for row in rows:
        assert row["score"] == pytest.approx(q2.search_score(row["tracked"]))
        assert row["tracked"][-1][0] == row["iterations"]  # scored at the end of its rung
    assert rows[0]["score"] == min(r["score"] for r in rows if r["iterations"] == 4)
    q2.adopt_winner("s", rows, "gan")
    assert sorted(p.name for p in tmp_path.glob("q2_*.pt")) == ["q2_gan.pt"]
    history, info = train(q2, make(settings[rows[0]["candidate"]]), tmp_path, 6, name="gan", tracker=tracker)
    assert info["segment_log"][0]["start"] == 0 and info["segment_log"][-1]["start"] == 4  # continued, not restarted


def test_a_resumed_search_scores_a_run_past_its_rung_at_the_rung(q2, tmp_path):
    settings = [dict(q2.GAN_DEFAULT, lr=lr) for lr in (2e-4, 1e-3)]
    fd = iter(np.linspace(9, 1, 200))
    tracker = lambda net: float(next(fd))
    make = lambda s: gan_trainer(q2, s)
    run = lambda name, trainer, it, s: train(q2, trainer, tmp_path, it, name=name, tracker=tracker)
    run("s0", make(settings[0]), 6, settings[0])  # an interrupted search had taken setting 0 beyond the first rung
    rows = q2.run_search("gan", settings, [4], make, run, "s")
    row = next(r for r in rows if r["candidate"] == 0)
    assert row["iterations"] == 4 and row["tracked"][-1][0] == 4
    assert row["score"] == pytest.approx(q2.search_score(row["tracked"]))


def test_a_finished_search_is_read_back_not_rerun(q2, tmp_path, monkeypatch):
    monkeypatch.setattr(q2, "CHECKPOINTS", tmp_path, raising=False)
    calls = []

    def fake_train(name, trainer, iterations, setting):
        calls.append((name, iterations))
        return dict(tracked=dict(raw=[(iterations, setting["lr"] * 1e4)])), dict(iterations=iterations, train_seconds=1.0)

    settings = [dict(lr=lr, betas=(0.5, 0.999)) for lr in (3e-4, 1e-4, 2e-4)]
    kw = dict(data_sha1="x", seed=0, check_every=2, ema_decay=0.9)
    args = ("gan", settings, [2], lambda s: None, fake_train, "p", tmp_path / "s.json", "gan")
    rows = q2.search_once(*args, **kw)
    assert [r["lr"] for r in rows] == [1e-4, 2e-4, 3e-4] and len(calls) == 3
    assert json.loads(json.dumps(q2.search_once(*args, **kw))) == json.loads(json.dumps(rows)) and len(calls) == 3
    q2.search_once(*args[:-2], tmp_path / "other.json", "gan", **dict(kw, seed=1))
    assert len(calls) == 6  # other settings: a new search
    with pytest.raises(FileNotFoundError, match="FROM_WEIGHTS"):
        q2.search_once(*args[:-2], tmp_path / "missing.json", "gan", from_weights=True, **kw)


# ---------------------------------------------------------------- the classifier and its scores
class RangeProbe(nn.Module):
    """A 'classifier' that records its input and labels a digit by its mean pixel: class = round(4.5 (mean + 1))."""

    def __init__(self):
        super().__init__()
        self.features = nn.Flatten()
        self.head = nn.Identity()
        self.seen = []

    def forward(self, x):
        self.seen.append(x)
        label = torch.round(4.5 * (x.mean(dim=(1, 2, 3)) + 1)).long().clamp(0, 9)
        return 50.0 * nn.functional.one_hot(label, 10).float()


def test_the_classifier_sees_digits_in_the_range_it_was_trained_on(q2):
    probe = RangeProbe()
    black, white = np.zeros((3, 28, 28), np.uint8), np.full((2, 28, 28), 255, np.uint8)
    probs = q2.classifier_probabilities(probe, np.concatenate([black, white]), CPU)
    seen = torch.cat(probe.seen)
    assert seen.min() == -1 and seen.max() == 1  # the scaling of to_model_range, as in training
    assert np.allclose(probs.sum(1), 1) and q2.class_shares(probs) == [0.6] + [0.0] * 8 + [0.4]
    assert q2.legible_share(probs) == 1.0


def test_legible_share_counts_confident_labels_only(q2):
    probs = np.array([[0.9, 0.1] + [0] * 8, [0.89, 0.11] + [0] * 8, [0.5, 0.5] + [0] * 8, [0, 1.0] + [0] * 8])
    assert q2.legible_share(probs) == 0.5 and q2.class_shares(probs)[:2] == [0.75, 0.25]


def test_the_cheap_fd_uses_the_penultimate_features_and_fixed_noise(q2):
    torch.manual_seed(0)
    classifier = q2.DigitClassifier().eval()
    real = small_real(300)
    cheap = q2.make_cheap_fd(classifier, real, 200, CPU, seed=0)
    G = q2.Generator()
    first = cheap(G)
    assert cheap(G) == first  # the same noise every check
    with torch.no_grad():
        classifier.head.weight.mul_(5)  # the logits change; the features do not
    assert cheap(G) == pytest.approx(first, rel=1e-9)
    z = torch.randn(200, 64, generator=torch.Generator().manual_seed(1))
    fake = q2.to_model_range(q2.to_uint8(q2.sample_images(G, z)))
    idx = torch.randperm(300, generator=torch.Generator().manual_seed(0))[:200]
    stats = [q2.gaussian_stats(q2.classifier_features(classifier, x)) for x in (real[idx], fake)]
    assert first == pytest.approx(q2.frechet_distance(*stats), rel=1e-9)


@pytest.fixture(scope="module")
def real_mnist(q2):
    root = shared_data_root()
    if root is None or not (root / "MNIST" / "raw").is_dir():
        pytest.skip("offline MNIST not found (set HW6_DATA_ROOT)")
    train_set = q2.load_mnist([root], root, False, train=True)
    test_set = q2.load_mnist([root], root, False, train=False)
    return train_set, test_set


def test_real_test_digits_score_as_real_digits_through_the_notebooks_path(q2, real_mnist, tmp_path):
    (train_images, train_labels, _), (test_images, test_labels, _) = real_mnist
    classifier, info = q2.trained_classifier(tmp_path / "c.pt", train_images[:10000], train_labels[:10000], 300, CPU)
    again, info2 = q2.trained_classifier(tmp_path / "c.pt", train_images[:10000], train_labels[:10000], 300, CPU)
    assert info2["loaded"] == "c.pt" and info["loaded"] is None
    probs = q2.classifier_probabilities(again, test_images[:3000], CPU)
    shares = np.array(q2.class_shares(probs))
    assert np.all((shares > 0.07) & (shares < 0.13))  # near uniform, as MNIST's classes are
    assert q2.legible_share(probs) > 0.8 and (probs.argmax(1) == test_labels[:3000]).mean() > 0.9


# ---------------------------------------------------------------- FID-side helpers
def test_precision_and_recall_measure_fidelity_and_coverage(q2):
    rng = np.random.default_rng(0)
    real = np.concatenate([rng.normal(0, 0.1, (100, 4)), rng.normal(5, 0.1, (100, 4))])
    same = q2.precision_recall(real, real.copy())
    one_mode = q2.precision_recall(real, rng.normal(0, 0.1, (100, 4)))
    far = q2.precision_recall(real, rng.normal(50, 0.1, (100, 4)))
    assert same == dict(precision=1.0, recall=1.0, precision_se=0.0, recall_se=0.0)
    assert one_mode["precision"] >= 0.85 and 0.3 <= one_mode["recall"] <= 0.5  # faithful, but half the modes
    assert far == dict(precision=0.0, recall=0.0, precision_se=0.0, recall_se=0.0)


def test_features_are_cached_by_content(q2, tmp_path):
    calls = []

    def fake_features(images, model, device, batch_size):
        calls.append(len(images))
        return images.reshape(len(images), -1).astype(np.float64)

    real_features = q2.inception_features
    q2.inception_features = fake_features
    try:
        a = np.zeros((5, 28, 28), np.uint8)
        b = a.copy()
        b[0, 0, 0] = 1
        first = q2.cached_features(a, None, CPU, 10, tmp_path, 2048)
        second = q2.cached_features(a.copy(), None, CPU, 10, tmp_path, 2048)
        third = q2.cached_features(b, None, CPU, 10, tmp_path, 2048)
    finally:
        q2.inception_features = real_features
    assert calls == [5, 5] and np.array_equal(first, second) and not np.array_equal(first, third)


def test_too_few_images_for_fid_is_refused(q2):
    with pytest.raises(ValueError, match="at least 2048"):
        q2.feature_statistics(np.zeros((100, 2048)), 2048)
    with pytest.raises(ValueError, match=">= 2048"):
        q2.check_fid_counts((5000, 1000), 2048)


class DigitFeatureProbe:
    """Stands in for Inception: a few features of 8-bit digits, enough to tell two sets of digits apart."""

    def __call__(self, images, model, device, batch_size=100):
        flat = images.reshape(len(images), -1).astype(np.float64) / 255
        projection = flat @ np.random.default_rng(1).normal(size=(flat.shape[1], 3)) / 28
        return np.concatenate([flat.mean(1, keepdims=True), projection], axis=1)


def test_each_q2_score_is_computed_on_the_digits_it_names(q2, tmp_path, monkeypatch):
    probe, classifier = DigitFeatureProbe(), RangeProbe()
    real_digits = (np.random.default_rng(2).random((60, 28, 28)) < 0.2).astype(np.uint8) * 255
    real = probe(real_digits, None, None)
    for name, value in dict(inception_features=probe, INCEPTION=None, DEVICE=CPU, FID_BATCH_SIZE=10, SAMPLES=tmp_path,
                            FEATURE_CACHE=tmp_path / "features", SETTINGS=dict(fid_dims=4), MIN_IMAGES=2, REAL_FEATURES=real, REAL_STATS=q2.gaussian_stats(real), FID_FLOOR=0.0,
                            REAL_ROOT=q2.covariance_root(q2.gaussian_stats(real)[1]),
                            REAL_INDICES=np.arange(60), CLASSIFIER=classifier).items():
        monkeypatch.setattr(q2, name, value, raising=False)
    torch.manual_seed(0)
    G = q2.Generator()
    scores = q2.generated_scores("m", G, 50, seed=0)
    digits = q2.generated_digits(G, 50, seed=0)
    assert np.array_equal(q2.read_pngs(tmp_path / "q2_m"), digits)  # the PNGs are the digits scored
    features = probe(digits, None, None)
    assert scores["fid"] == pytest.approx(q2.frechet_distance(q2.REAL_STATS, q2.gaussian_stats(features)))
    assert scores["fid_se"] == q2.fid_standard_error(q2.REAL_STATS, q2.REAL_ROOT, features, q2.FID_BOOTSTRAP, q2.SEED)
    assert {k: scores[k] for k in ("precision", "recall", "precision_se", "recall_se")} == q2.precision_recall(real, features)
    probabilities = q2.classifier_probabilities(classifier, digits, CPU)
    assert scores["class_share"] == q2.class_shares(probabilities)
    assert scores["legible_share"] == q2.legible_share(probabilities) and scores["n"] == 50
    assert q2.digit_scores(real_digits, real)["fid"] == pytest.approx(0, abs=1e-6)  # a set against itself
    monkeypatch.setattr(q2, "inception_features", None)  # a rerun on the same digits needs no Inception pass
    assert q2.generated_scores("m", G, 50, seed=0) == scores


def test_generator_output_becomes_the_8_bit_image_a_png_stores(q2):
    x = torch.tensor([-1.0, -0.5, 0.0, 0.5, 1.0, 1.7, -3.0]).view(1, 1, 1, 7)
    assert q2.to_uint8(x).tolist() == [[[0, 64, 128, 191, 255, 255, 0]]]  # round(127.5 (x + 1)), clipped
    digits = np.array([[[0, 128, 255]]], np.uint8)
    assert np.array_equal(q2.to_uint8(q2.to_model_range(digits)), digits)  # the two scalings invert each other


# ---------------------------------------------------------------- the whole notebook, smoke profile
@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("q2")
    data = fake_mnist(tmp_path / "data")
    kw = dict(PROFILE="smoke", DATA_ROOT=str(data), DATA_DIR=str(data), OUTPUT_DIR=str(tmp_path), ALLOW_DOWNLOAD=False)
    nb = run_notebook(Q2, tmp_path, **kw)
    results = json.loads((tmp_path / "results" / "q2.json").read_text())
    return tmp_path, kw, nb, results


def test_smoke_run_trains_each_model_its_iterations_and_records_how(smoke_run):
    tmp_path, _, nb, r = smoke_run
    iterations = dict(gan=8, wgan=6, ssgan=6)  # the smoke profile's
    assert r["run"]["iterations"] == iterations
    for name, m in r["models"].items():
        assert m["iterations"] == iterations[name] and m["segment_log"][-1]["end"] == iterations[name]
        assert m["train_hours"] == pytest.approx(sum(s["seconds"] for s in m["segment_log"]) / 3600)
        assert m["reported"]["kind"] in ("raw", "ema") and 0 < m["reported"]["iteration"] <= iterations[name]
        assert m["d_steps"] == {"gan": r["settings"]["gan"]["d_steps"], "wgan": 5, "ssgan": 1}[name]
        assert m["image_size"] == [28, 28] and len(list((tmp_path / "samples" / f"q2_{name}").glob("*.png"))) == 16
        for key in ("precision", "recall", "legible_share"):
            assert 0 <= m[key] <= 1
        assert sum(m["class_share"]) == pytest.approx(1)
    assert "not the official 60,000" in outputs_text(nb) and "REDUCED WIDTH" in outputs_text(nb)


def test_smoke_run_search_chooses_its_best_row_and_the_gan_continues_from_it(smoke_run):
    _, _, _, r = smoke_run
    rows, chosen = r["search"]["rows"], r["search"]["chosen"]
    assert len(rows) == 5 and r["search"]["rungs"] == [2, 4]
    assert any(s == dict(lr=2e-4, betas=[0.5, 0.999], d_steps=1, batch_size=64) for s in r["search"]["settings"])
    furthest = max(row["iterations"] for row in rows)
    assert rows[0]["score"] == min(row["score"] for row in rows if row["iterations"] == furthest)
    assert {k: rows[0][k] for k in chosen} == chosen
    winner_log = r["search"]["final_rung"]["runs"]["gan_winner"]["info"]["segment_log"]
    assert winner_log[0]["start"] == 0 and any(s["start"] == furthest for s in winner_log)  # the search's run, continued


def test_smoke_run_last_rung_runs_the_winner_and_the_default_and_reports_the_better(smoke_run):
    _, _, _, r = smoke_run
    rung, default = r["search"]["final_rung"], dict(lr=2e-4, betas=[0.5, 0.999], d_steps=1, batch_size=64)
    runs = rung["runs"]
    assert runs["gan_winner"]["setting"] == r["search"]["chosen"]
    assert (default in [run["setting"] for run in runs.values()]) and len(runs) == 1 + (r["search"]["chosen"] != default)
    assert rung["chosen"] == min(runs, key=lambda n: runs[n]["report"]["cheap_fd"]) == r["models"]["gan"]["run"]
    assert r["settings"]["gan"] == runs[rung["chosen"]]["setting"]
    assert r["models"]["gan"]["reported"] == runs[rung["chosen"]]["report"]
    for run in runs.values():  # each run reaches the full budget and repeats the search's curve where they overlap
        assert run["info"]["iterations"] == rung["iterations"] == r["run"]["iterations"]["gan"]
        row = next(row for row in r["search"]["rows"] if {k: row[k] for k in default} == run["setting"])
        in_run = dict(map(tuple, run["tracked"]["raw"]))
        assert row["tracked"] and all(in_run[i] == pytest.approx(v, rel=1e-6) for i, v in row["tracked"])
    trial = r["wgan_lr"]["rows"]
    assert sorted(row["lr"] for row in trial) == sorted(r["wgan_lr"]["rates"]) and r["wgan_lr"]["chosen"] == trial[0]["lr"]


def test_smoke_run_references_are_real_digits_of_another_split(smoke_run):
    tmp_path, _, _, r = smoke_run
    ref = r["reference"]
    assert ref["fid"] == r["fid_floor"] and 0 <= ref["precision"] <= 1 and 0 <= ref["recall"] <= 1
    assert "test" in r["fid"]["floor_subset"] and "train" in r["fid"]["real_subset"]
    assert len(ref["class_share"]) == 10 and 0 <= ref["legible_share"] <= 1


def test_the_readme_table_and_run_summary_render_this_format(smoke_run):
    _, _, _, r = smoke_run
    rows, summary = rendered_by_scripts("q2", r)
    assert [row[0].split(" (")[0] for row in rows] == ["Q2 gan", "Q2 wgan", "Q2 ssgan"] and all(len(row) == 7 for row in rows)
    for row, m in zip(rows, r["models"].values()):
        assert row[2] == f"{m['fid']:.2f} ± {m['fid_se']:.2f}" and f"iteration {m['reported']['iteration']:,}" in row[3]
    assert sum(line.startswith(("- gan", "- wgan", "- ssgan")) for line in summary) == 3


def test_smoke_run_shows_every_figure_it_saves(smoke_run):
    tmp_path, _, nb, _ = smoke_run
    written = {p.name for p in (tmp_path / "figures").glob("q2_*.png")}
    expected = {f"q2_{n}_{f}.png" for n in ("gan", "wgan", "ssgan") for f in ("losses", "stages")}
    assert expected | {"q2_search.png", "q2_gan_final_rung.png", "q2_wgan_lr.png", "q2_quality_over_training.png", "q2_class_shares.png"} <= written
    assert image_outputs(nb) >= len(written)
    assert {p.name for p in (tmp_path / "figures" / "report").glob("q2_*.png")} == written  # the report's copies


def test_from_weights_reproduces_every_score_without_training(smoke_run):
    tmp_path, kw, _, before = smoke_run
    for checkpoint in (tmp_path / "checkpoints").glob("*.pt"):
        checkpoint.unlink()  # what the final commit keeps: weights/ only
    nb = run_notebook(Q2, tmp_path, **dict(kw, FROM_WEIGHTS=True))
    after = json.loads((tmp_path / "results" / "q2.json").read_text())
    assert not list((tmp_path / "checkpoints").glob("*.pt"))  # nothing trained
    for name in ("gan", "wgan", "ssgan"):
        for key in ("fid", "precision", "recall", "legible_share", "class_share", "reported", "segment_log"):
            assert after["models"][name][key] == before["models"][name][key], (name, key)
    assert after["search"]["rows"] == before["search"]["rows"]
    text = outputs_text(nb)
    assert " ETA " not in text and "resumed from checkpoint" not in text and "final generator loaded" in text


def test_smoke_run_references_come_from_the_two_real_subsets_features(smoke_run, q2):
    tmp_path, kw, _, r = smoke_run
    data = tmp_path / "data"
    (train, train_labels, _), (test, _, _) = (q2.load_mnist([data], data, False, train=t) for t in (True, False))
    real_dir, floor_dir = (data / r["fid"][key].removeprefix("data/") for key in ("real_subset", "floor_subset"))
    real_digits, floor_digits = train[np.load(real_dir / "indices.npy")], test[np.load(floor_dir / "indices.npy")]
    assert np.array_equal(q2.read_pngs(real_dir), real_digits) and np.array_equal(q2.read_pngs(floor_dir), floor_digits)
    real_f, floor_f = (np.load(data / "fid" / f"features_{q2.content_sha1(d)}_64.npy") for d in (real_digits, floor_digits))
    assert {k: r["reference"][k] for k in ("precision", "recall", "precision_se", "recall_se")} == q2.precision_recall(real_f, floor_f)
    assert r["fid_floor"] == pytest.approx(q2.frechet_distance(q2.gaussian_stats(real_f), q2.gaussian_stats(floor_f)))
    # the reference labels are the classifier's on the same test digits
    classifier, info = q2.trained_classifier(tmp_path / "weights" / "q2_classifier.pt", train, train_labels,
                                                  r["classifier"]["steps"], CPU, r["classifier"]["seed"])
    probabilities = q2.classifier_probabilities(classifier, floor_digits, CPU)
    assert info["loaded"] and r["reference"]["class_share"] == pytest.approx(q2.class_shares(probabilities))
    assert r["reference"]["legible_share"] == pytest.approx(q2.legible_share(probabilities))


@pytest.mark.parametrize("notebook", ["q1", "q2"])  # both notebooks define their own precision_recall
def test_recall_is_precision_with_the_roles_swapped(notebook, request):
    """Kynkäänniemi et al.'s two measures are one test seen from each side: recall(real, generated) is the
    share of real points inside the generated points' k-NN balls, i.e. precision(generated, real)."""
    rng = np.random.default_rng(0)
    real, generated = rng.normal(size=(60, 4)), rng.normal(0.5, 0.6, size=(50, 4))
    precision_recall = request.getfixturevalue(notebook).precision_recall
    forward, backward = precision_recall(real, generated), precision_recall(generated, real)
    assert abs(forward["recall"] - backward["precision"]) <= 1 / 60 and abs(forward["precision"] - backward["recall"]) <= 1 / 50
    assert abs(forward["recall"] - forward["precision"]) > 0.05  # the two differ on these sets


@pytest.mark.parametrize("notebook", ["q1", "q2"])  # both notebooks define their own FID standard error
def test_the_fid_with_a_precomputed_root_is_pytorch_fids_value(notebook, request):
    nb = request.getfixturevalue(notebook)
    rng = np.random.default_rng(1)
    real, generated = rng.normal(size=(400, 12)), rng.normal(0.3, 1.4, size=(300, 12)) @ rng.normal(size=(12, 12))
    real_stats = (real.mean(axis=0), np.cov(real, rowvar=False))
    root = nb.covariance_root(real_stats[1])
    assert np.allclose(root @ root, real_stats[1]) and np.allclose(root, root.T)
    fid = nb.frechet_distance_from_root(real_stats, root, generated.mean(axis=0), np.cov(generated, rowvar=False))
    assert fid == pytest.approx(nb.frechet_distance(real_stats, (generated.mean(axis=0), np.cov(generated, rowvar=False))), rel=1e-9)


@pytest.mark.parametrize("notebook", ["q1", "q2"])
def test_the_fid_standard_error_is_the_spread_over_resamples_of_the_generated_set(notebook, request):
    nb = request.getfixturevalue(notebook)
    rng = np.random.default_rng(2)
    real = rng.normal(size=(2000, 6))
    real_stats = (real.mean(axis=0), np.cov(real, rowvar=False))
    root = nb.covariance_root(real_stats[1])
    small, large = rng.normal(0.5, 1.0, size=(100, 6)), rng.normal(0.5, 1.0, size=(1600, 6))
    se_small, se_large = (nb.fid_standard_error(real_stats, root, f, 40, 0) for f in (small, large))
    assert se_small == nb.fid_standard_error(real_stats, root, small, 40, 0)  # seeded
    assert 0 < se_large < se_small / 2  # 16x the samples: about a quarter of the spread
    identical = np.repeat(small[:1], 50, axis=0)  # every resample is the same set: no spread
    assert nb.fid_standard_error(real_stats, root, identical, 10, 0) == pytest.approx(0, abs=1e-9)
    assert nb.fid_standard_error(real_stats, root, small, 1, 0) is None


@pytest.mark.parametrize("notebook", ["q1", "q2"])
def test_separations_measure_each_adjacent_gap_in_standard_errors(notebook, request):
    nb = request.getfixturevalue(notebook)
    value, error = ("fid_binary", "fid_binary_se") if notebook == "q1" else ("fid", "fid_se")
    scores = dict(a={value: 10.0, error: 3.0}, b={value: 20.0, error: 4.0}, c={value: 21.0, error: None})
    out = nb.separations(scores, ["a", "b", "c"])
    assert [(p["better"], p["worse"]) for p in out] == [("a", "b"), ("b", "c")]
    assert out[0]["difference"] == 10.0 and out[0]["in_se"] == pytest.approx(2.0)  # 10 / sqrt(9 + 16)
    assert out[1]["difference"] == 1.0 and out[1]["in_se"] is None


@pytest.mark.parametrize("notebook", ["q1", "q2"])
def test_a_k_nn_radius_is_the_distance_to_the_kth_nearest_other_point(notebook, request):
    points = np.array([[0.0], [1.0], [3.0], [6.0], [10.0]])
    radii = request.getfixturevalue(notebook).knn_radii
    assert radii(points, 1) == pytest.approx([1, 1, 2, 3, 4])  # the point itself is not its own neighbour
    assert radii(points, 2) == pytest.approx([3, 2, 3, 4, 7])


@pytest.mark.parametrize("notebook", ["q1", "q2"])
def test_precision_and_recall_carry_the_standard_error_of_a_share_over_their_own_image_counts(notebook, request):
    nb = request.getfixturevalue(notebook)
    rng = np.random.default_rng(0)
    real, generated = rng.normal(size=(400, 4)), rng.normal(scale=0.7, size=(100, 4))  # different counts
    pr = nb.precision_recall(real, generated)
    assert 0 < pr["precision"] < 1 and 0 < pr["recall"] < 1
    assert pr["precision_se"] == pytest.approx(np.sqrt(pr["precision"] * (1 - pr["precision"]) / 100))  # over generated
    assert pr["recall_se"] == pytest.approx(np.sqrt(pr["recall"] * (1 - pr["recall"]) / 400))  # over real
    assert nb.with_se(12.344, 0.556) == "12.34 ± 0.56" and nb.with_se(0.61234, 0.0069, 3) == "0.612 ± 0.007"
    assert nb.with_se(12.344, None) == "12.34" and nb.se_cell(None).strip() == "-"  # no bootstrap: no '± 0.00'


@pytest.mark.parametrize("notebook, english, number, persian_number", [
    ("q1", "iteration", "other (3848)", "۳۸۴۸"), ("q2", "generator iteration", "share of 5,000 digits", "۵٬۰۰۰")])
def test_report_copies_translate_their_labels_into_right_to_left_persian(notebook, english, number, persian_number,
                                                                        request, tmp_path):
    import matplotlib.pyplot as plt
    nb = request.getfixturevalue(notebook)
    for label in (nb.persian_label(english), nb.persian_label(number)):
        assert label.startswith(nb.RLM) and any("\u0600" <= ch <= "\u06ff" for ch in label)  # Persian, read RTL
    assert persian_number in nb.persian_label(number) and "5" not in nb.persian_label(number).replace("\u06f5", "")
    assert nb.persian_label("z7") is None and nb.persian_label("") is None  # names and numbers stay
    fig, ax = plt.subplots()
    ax.set_xlabel(english)
    ax.set_ylabel("unchanged")
    nb.translate_labels(fig)
    assert ax.get_xlabel() == nb.persian_label(english) and nb.PERSIAN_FONT in ax.xaxis.label.get_fontfamily()
    assert ax.get_ylabel() == "unchanged"
    plt.close(fig)
    nb.OUT = tmp_path  # a checkout without report/fonts (e.g. the notebook alone on Colab): English labels
    assert nb.persian_font_ready() is False


def test_the_gan_legends_are_translated_with_every_number_in_persian_digits(q2):
    search = q2.persian_label("1. lr 0.0002, betas (0.0, 0.9), D steps 2")
    assert search == q2.RLM + "۱. نرخ ۰٫۰۰۰۲، ضرایب (۰٫۰، ۰٫۹)، ۲ گام D"
    assert "۰٫۰۰۰۰۵" in q2.persian_label("2. RMSprop lr 5e-05 (paper)")  # e-notation written out
    assert q2.persian_label("default: lr 0.0002, betas (0.5, 0.999) (EMA)").endswith("(۰٫۵، ۰٫۹۹۹)، EMA")


@pytest.mark.parametrize("notebook", ["q1", "q2"])
def test_report_copies_print_no_text_below_the_minimum_and_keep_the_notebook_figure(notebook, request, tmp_path):
    import matplotlib.pyplot as plt
    nb = request.getfixturevalue(notebook)
    nb.FIGURES = tmp_path
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))  # a wide figure: the report shrinks it by half
    for ax in axes:
        ax.plot([0, 1], [1, 0], label="curve")
        ax.set_xlabel("iteration", fontsize=6)
        ax.tick_params(labelsize=5)
    fig.legend(*axes[0].get_legend_handles_labels(), loc="center right", fontsize=7)
    fig.suptitle("English title", fontsize=9)
    nb.save_report_copy(fig, "wide.png")
    shrink = nb.REPORT_WIDTH_INCHES / 11
    printed = [t.get_fontsize() * shrink for t in fig.findobj(__import__("matplotlib").text.Text) if t.get_text()]
    printed += [label.get_fontsize() * shrink for ax in axes for label in ax.get_xticklabels() + ax.get_yticklabels()]
    assert min(printed) >= nb.REPORT_MIN_POINTS - 1e-9 and fig.get_suptitle() == ""
    assert (tmp_path / "report" / "wide.png").is_file()
    legend_left = fig.legends[0].get_window_extent(fig.canvas.get_renderer()).x0
    assert max(ax.get_tightbbox(fig.canvas.get_renderer()).x1 for ax in axes) <= legend_left + 1  # no overlap
    narrow, ax = plt.subplots(figsize=(4, 3))  # narrower than the report's width: nothing to enlarge
    ax.set_xlabel("x", fontsize=9)
    nb.save_report_copy(narrow, "narrow.png")
    assert ax.xaxis.label.get_fontsize() == 9
    plt.close("all")


def test_the_training_log_shows_each_tenths_mean_losses_and_its_last_checks(q2):
    history = dict(d_loss=[float(i) for i in range(1, 101)], g_loss=[2.0] * 100,
                   tracked=dict(raw=[(25, 9.0), (50, 8.0), (100, 7.0)], ema=[(50, 6.0), (100, 5.0)]))
    lines = q2.training_log(history, ["d_loss", "g_loss"]).splitlines()
    assert len(lines) == 11  # a header and one line per tenth
    first, third, last = lines[1].split(), lines[3].split(), lines[10].split()
    assert first[:3] == ["1-10", "5.500", "2.000"] and first[3:] == ["-", "/", "-"]  # no check yet in the first tenth
    assert third[:2] == ["21-30", "25.500"] and third[3:] == ["9.0", "/", "-"]  # the raw check at 25, none of the EMA
    assert last[:2] == ["91-100", "95.500"] and last[3:] == ["7.0", "/", "5.0"]
