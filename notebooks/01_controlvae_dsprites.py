# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # HW6 — Question 1: VAE and ControlVAE on dSprites
#
# This notebook is self-contained: data loading, the VAE of Table 6 of the ControlVAE paper,
# the PI controller of Algorithm 1, training, plots and FID (pytorch-fid) are all defined here.
# Run it top to bottom. The **parameters** cell below holds every knob; `PROFILE = "auto"` picks
# `full` (the assignment's setting) on a CUDA GPU and `cpu` (same networks, shorter training)
# otherwise. The first output states the profile, device and data source actually used.

# %% tags=["parameters"]
PROFILE = "auto"          # "auto" (full on CUDA, else cpu) | "full" | "cpu" | "smoke"
DATA_ROOT = ""            # read-only offline data ("" -> $HW6_DATA_ROOT, else DATA_DIR)
DATA_DIR = "../data"      # writable: downloads, stand-in, the fixed FID real subset, caches
OUTPUT_DIR = ".."         # figures/, results/, checkpoints/, samples/ are written under it
SEED = 0                  # model initialisation, batches and sampling
FID_SUBSET_SEED = 1234    # which real images form the fixed FID subset
BATCH_SIZE = 64
LEARNING_RATE = 1e-4      # Table 1: Adam, lr 1e-4
ITERATIONS = 0            # iteration cap per model; 0 -> the profile's value
WALL_MINUTES = 0          # wall-clock cap per model (minutes); 0 -> the profile's value
CONVERGENCE_TOL = 0.01    # stop when |recon plateau| and the beta drift are both below this (0: run to the cap)
CHECKPOINT_MINUTES = 3    # also checkpoint every this many minutes, so an interrupted run resumes
FID_NUM_REAL = 0          # 0 -> the profile's value (5000 in full and cpu)
FID_NUM_GEN = 0           # 0 -> the profile's value (5000 in full and cpu)
FID_BATCH_SIZE = 100
BINARY_THRESHOLD = 0.5    # binary samples for the second FID: a pixel is on where its Bernoulli mean exceeds this
SET_POINTS = [8.0, 14.0]  # desired KL values for ControlVAE (section 1-4)
KP = 0.01                 # PI controller constants of the paper's dSprites experiments
KI = 0.001
BETA_MIN = 1.0
BETA_MAX = 100.0
SETPOINT_RAMP_ITERS = 0   # 0: the set point is fixed from the first step (no ramp)
ALLOW_DOWNLOAD = True     # try the official dSprites URL when no local file is found
ALLOW_STANDIN = True      # offline only: render a labelled stand-in when no real file exists
RESUME = True             # reuse finished / partial checkpoints under OUTPUT_DIR/checkpoints

# %% [markdown]
# ## 0. Setup
# Imports, the profiles, and small helpers shared by every section.

# %% tags=["defs"]
import json
import math
import os
import platform
import time
import urllib.request
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image

# Budgets per profile. `full` is the assignment's setting for a GPU; `cpu` keeps every
# architecture and sample count but trains fewer iterations; `smoke` only proves the pipeline.
# `iterations` is a cap: training stops earlier once converged (CONVERGENCE_TOL) or at `wall_minutes`;
# `min_iterations` keeps the convergence test from firing on the first, noisy stretch.
PROFILES = {
    "full": dict(iterations=60_000, min_iterations=20_000, wall_minutes=120, check_every=2000,
                 fid_real=5000, fid_gen=5000, checkpoint_every=5000, print_every=5000),
    "cpu": dict(iterations=40_000, min_iterations=8000, wall_minutes=15, check_every=1000,
                fid_real=5000, fid_gen=5000, checkpoint_every=1000, print_every=1000),
    "smoke": dict(iterations=12, min_iterations=12, wall_minutes=5, check_every=6,
                  fid_real=16, fid_gen=16, checkpoint_every=6, print_every=6),
}
MIN_FID_IMAGES = 2048  # below the 2048 feature dimensions the covariance is singular


def resolve_profile(name, cuda_available):
    """'auto' -> 'full' on CUDA, else 'cpu'; anything unknown is an error."""
    if name == "auto":
        return "full" if cuda_available else "cpu"
    if name not in PROFILES:
        raise ValueError(f"PROFILE must be one of auto, {', '.join(PROFILES)}; got {name!r}")
    return name


def seed_everything(seed):
    np.random.seed(seed)
    torch.manual_seed(seed)


def ema(values, weight=0.98):
    """Exponential moving average, for readable loss curves."""
    out, acc = np.empty(len(values)), None
    for i, v in enumerate(values):
        acc = v if acc is None else weight * acc + (1 - weight) * v
        out[i] = acc
    return out


def save_figure(fig, name):
    """Save the figure, then show the saved PNG in the cell's output.

    Showing the file (not `plt.show()`) puts the plot into the saved notebook whatever backend the
    environment selects: `MPLBACKEND=Agg` would make `plt.show()` draw nothing.
    """
    path = FIGURES / name
    fig.savefig(path, dpi=130, bbox_inches="tight")
    plt.close(fig)
    show_png(path)
    print(f"saved figures/{name}")
    return path


def show_png(path):
    try:
        from IPython.display import Image as PNG, display
    except ImportError:  # plain Python (tests): the file is the output
        return
    display(PNG(filename=str(path)))


MODEL_LABELS = {"vae": "VAE (β = 1)", "controlvae_kl8": "ControlVAE, KL* = 8", "controlvae_kl14": "ControlVAE, KL* = 14"}


def data_label():
    """Second title line of every figure: nobody may mistake stand-in or reduced runs."""
    tags = [f"profile {RUN['profile']}"]
    if DATA_INFO.get("standin"):
        tags.insert(0, "OFFLINE STAND-IN dSprites, not the real file")
    return "\n[" + "; ".join(tags) + "]"


# %% [markdown]
# Resolve the profile and the folders, seed everything, and print the run header.

# %%
RUN_START = time.time()
DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
RUN = dict(profile=resolve_profile(PROFILE, torch.cuda.is_available()), device=str(DEVICE))
SETTINGS = dict(PROFILES[RUN["profile"]])
SETTINGS["iterations"] = ITERATIONS or SETTINGS["iterations"]
SETTINGS["min_iterations"] = min(SETTINGS["min_iterations"], SETTINGS["iterations"])
SETTINGS["wall_minutes"] = WALL_MINUTES or SETTINGS["wall_minutes"]
SETTINGS["fid_real"] = FID_NUM_REAL or SETTINGS["fid_real"]
SETTINGS["fid_gen"] = FID_NUM_GEN or SETTINGS["fid_gen"]
DATA_DIR = Path(DATA_DIR)
DATA_ROOTS = [Path(p) for p in (DATA_ROOT or os.environ.get("HW6_DATA_ROOT", ""), DATA_DIR) if p]
OUT = Path(OUTPUT_DIR)
FIGURES, RESULTS, CHECKPOINTS, SAMPLES = (OUT / d for d in ("figures", "results", "checkpoints", "samples"))
for folder in (DATA_DIR, FIGURES, RESULTS, CHECKPOINTS, SAMPLES):
    folder.mkdir(parents=True, exist_ok=True)
seed_everything(SEED)
RUN.update(
    device_name=torch.cuda.get_device_name(0) if DEVICE.type == "cuda" else platform.processor() or "cpu",
    torch=torch.__version__, torch_threads=torch.get_num_threads(), seed=SEED,
    fid_subset_seed=FID_SUBSET_SEED, batch_size=BATCH_SIZE, learning_rate=LEARNING_RATE, **SETTINGS,
)
print(json.dumps(RUN, indent=1))

# %% [markdown]
# ## Data: the dSprites orientation-0 subset (18,432 images)
# The data are found in this order, and the cell prints which one was used:
# 1. the course file `sh3_sc6_y32_x32_imgs.npz` (key `imgs`);
# 2. the official `dsprites_ndarray_co1sh3sc6or40x32y32_64x64.npz`, keeping
#    `latents_classes[:, 3] == 0` in the file's order (then the course file is saved);
# 3. a download of the official file (when the network allows), then as in 2;
# 4. **offline only**: a *stand-in* rendered on the same latent grid (3 shapes x 6 scales x
#    32 posX x 32 posY, same order), whose shape masks are learned from the real
#    orientation-0 samples in `dsprites/dsprites_samples.npz` and checked against them
#    (two-fold held-out IoU). Every output of a stand-in run says so.

# %% tags=["defs"]
COURSE_FILE = "sh3_sc6_y32_x32_imgs.npz"
OFFICIAL_FILE = "dsprites_ndarray_co1sh3sc6or40x32y32_64x64.npz"
OFFICIAL_URL = ("https://github.com/deepmind/dsprites-dataset/raw/master/"
                "dsprites_ndarray_co1sh3sc6or40x32y32_64x64.npz")
SAMPLES_FILE = Path("dsprites") / "dsprites_samples.npz"
STANDIN_FILE = "dsprites_orientation0_STANDIN.npz"
SUBSET_SHAPE = (18432, 64, 64)
SCALES = np.linspace(0.5, 1.0, 6)


def validate_subset(imgs, source):
    """The assignment's subset: 18432 binary 64x64 images."""
    if imgs.shape != SUBSET_SHAPE:
        raise ValueError(f"{source}: found images of shape {imgs.shape}, expected {SUBSET_SHAPE} "
                         "(the orientation-0 dSprites subset). Replace the file or delete it to re-create it.")
    values = np.unique(imgs)
    if not set(values.tolist()) <= {0, 1}:
        raise ValueError(f"{source}: found pixel values {values[:10]}, expected only 0 and 1 (binary dSprites).")
    return imgs.astype(np.uint8)


def read_npz(path, key):
    try:
        with np.load(path, allow_pickle=True, encoding="latin1") as f:
            return f[key]
    except KeyError as err:
        raise ValueError(f"{path}: has no array {key!r}; is this the right dSprites file?") from err
    except Exception as err:
        raise ValueError(f"{path}: cannot be read as .npz ({err}); delete it and run again.") from err


def select_orientation0(imgs, latents_classes):
    """Official file -> course subset: orientation class (column 3) == 0, file order kept."""
    return imgs[latents_classes[:, 3] == 0]


def find_file(name, roots):
    for root in roots:
        for candidate in (root / name, root / "dsprites" / name):
            if candidate.is_file():
                return candidate
    return None


def download(url, dest, timeout=60):
    tmp = dest.with_suffix(".part")
    with urllib.request.urlopen(url, timeout=timeout) as response, open(tmp, "wb") as f:
        f.write(response.read())
    tmp.rename(dest)
    return dest


def shown_path(path, roots):
    """A path as outputs show it: relative to the data root that holds it (no machine-specific prefix)."""
    path = Path(path)
    for root in roots:
        try:
            return f"<data root>/{path.resolve().relative_to(Path(root).resolve())}"
        except ValueError:
            continue
    return path.name


def subset_latent_grid():
    """Latent classes (shape, scale, posX, posY) of the subset, in the official file's order."""
    grid = np.stack(np.meshgrid(np.arange(3), np.arange(6), np.arange(32), np.arange(32), indexing="ij"), -1)
    return grid.reshape(-1, 4)


# %% [markdown]
# The stand-in renderer: the sprite centre of position class `p` sits at pixel `15.5 + 32 p / 31`
# (posX = column, posY = row). For each shape, every pixel of every real orientation-0 sample is
# mapped to sprite coordinates `(pixel - centre) / scale`; the on/off votes in a fine grid
# (1/8 px, Gaussian-smoothed) give the shape's mask, and rendering samples that mask at the pixel
# centres of the target image.

# %% tags=["defs"]
MASK_RES, MASK_HALF, MASK_SMOOTH = 0.125, 16.0, 2.0
MASK_SIZE = int(2 * MASK_HALF / MASK_RES) + 1


def sprite_centre(pos_class):
    return 15.5 + 32.0 * np.asarray(pos_class) / 31.0


def mask_index(pos_class, scale_class):
    """Mask-grid index of each of the 64 pixel centres along one axis."""
    coords = (np.arange(64) - sprite_centre(pos_class)) / SCALES[scale_class]
    return np.round((coords + MASK_HALF) / MASK_RES).astype(int)


def fit_shape_masks(imgs, latents):
    """Learn one boolean mask per shape from real samples; latents: (N, 4) shape, scale, posX, posY."""
    from scipy.ndimage import gaussian_filter
    on = np.zeros((3, MASK_SIZE, MASK_SIZE))
    seen = np.zeros_like(on)
    for img, (shape, scale, px, py) in zip(imgs, latents):
        cols, rows = mask_index(px, scale), mask_index(py, scale)
        keep_c, keep_r = (cols >= 0) & (cols < MASK_SIZE), (rows >= 0) & (rows < MASK_SIZE)
        rr, cc = np.meshgrid(rows[keep_r], cols[keep_c], indexing="ij")
        np.add.at(on[shape], (rr, cc), img[np.ix_(keep_r, keep_c)])
        np.add.at(seen[shape], (rr, cc), 1)
    if (seen.sum(axis=(1, 2)) == 0).any():
        raise ValueError("every shape needs at least one real sample to learn its mask")
    votes = [gaussian_filter(on[k], MASK_SMOOTH) / np.maximum(gaussian_filter(seen[k], MASK_SMOOTH), 1e-9)
             for k in range(3)]
    return np.stack(votes) > 0.5


def render_sprites(masks, latents):
    out = np.zeros((len(latents), 64, 64), dtype=np.uint8)
    for n, (shape, scale, px, py) in enumerate(latents):
        cols, rows = mask_index(px, scale), mask_index(py, scale)
        inside = ((rows >= 0) & (rows < MASK_SIZE))[:, None] & ((cols >= 0) & (cols < MASK_SIZE))[None, :]
        sprite = masks[shape][np.clip(rows, 0, MASK_SIZE - 1)[:, None], np.clip(cols, 0, MASK_SIZE - 1)[None, :]]
        out[n] = sprite & inside
    return out


def iou_scores(pred, real):
    pred, real = pred.astype(bool), real.astype(bool)
    inter = (pred & real).sum(axis=(1, 2))
    union = (pred | real).sum(axis=(1, 2))
    return inter / np.maximum(union, 1), (pred == real).all(axis=(1, 2))


def load_real_orientation0_samples(path):
    """The real samples file: keep orientation class 0 (column 2; the color column is dropped)."""
    imgs, classes = read_npz(path, "imgs"), read_npz(path, "latents_classes")
    keep = classes[:, 2] == 0
    return imgs[keep], classes[keep][:, [0, 1, 3, 4]]


def standin_check(imgs, latents):
    """Two-fold held-out check: fit on one half of the real samples, score the other half."""
    fold = np.arange(len(imgs)) % 2 == 0
    ious, exact = [], []
    for train, test in ((fold, ~fold), (~fold, fold)):
        iou, ok = iou_scores(render_sprites(fit_shape_masks(imgs[train], latents[train]), latents[test]), imgs[test])
        ious.append(iou)
        exact.append(ok)
    ious, exact = np.concatenate(ious), np.concatenate(exact)
    return dict(n_real_samples=int(len(imgs)), heldout_mean_iou=float(ious.mean()),
                heldout_min_iou=float(ious.min()), heldout_pixel_exact_share=float(exact.mean()))


def build_standin(samples_path, out_path):
    imgs, latents = load_real_orientation0_samples(samples_path)
    check = standin_check(imgs, latents)
    masks = fit_shape_masks(imgs, latents)
    grid = subset_latent_grid()
    standin = render_sprites(masks, grid)
    insample_iou, insample_exact = iou_scores(render_sprites(masks, latents), imgs)
    check.update(insample_mean_iou=float(insample_iou.mean()), insample_pixel_exact_share=float(insample_exact.mean()))
    np.savez_compressed(out_path, imgs=standin, latents_classes=grid, standin=True, check=json.dumps(check))
    return standin, check


# %% [markdown]
# `load_dsprites` walks the four sources in order and validates whatever it loads.

# %% tags=["defs"]
def load_dsprites(roots, data_dir, allow_download, allow_standin):
    """Return (images uint8 (18432, 64, 64), info dict naming the source)."""
    course = find_file(COURSE_FILE, roots)
    if course:
        return validate_subset(read_npz(course, "imgs"), course), dict(source="course file", path=shown_path(course, roots), standin=False)
    official = find_file(OFFICIAL_FILE, roots)
    tried = []
    if not official and allow_download:
        try:
            official = download(OFFICIAL_URL, data_dir / OFFICIAL_FILE)
        except Exception as err:  # no network, proxy, HTTP error: fall through, but say so
            tried.append(f"download failed: {err}")
            print(f"Could not download the official dSprites file ({err}).")
    if official:
        imgs = validate_subset(select_orientation0(read_npz(official, "imgs"), read_npz(official, "latents_classes")), official)
        np.savez_compressed(data_dir / COURSE_FILE, imgs=imgs)
        return imgs, dict(source="official file, orientation 0", path=shown_path(official, roots + [data_dir]), standin=False)
    samples = find_file(SAMPLES_FILE.name, roots)
    if not (allow_standin and samples):
        raise FileNotFoundError(
            f"No dSprites data: put {COURSE_FILE} or {OFFICIAL_FILE} into one of {[str(r) for r in roots]} "
            f"(or allow the download from {OFFICIAL_URL}). {' '.join(tried)}")
    cached = data_dir / STANDIN_FILE
    if cached.is_file():
        check = json.loads(str(read_npz(cached, "check")))
        imgs = validate_subset(read_npz(cached, "imgs"), cached)
    else:
        imgs, check = build_standin(samples, cached)
        imgs = validate_subset(imgs, cached)
    return imgs, dict(source="OFFLINE STAND-IN rendered from the latent grid", path=shown_path(cached, roots),
                      calibrated_on=shown_path(samples, roots), standin=True, standin_check=check)


# %%
IMAGES, DATA_INFO = load_dsprites(DATA_ROOTS, DATA_DIR, ALLOW_DOWNLOAD, ALLOW_STANDIN)
DATA_INFO.update(n_images=int(len(IMAGES)), mean_pixel=float(IMAGES.mean()))
if DATA_INFO["standin"]:
    print("=" * 78 + "\nWARNING: the real dSprites file is not available; this run uses an OFFLINE STAND-IN.\n"
          "No number or figure below is a result on the real dataset.\n" + "=" * 78)
print(json.dumps(DATA_INFO, indent=1))

# %%
fig, axes = plt.subplots(2, 9, figsize=(6.5, 2.2))  # about the report's text width: fonts print at size
show = np.linspace(0, len(IMAGES) - 1, 9).astype(int)
for ax, i in zip(axes[0], show):
    ax.imshow(IMAGES[i], cmap="gray")
if DATA_INFO["standin"]:  # second row: real samples next to their stand-in renderings
    real, latents = load_real_orientation0_samples(find_file(SAMPLES_FILE.name, DATA_ROOTS))
    for ax, k in zip(axes[1], np.linspace(0, len(real) - 1, 9).astype(int)):
        index = int(np.ravel_multi_index(latents[k], (3, 6, 32, 32)))
        ax.imshow(np.concatenate([real[k], IMAGES[index]], axis=1), cmap="gray")
for ax in axes.flat:
    ax.axis("off")
fig.suptitle("dSprites orientation-0 subset" + (" (bottom row: a real sample | its stand-in rendering)"
                                                if DATA_INFO["standin"] else "") + data_label(), fontsize=9)
fig.tight_layout()
save_figure(fig, "q1_data.png")

# %% [markdown]
# ## 1-1. Introduction
# A β-VAE trades reconstruction for KL with a *fixed* weight β: β = 1 gives sharp
# reconstructions but an uncontrolled KL, a large β gives a small KL (smooth, diverse samples from
# the prior) but blurry reconstructions, and a KL that collapses towards zero. ControlVAE replaces
# the fixed β by a **PI controller** that measures the KL at every iteration and adjusts β(t) so
# that the KL settles at a chosen **set point**. The set point fixes how much information the
# latent code carries, which is what balances reconstruction quality against sample diversity,
# and the controller avoids both KL vanishing and an over-weighted KL. The report discusses it in full.
#
# ## 1-2. VAE: Table 6 of the ControlVAE paper, trained with Table 1
# Encoder: four 4x4 stride-2 convolutions (32, 32, 64, 64, ReLU) -> FC 256 (ReLU) -> the row
# `FC 2x10`, built as **two separate linear heads of 10 outputs**: one for the mean μ and one for
# log σ² (log-variance, so that σ² = exp(·) is always positive). Decoder: FC 256 (ReLU) ->
# FC 4·4·64 (ReLU) -> 4x4 stride-2 transposed convolutions 64, 32, 32 (ReLU) and 1 -> 64x64 logits
# of a Bernoulli distribution per pixel. Losses per batch: reconstruction = Bernoulli negative
# log-likelihood summed over pixels, KL = KL(q(z|x) || N(0, I)) summed over the 10 latents, each
# **averaged over the batch's samples**.

# %% tags=["defs"]
LATENT_DIM = 10


class Encoder(nn.Module):
    def __init__(self, latent_dim=LATENT_DIM):
        super().__init__()
        channels = [1, 32, 32, 64, 64]
        convs = []
        for c_in, c_out in zip(channels[:-1], channels[1:]):
            convs += [nn.Conv2d(c_in, c_out, 4, stride=2, padding=1), nn.ReLU()]
        self.features = nn.Sequential(*convs, nn.Flatten(), nn.Linear(64 * 4 * 4, 256), nn.ReLU())
        self.mean = nn.Linear(256, latent_dim)     # FC 2x10: head 1, the mean
        self.logvar = nn.Linear(256, latent_dim)   # FC 2x10: head 2, the log-variance

    def forward(self, x):
        h = self.features(x)
        return self.mean(h), self.logvar(h)


class Decoder(nn.Module):
    def __init__(self, latent_dim=LATENT_DIM):
        super().__init__()
        self.fc = nn.Sequential(nn.Linear(latent_dim, 256), nn.ReLU(), nn.Linear(256, 4 * 4 * 64), nn.ReLU())
        self.deconv = nn.Sequential(
            nn.ConvTranspose2d(64, 64, 4, stride=2, padding=1), nn.ReLU(),
            nn.ConvTranspose2d(64, 32, 4, stride=2, padding=1), nn.ReLU(),
            nn.ConvTranspose2d(32, 32, 4, stride=2, padding=1), nn.ReLU(),
            nn.ConvTranspose2d(32, 1, 4, stride=2, padding=1),
        )

    def forward(self, z):
        return self.deconv(self.fc(z).view(-1, 64, 4, 4))  # logits


class VAE(nn.Module):
    def __init__(self, latent_dim=LATENT_DIM):
        super().__init__()
        self.latent_dim = latent_dim
        self.encoder, self.decoder = Encoder(latent_dim), Decoder(latent_dim)

    def forward(self, x):
        mean, logvar = self.encoder(x)
        z = mean + torch.randn_like(mean) * torch.exp(0.5 * logvar)  # reparameterisation
        return self.decoder(z), mean, logvar

    @torch.no_grad()
    def sample(self, n, generator=None):
        device = next(self.parameters()).device
        z = torch.randn(n, self.latent_dim, generator=generator, device="cpu").to(device)
        return torch.sigmoid(self.decoder(z))


def bernoulli_reconstruction_loss(logits, x):
    """-log p(x|z) for a Bernoulli decoder: BCE summed over pixels, mean over the batch."""
    return F.binary_cross_entropy_with_logits(logits, x, reduction="sum") / x.shape[0]


def kl_per_latent(mean, logvar):
    """KL(N(mean, exp(logvar)) || N(0, 1)) per latent, mean over the batch: shape (latent_dim,)."""
    return (-0.5 * (1 + logvar - mean.pow(2) - logvar.exp())).mean(dim=0)


def gaussian_kl(mean, logvar):
    """KL summed over latents, mean over the batch."""
    return kl_per_latent(mean, logvar).sum()


def count_parameters(module):
    return sum(p.numel() for p in module.parameters())


# %% [markdown]
# ### The PI controller (Algorithm 1 of the paper), used in section 1-4
# With error `e(t) = KL* - KL(t)`: `P(t) = Kp / (1 + exp(e(t)))`, `I(t) = I(t-1) - Ki e(t)`,
# `β(t) = P(t) + I(t) + β_min`, clipped to `[β_min, β_max]`. A KL above the set point (e < 0)
# makes β grow; a KL below it lets β fall back to β_min. **Anti-windup:** I is clamped so that
# `P + I + β_min` stays inside `[β_min, β_max]`: at a bound the integral stops there instead of
# winding up, so β leaves the bound as soon as the error changes sign. Algorithm 1 freezes I when
# β(t-1) is outside the bounds; that test does fire (β(0) = 0 < β_min, and the authors' code tests
# the *unclipped* β). Clamping the integral reproduces that behaviour (I never winds past a bound)
# without the case where a frozen I keeps β pinned at a bound. The plain VAE uses β = 1.

# %% tags=["defs"]
class ConstantBeta:
    def __init__(self, beta=1.0):
        self.beta = beta

    def step(self, kl):
        return self.beta

    def state_dict(self):
        return dict(beta=self.beta)

    def load_state_dict(self, state):
        self.beta = state["beta"]


class PIController:
    """Algorithm 1 of ControlVAE (Shao et al., 2020): beta(t) from the measured KL."""

    def __init__(self, set_point, kp=0.01, ki=0.001, beta_min=1.0, beta_max=100.0, ramp_iters=0, ramp_start=0.5):
        self.set_point, self.kp, self.ki = float(set_point), kp, ki
        self.beta_min, self.beta_max = beta_min, beta_max
        self.ramp_iters, self.ramp_start = ramp_iters, ramp_start
        self.integral, self.t = 0.0, 0

    def target(self):
        """The set point, optionally ramped linearly from ramp_start over ramp_iters steps."""
        if self.ramp_iters <= 0 or self.t >= self.ramp_iters:
            return self.set_point
        return self.ramp_start + (self.set_point - self.ramp_start) * self.t / self.ramp_iters

    def step(self, kl):
        error = self.target() - float(kl)
        p_term = self.kp * 0.5 * (1.0 - math.tanh(error / 2.0))  # = kp / (1 + exp(error)), no overflow
        integral = self.integral - self.ki * error
        # anti-windup: clamp I so that P + I + beta_min stays in [beta_min, beta_max]
        self.integral = min(max(integral, -p_term), self.beta_max - self.beta_min - p_term)
        self.t += 1
        return min(max(p_term + self.integral + self.beta_min, self.beta_min), self.beta_max)

    def state_dict(self):
        return dict(integral=self.integral, t=self.t)

    def load_state_dict(self, state):
        self.integral, self.t = state["integral"], state["t"]


# %% [markdown]
# ### Training loop (shared by the VAE and both ControlVAEs)
# Random batches without replacement per epoch; per iteration it logs KL, reconstruction, total
# loss (`recon + β KL`), β and the KL per latent. A model trains **until converged, within a
# budget** (`cpu` profile: at most 40,000 iterations or 15 minutes per model): every
# `check_every` iterations (after `min_iterations`) it computes the
# *reconstruction plateau* = mean of the last 10% of iterations / mean of the 10% before it − 1,
# and the same drift for β; when both are within ±`CONVERGENCE_TOL` it stops. An iteration cap and
# a wall-clock cap bound it whatever the machine's speed (the printed ETA is the earlier of the
# two). Checkpoints every `checkpoint_every` iterations and every `CHECKPOINT_MINUTES` let an
# interrupted run resume where it stopped; a NaN or infinite loss stops with a clear error and
# keeps the last good checkpoint.

# %% tags=["defs"]
HISTORY_KEYS = ("kl", "recon", "total", "beta")


class NonFiniteLoss(FloatingPointError):
    pass


def batches(n_items, batch_size, generator):
    """Endless stream of index batches, a fresh permutation every epoch."""
    while True:
        order = torch.randperm(n_items, generator=generator)
        for start in range(0, n_items - batch_size + 1, batch_size):
            yield order[start:start + batch_size]


def window_drift(values, fraction=0.1):
    """mean(last `fraction` of values) / mean(the `fraction` before it) - 1: 0 when flat."""
    values = np.asarray(values, dtype=float)
    n = max(1, int(len(values) * fraction))
    if len(values) < 2 * n:
        return float("nan")
    return float(values[-n:].mean() / values[-2 * n:-n].mean() - 1.0)


def converged(history, tol):
    """Reconstruction and beta have both flattened (|drift| <= tol)."""
    drifts = (window_drift(history["recon"]), window_drift(history["beta"]))
    return tol > 0 and all(abs(d) <= tol for d in drifts), drifts


def vae_step(model, optimizer, controller, x):
    """One update: the loss is recon + beta(t) * KL, with beta(t) from the controller fed this batch's KL."""
    logits, mean, logvar = model(x)
    recon = bernoulli_reconstruction_loss(logits, x)
    kl_latents = kl_per_latent(mean, logvar)
    kl = kl_latents.sum()
    beta = controller.step(kl.item())
    loss = recon + beta * kl
    if not torch.isfinite(loss):
        raise NonFiniteLoss(f"loss is {loss.item()} (recon {recon.item()}, KL {kl.item()}, beta {beta})")
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return dict(kl=kl.item(), recon=recon.item(), total=loss.item(), beta=beta), kl_latents.detach().cpu().numpy()


def train_vae(name, images, controller, iterations, config, device, checkpoint_dir, resume=True,
              checkpoint_every=1000, print_every=1000, seed=0, min_iterations=0, check_every=1000,
              wall_minutes=float("inf"), tol=0.0, checkpoint_minutes=3.0):
    """Train a VAE with beta(t) from `controller` until converged or a cap; returns (model, history, info)."""
    torch.manual_seed(seed)
    model = VAE().to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=config["learning_rate"])
    history = {k: [] for k in HISTORY_KEYS + ("kl_per_latent",)}
    generator = torch.Generator().manual_seed(seed)
    step, seconds, stop_reason = 0, 0.0, None
    path = Path(checkpoint_dir) / f"q1_{name}.pt"
    path.parent.mkdir(parents=True, exist_ok=True)
    if resume and path.is_file():
        state = torch.load(path, map_location=device, weights_only=False)
        if state["config"] == config:
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            controller.load_state_dict(state["controller"])
            torch.set_rng_state(state["rng"]["cpu"])  # the reparameterisation noise continues exactly
            if state["rng"]["cuda"] is not None and torch.cuda.is_available():
                torch.cuda.set_rng_state_all(state["rng"]["cuda"])
            history, step, seconds = state["history"], state["step"], state["seconds"]
            stop_reason = state.get("stop_reason")
            print(f"{name}: resumed from checkpoint q1_{name}.pt at iteration {step}"
                  + (f" (finished: {stop_reason})" if stop_reason else ""))
        else:
            print(f"{name}: checkpoint q1_{name}.pt was made with other settings; training from scratch")

    def save():
        torch.save(dict(model=model.state_dict(), optimizer=optimizer.state_dict(), config=config,
                        controller=controller.state_dict(), rng=dict(
                            cpu=torch.get_rng_state(),
                            cuda=torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None),
                        history=history, step=step, seconds=seconds, stop_reason=stop_reason), path)

    def cap_reached():
        if step >= iterations:
            return "iteration cap"
        return "wall-clock cap" if seconds >= wall_minutes * 60 else None

    # a run stopped by a cap continues when the caps are raised; a converged one stays finished
    stop_reason = stop_reason if stop_reason == "converged" else cap_reached()
    data = torch.from_numpy(images)  # uint8 on the CPU; batches are moved and converted
    stream = batches(len(data), config["batch_size"], generator)
    for _ in range(step):  # replay the seeded stream to where a resumed run stopped (cheap)
        next(stream)
    model.train()
    start, last_save = time.time() - seconds, time.time()
    drifts = (float("nan"), float("nan"))
    while stop_reason is None:
        x = data[next(stream)].to(device, non_blocking=True).float().unsqueeze(1)
        try:
            values, kl_latents = vae_step(model, optimizer, controller, x)
        except NonFiniteLoss as err:
            raise NonFiniteLoss(f"{name}, iteration {step + 1}: {err}. Training stopped; the last good "
                                f"checkpoint (iteration {torch.load(path, weights_only=False)['step'] if path.is_file() else 0}) "
                                "is kept. Lower the learning rate or check the data.") from None
        for key in HISTORY_KEYS:
            history[key].append(values[key])
        history["kl_per_latent"].append(kl_latents)
        step += 1
        seconds = time.time() - start
        if step >= min_iterations and step % check_every == 0:
            done, drifts = converged(history, tol)
            stop_reason = "converged" if done else None
        stop_reason = stop_reason or cap_reached()
        if step % print_every == 0 or stop_reason:
            eta = min((iterations - step) * seconds / step, wall_minutes * 60 - seconds) / 60
            print(f"{name} it {step:6d}/{iterations}  KL {values['kl']:7.3f}  recon {values['recon']:8.2f}  "
                  f"beta {values['beta']:7.3f}  recon drift {drifts[0]:+.3f}  {seconds / step:.3f} s/it  "
                  f"ETA <= {max(eta, 0):.1f} min")
        if step % checkpoint_every == 0 or stop_reason or time.time() - last_save > checkpoint_minutes * 60:
            save()
            last_save = time.time()
    model.eval()
    print(f"{name}: stopped at iteration {step} ({stop_reason}) after {seconds / 60:.1f} min")
    info = dict(iterations=step, iteration_cap=iterations, wall_minutes_cap=wall_minutes, stop_reason=stop_reason,
                epochs=step * config["batch_size"] / len(images), train_seconds=seconds,
                seconds_per_iteration=seconds / max(step, 1), recon_plateau=window_drift(history["recon"]),
                beta_drift=window_drift(history["beta"]), checkpoint=f"checkpoints/q1_{name}.pt")
    return model, history, info


def tail_mean(values, fraction=0.1):
    values = np.asarray(values, dtype=float)
    return float(values[-max(1, int(len(values) * fraction)):].mean())


# %% [markdown]
# Train the plain VAE (β = 1 throughout).

# %%
print(VAE())
print(f"parameters: encoder {count_parameters(Encoder()):,}, decoder {count_parameters(Decoder()):,}, "
      f"total {count_parameters(VAE()):,}")
TRAIN_CONFIG = dict(batch_size=BATCH_SIZE, learning_rate=LEARNING_RATE, data=DATA_INFO["source"], seed=SEED)
TRAIN_KW = dict(iterations=SETTINGS["iterations"], device=DEVICE, checkpoint_dir=CHECKPOINTS, resume=RESUME,
                checkpoint_every=SETTINGS["checkpoint_every"], print_every=SETTINGS["print_every"], seed=SEED,
                min_iterations=SETTINGS["min_iterations"], check_every=SETTINGS["check_every"],
                wall_minutes=SETTINGS["wall_minutes"], tol=CONVERGENCE_TOL, checkpoint_minutes=CHECKPOINT_MINUTES)
MODELS, HISTORIES, INFOS = {}, {}, {}
MODELS["vae"], HISTORIES["vae"], INFOS["vae"] = train_vae(
    "vae", IMAGES, ConstantBeta(1.0), config=dict(TRAIN_CONFIG, beta="constant 1"), **TRAIN_KW)

# %% [markdown]
# ## 1-3. VAE evaluation
# ### Losses during training (one plot)
# Faint lines are per-iteration values, solid lines their moving average; the y axis is
# logarithmic because the reconstruction loss starts in the thousands of nats (64·64·ln 2 ≈ 2839
# for a decoder that predicts 0.5 everywhere) while the KL is tens of nats.

# %% tags=["defs"]
def plot_losses(history, title):
    fig, ax = plt.subplots(figsize=(6.5, 3.6))
    for key, label, color in (("total", "total = recon + β·KL", "k"), ("recon", "reconstruction (Bernoulli)", "tab:blue"),
                              ("kl", "KL", "tab:red")):
        ax.plot(history[key], color=color, alpha=0.2, lw=0.6)
        ax.plot(ema(history[key]), color=color, lw=1.6, label=label)
    ax.set_yscale("log")
    ax.set_xlabel("iteration")
    ax.set_ylabel("loss per image (nats, log scale)")
    ax.grid(alpha=0.3, which="both")
    ax.legend()
    ax.set_title(title, fontsize=10)
    return fig


def image_grid(images, rows, cols, title, cell=0.62):
    fig, axes = plt.subplots(rows, cols, figsize=(cols * cell, rows * cell + 0.4))
    for ax, img in zip(np.atleast_1d(axes).flat, images):
        ax.imshow(img, cmap="gray", vmin=0, vmax=1)
        ax.axis("off")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig


def prior_samples(model, n, seed):
    return model.sample(n, torch.Generator().manual_seed(seed)).squeeze(1).cpu().numpy()


# %%
fig = plot_losses(HISTORIES["vae"], "VAE (β = 1): KL, reconstruction and total loss" + data_label())
save_figure(fig, "q1_vae_losses.png")
vae_tail = {k: tail_mean(HISTORIES["vae"][k]) for k in ("kl", "recon", "total")}
print("mean over the last 10% of iterations:", {k: round(v, 3) for k, v in vae_tail.items()})

# %% [markdown]
# ### A 5 x 10 grid of images generated by the VAE
# z ~ N(0, I), decoded, shown as the Bernoulli mean (pixel probabilities).

# %%
fig = image_grid(prior_samples(MODELS["vae"], 50, SEED), 5, 10, "VAE samples from the prior" + data_label())
save_figure(fig, "q1_vae_samples.png")

# %% [markdown]
# ### FID
# FID (Heusel et al., 2017) embeds real and generated images with the Inception-v3 network
# (2048-d pool3 features), fits a Gaussian to each set (means μ_r, μ_g; covariances Σ_r, Σ_g) and
# reports the Fréchet distance between them:
# `FID = ||μ_r - μ_g||² + Tr(Σ_r + Σ_g - 2 (Σ_r Σ_g)^{1/2})`. Lower is better.
#
# How it is computed here: **pytorch-fid**'s `InceptionV3` (its FID weights) and its
# `calculate_frechet_distance`. One **fixed** random subset of real images (seed
# `FID_SUBSET_SEED`) is written to `DATA_DIR` as PNGs (pixel 0/1 -> 0/255) and reused by every
# Q1 FID; its statistics are cached. Each generated image is the decoder's Bernoulli mean
# rounded to 8 bits (`round(255·sigmoid(logits))`), exactly what a PNG would store, and is also
# written as a PNG so that `python -m pytorch_fid` can check it. Gray images are repeated over
# three channels, as pytorch-fid's RGB conversion does. Feature extraction matches pytorch-fid's
# own path (tested) but runs the network in `channels_last` memory format, which is faster on CPU.

# %% tags=["defs"]
def load_fid_inception(device):
    """pytorch-fid's InceptionV3 (pool3, 2048-d); a clear error when its weights cannot be had."""
    from pytorch_fid.inception import InceptionV3
    try:
        model = InceptionV3([InceptionV3.BLOCK_INDEX_BY_DIM[2048]])
    except Exception as err:
        hub = Path(torch.hub.get_dir()) / "checkpoints"
        raise RuntimeError(
            f"pytorch-fid could not load its Inception weights ({err}). Offline, copy "
            f"pt_inception-2015-12-05-6726825d.pth into {hub} (or set TORCH_HOME).") from err
    return model.to(device).eval().to(memory_format=torch.channels_last)


@torch.inference_mode()
def inception_features(images, model, device, batch_size=100):
    """Pool3 features of gray uint8 images (N, H, W): the same input pytorch-fid builds from PNGs."""
    feats = np.empty((len(images), 2048), dtype=np.float64)
    for start in range(0, len(images), batch_size):
        batch = torch.from_numpy(np.ascontiguousarray(images[start:start + batch_size])).to(device)
        x = (batch.float() / 255.0).unsqueeze(1).expand(-1, 3, -1, -1)
        x = x.contiguous(memory_format=torch.channels_last)
        feats[start:start + len(batch)] = model(x)[0].flatten(1).double().cpu().numpy()
    return feats


def feature_statistics(features, min_images):
    if len(features) < min_images:
        raise ValueError(f"FID needs at least {min_images} images per set (got {len(features)}): with fewer "
                         "than the 2048 feature dimensions the covariance is singular. Raise the sample count.")
    return features.mean(axis=0), np.cov(features, rowvar=False)


SINGULAR_PRODUCTS = []  # one entry per Fréchet distance whose covariance product was singular


def frechet_distance(stats_a, stats_b):
    """pytorch-fid's Fréchet distance. scipy warns when the covariance product is (nearly) singular,
    e.g. feature dimensions that never vary; that warning (which prints file paths) becomes one note."""
    import warnings
    from scipy.linalg import LinAlgWarning
    from pytorch_fid.fid_score import calculate_frechet_distance
    with warnings.catch_warnings():
        warnings.simplefilter("error", LinAlgWarning)
        try:
            return float(calculate_frechet_distance(stats_a[0], stats_a[1], stats_b[0], stats_b[1]))
        except LinAlgWarning:
            warnings.simplefilter("ignore", LinAlgWarning)
            SINGULAR_PRODUCTS.append(1)
            if len(SINGULAR_PRODUCTS) == 1:
                print("note: a covariance product is nearly singular (some feature dimensions barely vary); "
                      "scipy's square root is used as pytorch-fid does. Later cases are counted, not printed.")
            return float(calculate_frechet_distance(stats_a[0], stats_a[1], stats_b[0], stats_b[1]))


def to_uint8(probabilities):
    """A generated image in [0, 1] as the 8-bit PNG stores it."""
    return np.round(np.clip(probabilities, 0, 1) * 255).astype(np.uint8)


def write_pngs(images, folder):
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob("*.png"):
        old.unlink()
    for i, img in enumerate(images):
        Image.fromarray(img).save(folder / f"{i:05d}.png")
    return folder


def read_pngs(folder):
    files = sorted(Path(folder).glob("*.png"))
    return np.stack([np.array(Image.open(f).convert("L")) for f in files]) if files else np.zeros((0, 1, 1), np.uint8)


def subset_indices(n_items, n, seed, exclude=()):
    """n indices drawn once (seeded) without replacement, none of them in `exclude`."""
    allowed = np.setdiff1d(np.arange(n_items), np.asarray(exclude, dtype=int))
    if n > len(allowed):
        raise ValueError(f"asked for {n} real images but only {len(allowed)} are available (after excluding "
                         f"{len(exclude)}); lower FID_NUM_REAL")
    return np.sort(np.random.default_rng(seed).choice(allowed, size=n, replace=False)) if len(exclude) else \
        np.random.default_rng(seed).choice(n_items, size=n, replace=False)


def fixed_real_subset(images, n, seed, folder, exclude=()):
    """Pick n real images once (seeded), save them as PNGs with their indices, and reuse them.

    A folder left by another selection (other indices or a missing PNG) is rewritten, and its cached
    statistics are dropped with it.
    """
    folder = Path(folder)
    indices = subset_indices(len(images), n, seed, exclude)
    index_file = folder / "indices.npy"
    if not (index_file.is_file() and np.array_equal(np.load(index_file), indices)
            and len(list(folder.glob("*.png"))) == n):
        (folder / "fid_stats.npz").unlink(missing_ok=True)
        write_pngs(images[indices] * 255 if images.max() <= 1 else images[indices], folder)
        np.save(index_file, indices)
    return folder, indices


def real_statistics(folder, model, device, batch_size, min_images):
    """Statistics of the real subset, cached beside its PNGs."""
    cache = Path(folder) / "fid_stats.npz"
    if cache.is_file():
        with np.load(cache) as f:
            return f["mu"], f["sigma"]
    stats = feature_statistics(inception_features(read_pngs(folder), model, device, batch_size), min_images)
    np.savez(cache, mu=stats[0], sigma=stats[1])
    return stats


# %%
MIN_IMAGES = 2 if RUN["profile"] == "smoke" else MIN_FID_IMAGES
for count in (SETTINGS["fid_real"], SETTINGS["fid_gen"]):
    if count < MIN_IMAGES:
        raise ValueError(f"FID sample counts must be >= {MIN_IMAGES} outside the smoke profile; got {count}")
subset_name = f"q1_dsprites{'_STANDIN' if DATA_INFO['standin'] else ''}_real_n{SETTINGS['fid_real']}_seed{FID_SUBSET_SEED}"
REAL_FOLDER, REAL_INDICES = fixed_real_subset(IMAGES, SETTINGS["fid_real"], FID_SUBSET_SEED, DATA_DIR / "fid" / subset_name)
INCEPTION = load_fid_inception(DEVICE)
t0 = time.time()
REAL_STATS = real_statistics(REAL_FOLDER, INCEPTION, DEVICE, FID_BATCH_SIZE, MIN_IMAGES)
print(f"real subset: {len(REAL_INDICES)} images in data/fid/{subset_name} (statistics ready in {time.time() - t0:.0f} s)")
# The floor: the same FID between two disjoint real subsets. No model can be expected to score below
# it with this many images; it is the reference every model FID is read against.
FLOOR_FOLDER, FLOOR_INDICES = fixed_real_subset(IMAGES, SETTINGS["fid_real"], FID_SUBSET_SEED + 1,
                                                DATA_DIR / "fid" / f"{subset_name}_floor", exclude=REAL_INDICES)
FID_FLOOR = frechet_distance(REAL_STATS, real_statistics(FLOOR_FOLDER, INCEPTION, DEVICE, FID_BATCH_SIZE, MIN_IMAGES))
print(f"FID floor (real vs a disjoint real subset of {len(FLOOR_INDICES)}): {FID_FLOOR:.2f}")


# %% [markdown]
# Each model is scored twice on the **same** 5,000 prior samples, against the same real subset:
# - `fid`: the Bernoulli means (grey pixel probabilities, what the grids show);
# - `fid_binary`: the same images **thresholded at 0.5** (the most likely binary image), which is
#   the kind of image the data holds (pixels 0 or 1).
#
# `blank_share` counts prior samples that draw (almost) nothing: mean pixel below 20% of the
# data's mean pixel.

# %% tags=["defs"]
def blank_share(probabilities, data_mean_pixel, fraction=0.2):
    """Share of images whose mean pixel is below `fraction` of the data's mean pixel."""
    return float((probabilities.reshape(len(probabilities), -1).mean(axis=1) < fraction * data_mean_pixel).mean())


def binarise(probabilities, threshold=0.5):
    return (probabilities > threshold).astype(np.uint8) * 255


def fid_of_images(images):
    stats = feature_statistics(inception_features(images, INCEPTION, DEVICE, FID_BATCH_SIZE), MIN_IMAGES)
    return frechet_distance(REAL_STATS, stats)


def generated_fid(name, model, n, seed):
    """FID of n prior samples, as 8-bit Bernoulli means and as binary images; and the blank share."""
    t0 = time.time()
    probabilities = prior_samples(model, n, seed + 1)
    images = to_uint8(probabilities)
    write_pngs(images, SAMPLES / f"q1_{name}")
    scores = dict(fid=fid_of_images(images), fid_binary=fid_of_images(binarise(probabilities, BINARY_THRESHOLD)),
                  blank_share=blank_share(probabilities, DATA_INFO["mean_pixel"]))
    print(f"{name}: FID (Bernoulli means) {scores['fid']:.2f}, FID (binary, threshold {BINARY_THRESHOLD}) "
          f"{scores['fid_binary']:.2f}, floor {FID_FLOOR:.2f}; blank samples {100 * scores['blank_share']:.1f}%  "
          f"({n} generated vs {len(REAL_INDICES)} real, {time.time() - t0:.0f} s)")
    return scores


# %%
FIDS = {"vae": generated_fid("vae", MODELS["vae"], SETTINGS["fid_gen"], SEED)}

# %% [markdown]
# The blank samples, if any: latent codes the decoder maps to (almost) nothing. They come from
# regions of the N(0, I) prior that the aggregate posterior q(z) = mean_x q(z|x) never covers
# (holes between the data's codes), where the decoder was never trained to draw a sprite.

# %%
probabilities = prior_samples(MODELS["vae"], SETTINGS["fid_gen"], SEED + 1)
blank = probabilities.reshape(len(probabilities), -1).mean(axis=1) < 0.2 * DATA_INFO["mean_pixel"]
print(f"VAE: {blank.sum()} of {len(blank)} prior samples are blank ({100 * blank.mean():.1f}%)")
if blank.any():
    shown = probabilities[blank][:10]
    fig = image_grid(shown, 1, len(shown), f"VAE: blank prior samples (mean pixel < 20% of the data's)" + data_label())
    save_figure(fig, "q1_vae_blank_samples.png")

# %% [markdown]
# ## 1-4. ControlVAE
# The same network and optimiser, with β(t) from the PI controller. Constants from the paper's
# dSprites experiments: Kp = 0.01, Ki = 0.001, β_min = 1, and a generous β_max = 100 (printed below).
# Each set point (8 and 14) is trained separately from the same initialisation seed.

# %%
print(dict(KP=KP, KI=KI, BETA_MIN=BETA_MIN, BETA_MAX=BETA_MAX, SET_POINTS=SET_POINTS,
           SETPOINT_RAMP_ITERS=SETPOINT_RAMP_ITERS))
CONTROL_NAMES = []
for set_point in SET_POINTS:
    name = f"controlvae_kl{set_point:g}"
    CONTROL_NAMES.append(name)
    controller = PIController(set_point, KP, KI, BETA_MIN, BETA_MAX, ramp_iters=SETPOINT_RAMP_ITERS)
    config = dict(TRAIN_CONFIG, set_point=set_point, kp=KP, ki=KI, beta_min=BETA_MIN, beta_max=BETA_MAX,
                  ramp=SETPOINT_RAMP_ITERS)
    MODELS[name], HISTORIES[name], INFOS[name] = train_vae(name, IMAGES, controller, config=config, **TRAIN_KW)


# %% [markdown]
# ### KL and reconstruction for both set points (one plot per quantity), and β(t)
# The plain VAE is drawn in gray for reference; dashed lines mark the set points.

# %% tags=["defs"]
def plot_quantity(histories, key, ylabel, title, set_points=(), log=False):
    fig, ax = plt.subplots(figsize=(6.5, 3.6))
    # the plain VAE is always gray; each ControlVAE keeps its colour across the KL, recon and β plots
    others = [n for n in histories if n != "vae"]
    colors = dict(vae="0.55", **dict(zip(others, ["tab:blue", "tab:orange", "tab:green", "tab:purple"])))
    for name, history in histories.items():
        ax.plot(history[key], color=colors[name], alpha=0.18, lw=0.6)
        ax.plot(ema(history[key]), color=colors[name], lw=1.6, label=MODEL_LABELS.get(name, name))
    for value in set_points:
        ax.axhline(value, ls="--", color="k", lw=0.8)
    if log:
        ax.set_yscale("log")
    ax.set_xlabel("iteration")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3, which="both")
    ax.legend()
    ax.set_title(title, fontsize=10)
    return fig


# %%
all_runs = {name: HISTORIES[name] for name in ["vae"] + CONTROL_NAMES}
control_runs = {name: HISTORIES[name] for name in CONTROL_NAMES}
for key, ylabel, log, points, runs in (("kl", "KL (nats)", False, SET_POINTS, all_runs),
                                       ("recon", "reconstruction loss (nats, log)", True, (), all_runs),
                                       ("beta", "β(t)", False, (), control_runs)):
    fig = plot_quantity(runs, key, ylabel, f"ControlVAE, set points {SET_POINTS}: {ylabel.split(' (')[0]}" + data_label(), points, log)
    save_figure(fig, f"q1_controlvae_{key}.png")

# %% [markdown]
# ### Samples (5 x 10) and FID against the same real subset as in 1-3

# %%
for name in CONTROL_NAMES:
    fig = image_grid(prior_samples(MODELS[name], 50, SEED), 5, 10, f"{MODEL_LABELS[name]}: samples from the prior" + data_label())
    save_figure(fig, f"q1_{name}_samples.png")
    FIDS[name] = generated_fid(name, MODELS[name], SETTINGS["fid_gen"], SEED)

# %% [markdown]
# ### Beyond the assignment: latent traversals
# Each row varies one latent from -3 to 3 around the code of one real image, the others fixed;
# rows are sorted by the latent's average KL (most informative first), printed at the left.
# Latents with a KL near 0 are unused (collapsed to the prior).

# %% tags=["defs"]
@torch.no_grad()
def latent_traversal(model, image, kl_latents, steps=9, span=3.0):
    device = next(model.parameters()).device
    mean, _ = model.encoder(torch.from_numpy(image).float()[None, None].to(device))
    order = np.argsort(-kl_latents)
    values = torch.linspace(-span, span, steps)
    rows = []
    for dim in order:
        z = mean.repeat(steps, 1)
        z[:, dim] = values.to(device)
        rows.append(torch.sigmoid(model.decoder(z)).squeeze(1).cpu().numpy())
    return np.stack(rows), order


def plot_traversal(rows, order, kl_latents, title):
    n_rows, steps = rows.shape[:2]
    fig, axes = plt.subplots(n_rows, steps, figsize=(steps * 0.55, n_rows * 0.55 + 0.5))
    for r in range(n_rows):
        for c in range(steps):
            axes[r, c].imshow(rows[r, c], cmap="gray", vmin=0, vmax=1)
            axes[r, c].set_xticks([])
            axes[r, c].set_yticks([])
        axes[r, 0].set_ylabel(f"z{order[r]}\n{kl_latents[order[r]]:.2f}", fontsize=9, rotation=0, labelpad=20)
    fig.suptitle(title, fontsize=9)
    return fig


# %%
REFERENCE = IMAGES[len(IMAGES) // 2]
ACTIVE_UNITS = {}
for name in ["vae"] + CONTROL_NAMES:
    kl_latents = np.mean(HISTORIES[name]["kl_per_latent"][-max(1, len(HISTORIES[name]["kl"]) // 10):], axis=0)
    ACTIVE_UNITS[name] = int((kl_latents > 0.1).sum())
    rows, order = latent_traversal(MODELS[name], REFERENCE, kl_latents)
    fig = plot_traversal(rows, order, kl_latents, f"{MODEL_LABELS[name]}: traversals, KL per latent at left" + data_label())
    save_figure(fig, f"q1_{name}_traversal.png")

# %% [markdown]
# ### Beyond the assignment: KL per latent over training
# The figure the ControlVAE paper uses to show which latent takes up which factor, and when:
# each curve is one latent's KL (moving average), per model.

# %% tags=["defs"]
def plot_kl_per_latent(histories, title):
    fig, axes = plt.subplots(len(histories), 1, figsize=(6.5, 2.0 * len(histories) + 0.6), sharex=True, squeeze=False)
    for ax, (name, history) in zip(axes[:, 0], histories.items()):
        per_latent = np.asarray(history["kl_per_latent"])
        for dim in range(per_latent.shape[1]):
            ax.plot(ema(per_latent[:, dim]), lw=1.2, label=f"z{dim}")
        ax.set_title(MODEL_LABELS.get(name, name), fontsize=10)
        ax.set_ylabel("KL (nats)", fontsize=10)
        ax.grid(alpha=0.3)
    axes[-1, 0].set_xlabel("iteration", fontsize=10)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, 0.93))
    fig.legend(*axes[0, 0].get_legend_handles_labels(), loc="upper center", bbox_to_anchor=(0.5, 0.955), ncol=10,
               fontsize=8, frameon=False)
    return fig


# %%
fig = plot_kl_per_latent({name: HISTORIES[name] for name in ["vae"] + CONTROL_NAMES}, "KL per latent over training" + data_label())
save_figure(fig, "q1_kl_per_latent.png")

# %% [markdown]
# ### Beyond the assignment: disentanglement, measured with MIG
# The subset's images are indexed `shape*6144 + scale*1024 + posX*32 + posY` (3 shapes, 6 scales,
# 32 x 32 positions; orientation fixed). The cell below first checks that order on the images
# themselves (sprite centroid column vs posX, row vs posY, area vs scale) before trusting it.
#
# The **Mutual Information Gap** (Chen et al., 2018): for each factor v_k, the gap between the
# two latents that carry the most information about it, normalised by the factor's entropy,
# averaged over factors: `MIG = mean_k (I(z_j1; v_k) - I(z_j2; v_k)) / H(v_k)`. 1 = each factor
# lives in exactly one latent; 0 = no latent singles a factor out. **Estimator:** the
# histogram-of-means estimator of disentanglement_lib: the posterior mean of every latent on
# all 18,432 images, discretised into 20 equal-width bins, and discrete mutual information with
# each factor's class.

# %% tags=["defs"]
FACTOR_NAMES, FACTOR_SIZES = ("shape", "scale", "posX", "posY"), (3, 6, 32, 32)
MIG_BINS = 20


def check_factor_order(images, factors, min_corr=0.9):
    """The index order the factors assume, checked on the images; returns the correlations."""
    rows, cols = np.arange(images.shape[1]), np.arange(images.shape[2])
    mass = images.sum(axis=(1, 2)).astype(float)
    if (mass == 0).any():
        raise ValueError(f"{int((mass == 0).sum())} images are empty: not the dSprites subset")
    centre_x = (images.sum(axis=1) * cols).sum(axis=1) / mass   # column centroid
    centre_y = (images.sum(axis=2) * rows).sum(axis=1) / mass   # row centroid
    corr = dict(posX=np.corrcoef(centre_x, factors[:, 2])[0, 1], posY=np.corrcoef(centre_y, factors[:, 3])[0, 1],
                scale=min(np.corrcoef(mass[factors[:, 0] == k], factors[factors[:, 0] == k, 1])[0, 1] for k in range(3)))
    bad = {k: round(v, 3) for k, v in corr.items() if not v >= min_corr}
    if bad:
        raise ValueError(f"the images do not follow the index order shape*6144 + scale*1024 + posX*32 + posY "
                         f"(correlations {bad}, expected >= {min_corr}); the MIG would be meaningless")
    return {k: float(v) for k, v in corr.items()}


@torch.no_grad()
def encode_means(model, images, batch_size=1024):
    device = next(model.parameters()).device
    out = [model.encoder(torch.from_numpy(images[i:i + batch_size]).float().unsqueeze(1).to(device))[0].cpu()
           for i in range(0, len(images), batch_size)]
    return torch.cat(out).numpy()


def discretise(codes, bins=MIG_BINS):
    """Each column into `bins` equal-width bins over its own range (disentanglement_lib's histogram)."""
    out = np.zeros(codes.shape, dtype=int)
    for j in range(codes.shape[1]):
        edges = np.histogram(codes[:, j], bins)[1]
        out[:, j] = np.digitize(codes[:, j], edges[:-1]) - 1
    return out


def entropy(labels):
    p = np.bincount(labels) / len(labels)
    p = p[p > 0]
    return float(-(p * np.log(p)).sum())


def mutual_information(a, b):
    """Discrete I(a; b) in nats from two integer label arrays."""
    joint = np.bincount(a * (b.max() + 1) + b).astype(float)
    pj = joint[joint > 0] / len(a)
    return entropy(a) + entropy(b) + float((pj * np.log(pj)).sum())


def mig(codes, factors, bins=MIG_BINS):
    """(MIG, per-factor gaps, normalised MI matrix latents x factors) with the histogram estimator."""
    binned = discretise(codes, bins)
    mi = np.array([[mutual_information(binned[:, j], factors[:, k]) for k in range(factors.shape[1])]
                   for j in range(codes.shape[1])])
    normalised = mi / np.array([entropy(factors[:, k]) for k in range(factors.shape[1])])
    top = np.sort(normalised, axis=0)[::-1]
    gaps = top[0] - top[1]
    return float(gaps.mean()), gaps, normalised


# %%
FACTORS = subset_latent_grid()
FACTOR_CHECK = check_factor_order(IMAGES, FACTORS)
print("index order checked on the images (correlations):", {k: round(v, 3) for k, v in FACTOR_CHECK.items()})
MIGS = {}
print(f"\n{'model':18s} {'MIG':>6s}  " + "  ".join(f"{f + ' (latent, I/H, gap)':>24s}" for f in FACTOR_NAMES))
for name in ["vae"] + CONTROL_NAMES:
    score, gaps, normalised = mig(encode_means(MODELS[name], IMAGES), FACTORS)
    carriers = {f: dict(latent=int(normalised[:, k].argmax()), normalised_mi=float(normalised[:, k].max()),
                        gap=float(gaps[k])) for k, f in enumerate(FACTOR_NAMES)}
    MIGS[name] = dict(mig=score, mig_factors=carriers)
    print(f"{name:18s} {score:6.3f}  " + "  ".join(
        f"{'z' + str(c['latent']):>8s} {c['normalised_mi']:6.2f} {c['gap']:6.2f}   " for c in carriers.values()))

# %% [markdown]
# ## Summary and saved results
# Final values are means over the last 10% of iterations. `results/q1.json` holds everything
# printed here, plus the run header.

# %%
SUMMARY = {}
for name in ["vae"] + CONTROL_NAMES:
    h = HISTORIES[name]
    SUMMARY[name] = dict(
        set_point=None if name == "vae" else float(name.split("kl")[1]),
        final_kl=tail_mean(h["kl"]), final_recon=tail_mean(h["recon"]), final_total=tail_mean(h["total"]),
        final_beta=tail_mean(h["beta"]), active_latents=ACTIVE_UNITS[name], **FIDS[name], **MIGS[name],
        **INFOS[name])
    if SUMMARY[name]["set_point"] is not None:
        SUMMARY[name]["kl_error"] = SUMMARY[name]["final_kl"] - SUMMARY[name]["set_point"]
header = (f"{'model':16s} {'set pt':>6s} {'KL':>6s} {'recon':>7s} {'plateau':>8s} {'beta':>6s} {'FID':>7s} "
          f"{'FID bin':>7s} {'blank':>6s} {'MIG':>5s} {'iters':>6s} {'stop':>15s} {'min':>5s}")
print(header + "\n" + "-" * len(header))
for name, s in SUMMARY.items():
    print(f"{name:16s} {s['set_point'] or '-':>6} {s['final_kl']:6.2f} {s['final_recon']:7.2f} {s['recon_plateau']:+8.3f} "
          f"{s['final_beta']:6.2f} {s['fid']:7.2f} {s['fid_binary']:7.2f} {s['blank_share']:6.3f} {s['mig']:5.3f} "
          f"{s['iterations']:6d} {s['stop_reason']:>15s} {s['train_seconds'] / 60:5.1f}")
print(f"FID floor (two disjoint real subsets of {len(REAL_INDICES)}): {FID_FLOOR:.2f}.  FID: Bernoulli means; FID bin: "
      f"thresholded at {BINARY_THRESHOLD}; plateau: recon drift between the last two tenths of training; blank: share "
      "of prior samples with mean pixel < 20% of the data's; MIG: histogram estimator, 20 bins.")
if DATA_INFO["standin"]:
    print("\nAll values above come from the OFFLINE STAND-IN data, not the real dSprites file.")

RUN["wall_seconds"] = time.time() - RUN_START
fid_info = dict(num_real=len(REAL_INDICES), num_gen=SETTINGS["fid_gen"], real_subset=f"data/fid/{subset_name}",
                subset_seed=FID_SUBSET_SEED, generated_png="round(255 * sigmoid(decoder logits)), z ~ N(0, I)",
                binary=f"pixel = 255 where sigmoid(decoder logits) > {BINARY_THRESHOLD}, else 0 (same z as fid)",
                floor_subset_seed=FID_SUBSET_SEED + 1, floor="real subset vs a disjoint real subset of the same size",
                library="pytorch-fid 0.3.0, InceptionV3 pool3 (2048-d)")
controller_info = dict(kp=KP, ki=KI, beta_min=BETA_MIN, beta_max=BETA_MAX, set_points=SET_POINTS,
                       ramp_iters=SETPOINT_RAMP_ITERS, anti_windup="I clamped so that P + I + beta_min stays in [beta_min, beta_max]")
mig_info = dict(estimator="histogram of posterior means (disentanglement_lib), 20 equal-width bins, all images",
                factors=list(FACTOR_NAMES), factor_order_check=FACTOR_CHECK)
RESULTS_JSON = dict(run=RUN, data=DATA_INFO, fid=fid_info, fid_floor=FID_FLOOR, controller=controller_info,
                    mig=mig_info, convergence=dict(tol=CONVERGENCE_TOL, definition="mean(last 10%) / mean(10% before) - 1"),
                    fixed_beta_baseline="skipped: outside the cpu budget", models=SUMMARY)
(RESULTS / "q1.json").write_text(json.dumps(RESULTS_JSON, indent=1))
print(f"\nwrote {RESULTS / 'q1.json'}; wall time {RUN['wall_seconds'] / 60:.1f} min, profile {RUN['profile']}, "
      f"device {RUN['device']}, data: {DATA_INFO['source']}")
