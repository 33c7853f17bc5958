"""Mutation check of the test suite (not run in CI): does a single wrong change to a notebook's code
make the tests fail?

Usage: .venv/bin/python scripts/mutate.py [--only SUBSTRING] [--timeout SECONDS] [--extra FILE]
(--extra: a Python file defining MUTATIONS in the same format, e.g. an independent audit's list,
run instead of the list below)
For each mutation below it copies both notebooks into a temporary folder, applies one wrong change
to the one code cell that contains the original text, points the tests at the copy
(HW6_NOTEBOOKS) and runs that notebook's unit, training and pipeline tests, then, only when they miss
the change, its whole smoke-profile executions (minutes each). It prints each mutation as CAUGHT or
MISSED and the score.
"""
import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parents[1]
Q1, Q2 = "01_controlvae_dsprites.ipynb", "02_gans_mnist.ipynb"
WHOLE_RUNS = "end_to_end or smoke_run or from_weights or readme_table"  # the notebook executions (minutes each)
TESTS = {Q1: ["tests/test_q1_units.py", "tests/test_q1_training.py", "tests/test_q1_pipeline.py"],
         Q2: ["tests/test_q2_units.py", "tests/test_q2_training.py", "tests/test_q2_pipeline.py"]}
WHOLE = {Q1: "tests/test_q1_pipeline.py", Q2: "tests/test_q2_pipeline.py"}

# (notebook, what it breaks, original text, wrong text)
MUTATIONS = [
    (Q1, "loss ignores beta", "loss = recon + beta * kl", "loss = recon + kl"),
    (Q1, "controller fed the reconstruction", "beta = controller.step(kl.item())", "beta = controller.step(recon.item())"),
    (Q1, "std = exp(logvar)", "torch.exp(0.5 * logvar)", "torch.exp(logvar)"),
    (Q1, "mean head used as logvar", "return self.mean(h), self.logvar(h)", "return self.mean(h), self.mean(h)"),
    (Q1, "ramp ignored", "error = self.target() - float(kl)", "error = self.set_point - float(kl)"),
    (Q1, "no lower anti-windup clamp", "min(max(integral, -p_term), self.beta_max", "min(max(integral, -1e9), self.beta_max"),
    (Q1, "Kp not the paper's", "KP = 0.01", "KP = 0.1"),
    (Q1, "reconstruction averaged over pixels", 'reduction="sum") / x.shape[0]', 'reduction="mean")'),
    (Q1, "KL summed over the batch", "logvar.exp())).mean(dim=0)", "logvar.exp())).sum(dim=0)"),
    (Q1, "P term sign", "(1.0 - math.tanh(error / 2.0))", "(1.0 + math.tanh(error / 2.0))"),
    (Q1, "plateau as a difference", "values[-n:].mean() / values[-2 * n:-n].mean() - 1.0",
     "values[-n:].mean() - values[-2 * n:-n].mean()"),
    (Q1, "blank threshold ignores the fraction", "< fraction * data_mean_pixel", "< data_mean_pixel"),
    (Q1, "binarise at >=", "(probabilities > threshold)", "(probabilities >= threshold)"),
    (Q1, "stale features kept", '(folder / "features.npy").unlink(missing_ok=True)\n        write_pngs(images[indices] * 255',
     'pass\n        write_pngs(images[indices] * 255'),
    (Q1, "floor subset not disjoint", "allowed = np.setdiff1d(np.arange(n_items), np.asarray(exclude, dtype=int))",
     "allowed = np.arange(n_items)"),
    (Q1, "MIG without the gap", "gaps = top[0] - top[1]", "gaps = top[0]"),
    (Q1, "MIG not normalised by entropy",
     "normalised = mutual_information_matrix(codes, factors, bins) / np.array(\n        [entropy(factors[:, k]) for k in range(factors.shape[1])])",
     "normalised = mutual_information_matrix(codes, factors, bins)"),
    (Q1, "posX/posY swapped in the order check", "posX=np.corrcoef(centre_x, factors[:, 2])", "posX=np.corrcoef(centre_x, factors[:, 3])"),
    (Q1, "no NaN guard", "    if not torch.isfinite(loss):\n        raise NonFiniteLoss(f\"loss is",
     "    if False:\n        raise NonFiniteLoss(f\"loss is"),
    (Q1, "convergence ignores beta", 'beta_drift=window_drift(history["beta"]))', "beta_drift=0.0)"),
    (Q1, "integral term with the wrong sign", "integral = self.integral - self.ki * error",
     "integral = self.integral + self.ki * error"),
    (Q1, "beta_min not added", "p_term + self.integral + self.beta_min, self.beta_min", "p_term + self.integral, self.beta_min"),
    (Q1, "no upper anti-windup clamp", "self.beta_max - self.beta_min - p_term)", "1e9)"),
    (Q1, "resume replays no batches", "for _ in range(step):  # replay the seeded stream",
     "for _ in range(0):  # replay the seeded stream"),
    (Q1, "KL averaged over latents", "kl = kl_latents.sum()", "kl = kl_latents.mean()"),
    (Q1, "segment limit ignored", 'paused = segment_minutes and segments[-1]["seconds"] >= segment_minutes * 60',
     "paused = False"),
    (Q1, "checkpoint of other settings reused", 'if state["config"] == config:', "if True:"),
    (Q1, "final values from the first tenth", "return float(values[-max(1, int(len(values) * fraction)):].mean())",
     "return float(values[:max(1, int(len(values) * fraction))].mean())"),
    (Q2, "one critic step instead of n_critic", "        for _ in range(d_steps):\n            d_loss, d_extra",
     "        for _ in range(1):\n            d_loss, d_extra"),
    (Q2, "Adam for WGAN", "make_opt = lambda params: torch.optim.RMSprop(params, lr=config[\"lr\"])",
     "make_opt = lambda params: torch.optim.Adam(params, lr=config[\"lr\"])"),
    (Q2, "generator ends in sigmoid", "nn.Conv2d(8, 1, 3, padding=1), nn.Tanh())", "nn.Conv2d(8, 1, 3, padding=1), nn.Sigmoid())"),
    (Q2, "D rotation weight not beta", '+ self.config["beta"] * rot_loss', "+ 0.5 * rot_loss"),
    (Q2, "G rotation weight not alpha", '+ self.config["alpha"] * rot_loss', "+ rot_loss"),
    (Q2, "alpha not the paper's", '"alpha": 0.2', '"alpha": 0.5'),
    (Q2, "GAN logits from rotated images", "d_loss_gan(gan_logits[:b], gan_logits[b + 3 * q:])",
     "d_loss_gan(gan_logits[3 * q:3 * q + b], gan_logits[b + 3 * q:])"),
    (Q2, "mean pooling", "h = self.blocks(x).sum(dim=(2, 3))", "h = self.blocks(x).mean(dim=(2, 3))"),
    (Q2, "rotation labels interleaved", "labels = torch.arange(4, device=x.device).repeat_interleave(q)",
     "labels = torch.arange(4, device=x.device).repeat(q)"),
    (Q2, "asymmetric clipping", "p.clamp_(-c, c)", "p.clamp_(-c, 2 * c)"),
    (Q2, "search score ignores the trend", "return values[-1] + (values[-1] - min(values))", "return values[-1]"),
    (Q2, "search rows ranked by score only", 'return sorted(rows.values(), key=lambda r: (-r["rung"], r["score"]))',
     'return sorted(rows.values(), key=lambda r: r["score"])'),
    (Q2, "report ignores the 1.2 tolerance", "restored = final_fd > tolerance * best[\"cheap_fd\"]",
     "restored = final_fd > best[\"cheap_fd\"]"),
    (Q2, "best generator never restored", '    if report["restored_best"]:\n        net.load_state_dict', "    if False:\n        net.load_state_dict"),
    (Q2, "stale real subset kept", "if not (index_file.is_file() and np.array_equal(np.load(index_file), indices)",
     "if not (index_file.is_file()"),
    (Q2, "FID count guard off", "        if count < min_images:", "        if count < 2:"),
    (Q2, "crop off centre", "return x[..., 2:30, 2:30]", "return x[..., 0:28, 0:28]"),
    (Q2, "class shares not normalised", "minlength=10) / len(labels)", "minlength=10) / 10"),
    (Q2, "D loss sign on real", "F.softplus(-real_logits).mean() + F.softplus(fake_logits).mean()",
     "F.softplus(real_logits).mean() + F.softplus(fake_logits).mean()"),
    (Q2, "resume replays too few batches", "for _ in range(step * d_steps):", "for _ in range(step):"),
    (Q2, "WGAN critic loss sign", "return fake_scores.mean() - real_scores.mean()", "return real_scores.mean() - fake_scores.mean()"),
    (Q2, "GAN generator loss saturating", "return F.softplus(-fake_logits).mean()", "return -F.softplus(fake_logits).mean()"),
    (Q2, "no weight clipping", '            clip_weights(self.D, self.config["clip"])', "            pass"),
    (Q2, "Adam betas ignored", 'lr=config["lr"], betas=tuple(config["betas"]))', 'lr=config["lr"])'),
    (Q2, "no NaN guard", "        if not torch.isfinite(loss):\n            raise NonFiniteLoss",
     "        if False:\n            raise NonFiniteLoss"),
    (Q2, "critic update on the same batch", "d_loss, d_extra = self.d_update(real_images[next(stream)]",
     "d_loss, d_extra = self.d_update(real_images[:self.config['batch_size']]"),
]


def mutate(notebook_path, original, wrong):
    nb = nbformat.read(notebook_path, as_version=4)
    hits = [c for c in nb.cells if c.cell_type == "code" and original in c.source]
    if len(hits) != 1 or hits[0].source.count(original) != 1:
        raise SystemExit(f"mutation text found {sum(c.source.count(original) for c in hits)} times in "
                         f"{notebook_path.name}: {original!r}; update scripts/mutate.py")
    hits[0].source = hits[0].source.replace(original, wrong)
    nbformat.write(nb, notebook_path)


def run_tests(tests, env, timeout):
    """True when the tests fail (or hang) on the mutated copy."""
    try:
        done = subprocess.run([sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *tests],
                              cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
        return done.returncode not in (0, 5)  # 5: no test selected
    except subprocess.TimeoutExpired:
        return True  # a hang is a failure the suite would report


def run_one(notebook, original, wrong, timeout):
    """The unit tests of the mutated notebook, then (only if they pass) its whole smoke-profile runs."""
    with tempfile.TemporaryDirectory() as tmp:
        for name in (Q1, Q2):
            shutil.copy(ROOT / "notebooks" / name, Path(tmp) / name)
        mutate(Path(tmp) / notebook, original, wrong)
        env = dict(os.environ, HW6_NOTEBOOKS=tmp)
        if run_tests([*TESTS[notebook], "-k", f"not ({WHOLE_RUNS})"], env, timeout):
            return "units"
        if run_tests([WHOLE[notebook], "-k", WHOLE_RUNS], env, timeout):
            return "smoke run"
        return None


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default="", help="run the mutations whose description contains this")
    parser.add_argument("--timeout", type=float, default=600)
    parser.add_argument("--extra", type=Path, help="run the MUTATIONS list of this Python file instead")
    args = parser.parse_args()
    mutations = MUTATIONS
    if args.extra:
        namespace = {"Q1": Q1, "Q2": Q2}
        exec(args.extra.read_text(), namespace)
        mutations = namespace["MUTATIONS"]
    chosen = [m for m in mutations if args.only in m[1]]
    caught = 0
    for notebook, what, original, wrong in chosen:
        t0 = time.time()
        by = run_one(notebook, original, wrong, args.timeout)
        hit = by is not None
        caught += hit
        print(f"{'CAUGHT' if hit else 'MISSED'}  {notebook[:2]}  {what}  ({time.time() - t0:.0f} s{', by the ' + by if by else ''})",
              flush=True)
    print(f"\n{caught} of {len(chosen)} mutations caught ({100 * caught / max(1, len(chosen)):.0f}%)")


if __name__ == "__main__":
    main()
