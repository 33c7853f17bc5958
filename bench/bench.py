"""Benchmark (not a test): prints, in one run,
1. FID feature extraction: the notebooks' path vs `python -m pytorch_fid` on the same two PNG folders
   (images/s each, their ratio, and the absolute FID difference, which must be < 1e-3);
2. one training step per model (VAE, GAN, WGAN, SSGAN): seconds per step with the notebooks' data
   path (a uint8 tensor indexed in memory) vs a plain reference loop (DataLoader over a torchvision
   dataset, default settings), and their ratio; 2b. SSGAN's step at widths 32, 48 and 64 (the
   `cpu` profile's choice of widths);
3. the wall time of each notebook and profile, read from results/*.json.

Usage: .venv/bin/python bench/bench.py [--fid-images 2048] [--steps 20]
Needs the FID weights in the torch hub cache and MNIST under $HW6_DATA_ROOT (or data/).
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import types
from pathlib import Path

import nbformat
import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]


def load_definitions(notebook):
    """The notebook's own `parameters` and `defs` cells, executed into a fresh namespace."""
    ns = types.ModuleType(notebook.stem)
    for tag in ("parameters", "defs"):
        for cell in nbformat.read(notebook, as_version=4).cells:
            if cell.cell_type == "code" and tag in cell.metadata.get("tags", []):
                exec(compile(cell.source, str(notebook), "exec"), ns.__dict__)
    return ns


def bench_fid(q1, folder_a, folder_b, n):
    """The notebooks' feature path vs pytorch-fid's command line on the same n + n PNGs."""
    device = torch.device("cpu")
    with tempfile.TemporaryDirectory() as tmp:
        dirs = []
        for name, src in (("a", folder_a), ("b", folder_b)):
            dst = Path(tmp) / name
            dst.mkdir()
            files = sorted(Path(src).glob("*.png"))[:n]
            if len(files) < n:
                sys.exit(f"{src} holds {len(files)} PNGs; the benchmark needs {n} (run the Q1 notebook first)")
            for f in files:
                shutil.copy(f, dst / f.name)
            dirs.append(dst)
        t0 = time.time()
        model = q1.load_fid_inception(device)
        stats = [q1.feature_statistics(q1.inception_features(q1.read_pngs(d), model, device, 100), 2)
                 for d in dirs]
        ours = q1.frechet_distance(*stats)
        t_ours = time.time() - t0
        t0 = time.time()
        out = subprocess.run([sys.executable, "-m", "pytorch_fid", str(dirs[0]), str(dirs[1]), "--device", "cpu"],
                             capture_output=True, text=True, check=True).stdout
        t_ref = time.time() - t0
    theirs = float(out.strip().split()[-1])
    print(f"1. FID features, {n} + {n} PNGs")
    print(f"   notebooks' path : {2 * n / t_ours:6.2f} images/s ({t_ours:.0f} s), FID {ours:.6f}")
    print(f"   python -m pytorch_fid: {2 * n / t_ref:6.2f} images/s ({t_ref:.0f} s), FID {theirs:.6f}")
    print(f"   speed ratio {t_ref / t_ours:.2f}x, |FID difference| {abs(ours - theirs):.2e} "
          f"({'OK' if abs(ours - theirs) < 1e-3 else 'ABOVE 1e-3'})")


def time_steps(step, steps, warmup=2):
    """Seconds per call of step() after a warm-up."""
    for _ in range(warmup):
        step()
    t0 = time.time()
    for _ in range(steps):
        step()
    return (time.time() - t0) / steps


def in_memory_batches(images, batch_size, transform):
    """The notebooks' data path: uint8 images in memory, a random permutation per epoch."""
    data = torch.from_numpy(images)
    while True:
        for idx in torch.randperm(len(data)).split(batch_size):
            if len(idx) == batch_size:
                yield transform(data[idx])


def loader_batches(dataset, batch_size):
    """The plain reference: torch DataLoader over a torchvision dataset, default settings."""
    while True:
        for x, _ in torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=True, drop_last=True):
            yield x


def bench_steps(q1, q2, steps):
    from torchvision import datasets, transforms
    device = torch.device("cpu")
    roots = [Path(p) for p in (os.environ.get("HW6_DATA_ROOT", ""), ROOT / "data") if p]
    root = q2.find_mnist_root(roots)
    if root is None:
        sys.exit("MNIST not found: set HW6_DATA_ROOT to a folder holding MNIST/raw")
    mnist_uint8 = q2.load_mnist([root], root, False)[0]
    to_pm1 = transforms.Compose([transforms.ToTensor(), transforms.Normalize([0.5], [0.5])])
    pad32 = transforms.Compose([transforms.Pad(2), to_pm1])
    dsprites_like = (np.random.default_rng(0).random((18432, 64, 64)) < 0.0424).astype(np.uint8)
    dsprites_ds = torch.utils.data.TensorDataset(torch.from_numpy(dsprites_like).float().unsqueeze(1),
                                                 torch.zeros(len(dsprites_like)))

    vae = q1.VAE()
    vae_opt = torch.optim.Adam(vae.parameters(), lr=1e-4)

    def vae_step(x):
        logits, mean, logvar = vae(x)
        loss = q1.bernoulli_reconstruction_loss(logits, x) + q1.gaussian_kl(mean, logvar)
        vae_opt.zero_grad()
        loss.backward()
        vae_opt.step()

    def gan_step(trainer, d_steps):
        def step(real_batches_iter):
            for _ in range(d_steps):
                trainer.d_update(next(real_batches_iter))
            trainer.g_update(64)
        return step

    rows = []
    # VAE: one step per batch
    fed = in_memory_batches(dsprites_like, 64, lambda b: b.float().unsqueeze(1))
    ours = time_steps(lambda: vae_step(next(fed)), steps)
    fed_ref = loader_batches(dsprites_ds, 64)
    ref = time_steps(lambda: vae_step(next(fed_ref)), steps)
    rows.append(("VAE (batch 64)", ours, ref))
    widths = q2.PROFILES["cpu"]["ssgan_widths"]
    for name, make, d_steps, transform, ds_transform in (
            ("GAN", lambda: q2.GANTrainer("gan", q2.Generator(), q2.Discriminator(), dict(q2.GAN_DEFAULT), device), 1,
             q2.to_model_range, to_pm1),
            ("WGAN (5 critic steps)", lambda: q2.GANTrainer("wgan", q2.Generator(), q2.Discriminator(), dict(q2.WGAN), device),
             5, q2.to_model_range, to_pm1),
            (f"SSGAN (widths {widths['g']}/{widths['d']})", lambda: q2.GANTrainer(
                "ssgan", q2.SSGenerator(ch=widths["g"]), q2.SSDiscriminator(ch=widths["d"]), dict(q2.SSGAN), device),
             1, lambda b: q2.pad_to_32(q2.to_model_range(b)), pad32)):
        trainer = make()
        step = gan_step(trainer, d_steps)
        n = max(2, steps // 5) if "SSGAN" in name else steps  # an SSGAN step costs ~1.5 s here
        fed = in_memory_batches(mnist_uint8, 64, transform)
        ours = time_steps(lambda: step(fed), n)
        fed_ref = loader_batches(datasets.MNIST(str(root), train=True, download=False, transform=ds_transform), 64)
        ref = time_steps(lambda: step(fed_ref), n)
        rows.append((name, ours, ref))
    print(f"2. one training step per model ({torch.get_num_threads()} torch threads)")
    print(f"   {'model':28s} {'notebooks s/step':>17s} {'DataLoader s/step':>18s} {'ratio':>6s}")
    for name, ours, ref in rows:
        print(f"   {name:28s} {ours:17.4f} {ref:18.4f} {ref / ours:6.2f}x")


def bench_ssgan_widths(q2, steps, widths):
    """SSGAN seconds per iteration (one D and one G update, batch 64) at each width, generator and
    discriminator alike: the evidence for the `cpu` profile's choice of widths."""
    device = torch.device("cpu")
    real = torch.rand(512, 1, 32, 32) * 2 - 1
    print(f"2b. SSGAN step by width ({torch.get_num_threads()} torch threads)")
    base = None
    for width in widths:
        torch.manual_seed(0)
        trainer = q2.GANTrainer("ssgan", q2.SSGenerator(ch=width), q2.SSDiscriminator(ch=width), dict(q2.SSGAN), device)
        stream = q2.batches(len(real), 64, torch.Generator().manual_seed(0))
        seconds = time_steps(lambda: trainer.iteration(real, stream, 1), steps, warmup=1)
        base = base or seconds
        print(f"   widths {width:3d}/{width:<3d}: {seconds:6.3f} s/iteration ({seconds / base:4.2f}x the narrowest), "
              f"10,000 iterations in {seconds * 10_000 / 3600:4.1f} h")


def wall_times():
    print("3. wall time per notebook and profile (results/*.json)")
    for path in sorted((ROOT / "results").glob("q*.json")):
        run = json.loads(path.read_text())["run"]
        print(f"   {path.name}: profile {run['profile']}, device {run['device']}, {run['torch_threads']} torch threads, "
              f"{run['wall_seconds'] / 60:.1f} min")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--fid-images", type=int, default=2048, help="PNGs per folder for part 1")
    parser.add_argument("--steps", type=int, default=20, help="timed steps per model for part 2")
    parser.add_argument("--real", default=None, help="real PNG folder (default: the Q1 real subset in data/fid)")
    parser.add_argument("--fake", default=str(ROOT / "samples" / "q1_vae"), help="generated PNG folder")
    parser.add_argument("--ssgan-widths", type=int, nargs="*", default=[32, 48, 64], help="widths timed in part 2b")
    parser.add_argument("--ssgan-steps", type=int, default=5, help="timed SSGAN iterations per width")
    args = parser.parse_args()
    q1 = load_definitions(ROOT / "notebooks" / "01_controlvae_dsprites.ipynb")
    q2 = load_definitions(ROOT / "notebooks" / "02_gans_mnist.ipynb")
    real = args.real or next(iter(sorted((ROOT / "data" / "fid").glob("q1_*"))), None)
    if real is None:
        sys.exit("no real PNG folder: run the Q1 notebook first or pass --real")
    bench_fid(q1, real, args.fake, args.fid_images)
    bench_steps(q1, q2, args.steps)
    bench_ssgan_widths(q2, args.ssgan_steps, args.ssgan_widths)
    wall_times()


if __name__ == "__main__":
    main()
