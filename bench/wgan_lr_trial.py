"""Benchmark (not a test): the WGAN learning-rate trial behind the notebook's one deviation from
the paper. Trains the Table 2/3 WGAN (RMSprop, clip 0.01, 5 critic steps) for the same number of
generator iterations at the paper's lr and at the notebook's, and prints the classifier-space FD
(the notebook's cheap metric) every 200 iterations and the ratio between the two rates.

Usage: HW6_DATA_ROOT=../shared/data .venv/bin/python bench/wgan_lr_trial.py [--iterations 1000] [--lrs 5e-5 2e-4]
"""
import argparse
import os
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
from bench import load_definitions  # noqa: E402


def trial(q2, real, metric, lr, iterations):
    torch.manual_seed(0)
    config = dict(q2.WGAN, lr=lr)
    trainer = q2.GANTrainer("wgan", q2.Generator(), q2.Discriminator(), config, torch.device("cpu"))
    t0 = time.time()
    history, _ = q2.train_gan("trial", trainer, real, iterations, config["n_critic"], torch.randn(100, 64),
                              tracker=metric, track_every=200)
    return history["tracked"], time.time() - t0


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=1000)
    parser.add_argument("--lrs", type=float, nargs="+", default=[5e-5, 2e-4])
    args = parser.parse_args()
    q2 = load_definitions(ROOT / "notebooks" / "02_gans_mnist.ipynb")
    roots = [Path(p) for p in (os.environ.get("HW6_DATA_ROOT", ""), ROOT / "data") if p]
    images, labels, info = q2.load_mnist(roots, ROOT / "data", allow_download=False)
    classifier = q2.train_classifier(images, labels, 1500, torch.device("cpu"))
    real = q2.to_model_range(images)
    metric = q2.make_cheap_fd(classifier, real, 1000, torch.device("cpu"))
    finals = {}
    for lr in args.lrs:
        tracked, seconds = trial(q2, real, metric, lr, args.iterations)
        finals[lr] = tracked[-1][1]
        print(f"lr {lr:g}: cheap FD " + ", ".join(f"{v:.0f}@{i}" for i, v in tracked) + f"  ({seconds:.0f} s)", flush=True)
    base = finals[args.lrs[0]]
    for lr in args.lrs[1:]:
        print(f"final cheap FD ratio lr {lr:g} / lr {args.lrs[0]:g}: {finals[lr] / base:.2f}")


if __name__ == "__main__":
    main()
