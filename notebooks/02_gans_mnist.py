# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # HW6 — Question 2: GAN, WGAN and SSGAN on MNIST
#
# Self-contained: data loading, the networks of Tables 2-7, the losses, training, a
# hyperparameter search, plots and FID (pytorch-fid) are all defined here. Run it top to bottom.
# The **parameters** cell holds every knob; `PROFILE = "auto"` picks `full` on a CUDA GPU and
# `cpu` otherwise. The first output states profile, device, data and sizes.
#
# Every model trains a fixed number of generator iterations as a **resumable job**: checkpoints
# every few minutes, exact resume, each training segment recorded. A long run may span several
# sessions (`SEGMENT_MINUTES`); the final top-to-bottom execution finds every model finished and
# trains nothing more. `FROM_WEIGHTS = True` evaluates the final generators under `weights/`
# without training: every figure and number in minutes.

# %% tags=["parameters"]
PROFILE = "auto"          # "auto" (full on CUDA, else cpu) | "full" | "cpu" | "smoke"
DATA_ROOT = ""            # read-only offline data ("" -> $HW6_DATA_ROOT, else DATA_DIR); MNIST/raw inside
DATA_DIR = "../data"      # writable: downloads, the fixed FID real subsets, cached features
OUTPUT_DIR = ".."         # figures/, results/, checkpoints/, weights/, samples/ are written under it
SEED = 0
FID_SUBSET_SEED = 1234
FID_NUM_REAL = 0          # 0 -> the profile's value (5000 in full and cpu)
FID_NUM_GEN = 0
FID_BATCH_SIZE = 100
FID_BOOTSTRAP = 20        # resamples of the generated features for FID's standard error (0: none)
ALLOW_DOWNLOAD = True
RUN_SEARCH = True         # 2-1, question 2: the GAN hyperparameter search (False: train GAN_DEFAULT)
GAN_DEFAULT = {"lr": 2e-4, "betas": (0.5, 0.999), "batch_size": 64, "d_steps": 1}  # DCGAN (Radford et al. 2016)
WGAN = {"clip": 0.01, "n_critic": 5, "batch_size": 64}  # Arjovsky et al. 2017 (RMSprop); lr decided in 2-2
WGAN_LRS = [5e-5, 2e-4]   # the paper's lr first; 2-2 trains both side by side and keeps the better
SSGAN = {"lr": 2e-4, "betas": (0.0, 0.9), "alpha": 0.2, "beta": 1.0, "batch_size": 64, "n_dis": 1,
         "channels_last": True}  # Chen et al. 2019; channels_last: a faster memory layout, same maths
ITERATIONS = {}           # e.g. {"gan": 30000}: generator iterations per model; empty -> profile's
SSGAN_WIDTHS = {}         # e.g. {"g": 256, "d": 128}; empty -> profile's (spec widths in full)
EMA_DECAY = 0.999         # weight average of each generator (0: none); used only where it scores better
SEGMENT_MINUTES = 0       # > 0: stop training after this many minutes per model (resume by running again)
CHECKPOINT_MINUTES = 3    # checkpoint at least this often, so an interrupted run resumes where it stopped
RESUME = True             # reuse finished / partial checkpoints under OUTPUT_DIR/checkpoints
FROM_WEIGHTS = False      # evaluate the final generators in OUTPUT_DIR/weights without training (minutes)

# %% [markdown]
# ## 0. Setup

# %% tags=["defs"]
import copy
import hashlib
import json
import math
import os
import platform
import re
import time
import warnings
from pathlib import Path

import matplotlib.font_manager
import matplotlib.pyplot as plt
import matplotlib.text
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image
from torch.nn.utils.parametrizations import spectral_norm

SPEC_WIDTHS = dict(g=256, d=128)
# iterations: generator iterations per model (every model trains exactly this many); search_rungs:
# the successive-halving horizons of the GAN search (the winner continues from the last one);
# wgan_trial: the length of the WGAN learning-rate side-by-side; checks: cheap-FD checks every
# `cheap_fd_every` iterations on `cheap_fd_n` digits; fid_dims: pytorch-fid's feature block.
PROFILES = {
    "full": dict(iterations=dict(gan=30_000, wgan=20_000, ssgan=20_000), search_rungs=[2000, 4000], wgan_trial=2000,
                 ssgan_widths=SPEC_WIDTHS, ssgan_timed_widths=[], fid_real=5000, fid_gen=5000, fid_dims=2048, cheap_fd_every=500,
                 cheap_fd_n=2000, classifier_steps=3000),
    "cpu": dict(iterations=dict(gan=20_000, wgan=15_000, ssgan=10_000), search_rungs=[2000, 4000], wgan_trial=2000,
                ssgan_widths=dict(g=32, d=32), ssgan_timed_widths=[32, 48, 64], fid_real=5000, fid_gen=5000, fid_dims=2048, cheap_fd_every=500,
                cheap_fd_n=1000, classifier_steps=3000),
    # smoke: pytorch-fid's 64-d features (its first pooling block): a 2048-d matrix square root of a
    # 16-image covariance takes about a minute on a slow CPU, and 16 images make no FID anyway
    "smoke": dict(iterations=dict(gan=8, wgan=6, ssgan=6), search_rungs=[2, 4], wgan_trial=2,
                  ssgan_widths=dict(g=16, d=16), ssgan_timed_widths=[16], fid_real=16, fid_gen=16, fid_dims=64, cheap_fd_every=2,
                  cheap_fd_n=64, classifier_steps=4),
}
MIN_FID_IMAGES = 2048  # below the 2048 feature dimensions the covariance is singular
LEGIBLE_CONFIDENCE = 0.9  # a digit is legible when the classifier gives its label at least this probability


def resolve_profile(name, cuda_available):
    if name == "auto":
        return "full" if cuda_available else "cpu"
    if name not in PROFILES:
        raise ValueError(f"PROFILE must be one of auto, {', '.join(PROFILES)}; got {name!r}")
    return name


def tenth_means(values):
    """Means of a per-iteration curve over ten equal stretches of the run (the losses' trend, recorded in the results)."""
    return [float(np.mean(part)) for part in np.array_split(np.asarray(values, dtype=np.float64), 10)]


def ema(values, weight=0.98):
    """Exponential moving average of a curve (for plots)."""
    out, acc = np.empty(len(values)), None
    for i, v in enumerate(values):
        acc = v if acc is None else weight * acc + (1 - weight) * v
        out[i] = acc
    return out


REPORT_WIDTH_INCHES = 5.5  # the report prints a figure about this wide (text width 6.5 in)
REPORT_MIN_POINTS = 8  # smallest legible text on the printed page


def enlarge_small_text(fig, width=REPORT_WIDTH_INCHES, min_points=REPORT_MIN_POINTS):
    """Raise every text of `fig` that would print below `min_points` once the figure is shrunk to `width`
    inches, then lay the figure out again (a figure-level legend keeps its column on the right)."""
    shrink = min(1.0, width / fig.get_figwidth())
    floor = min_points / shrink
    small = [text for text in fig.findobj(matplotlib.text.Text) if text.get_text() and text.get_fontsize() < floor]
    if not small:
        return  # already legible: the notebook's layout stays as it is
    for ax in fig.axes:
        for axis in (ax.xaxis, ax.yaxis):
            if axis.get_ticklabels() and axis.get_ticklabels()[0].get_fontsize() < floor:
                ax.tick_params(axis="x" if axis is ax.xaxis else "y", labelsize=floor)
    for text in small:
        text.set_fontsize(floor)
    right = 1.0
    if fig.legends:
        renderer = fig.canvas.get_renderer()
        right = 1.0 - max(legend.get_window_extent(renderer).width for legend in fig.legends) / fig.bbox.width - 0.01
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # image grids without axes decorations: tight layout may not apply
        fig.tight_layout(rect=(0, 0, right, 1))


# The report copies' Persian labels: exact texts, then patterns whose named groups are words (REPORT_WORDS_FA)
# or numbers (written in Persian digits).
REPORT_LABELS_FA = {
    "generator iteration": "تکرار مولد", "classifier-space FD (log scale)": "FD طبقه‌بند (مقیاس لگاریتمی)",
    "loss": "خطا", "D loss": "خطای D", "G loss": "خطای G",
    "Wasserstein estimate (-D loss)": "برآورد فاصله‌ی واسرشتاین (منفی خطای D)",
    "D rotation CE (real)": "خطای چرخش D (واقعی)", "G rotation CE (fake)": "خطای چرخش G (ساختگی)",
    "whole run": "کل آموزش", "after the first tenth (zoomed)": "پس از دهم اول (بزرگ‌نمایی)",
    "digit class (classifier's label)": "رقم (برچسب طبقه‌بند)", "MNIST test (real)": "آزمون MNIST (واقعی)",
}
REPORT_PATTERNS_FA = [
    (r"share of (?P<n>[\d,]+) digits", "سهم از {n} رقم"),
    (r"reported generator \(iteration (?P<n>\d+)\)", "مولد گزارش‌شده (تکرار {n})"),
    (r"(?P<stage>early|middle|final): iteration (?P<n>[\d,]+)", "{stage}: تکرار {n}"),
    (r"end of training \(not reported\): iteration (?P<n>[\d,]+)", "پایان آموزش (گزارش‌نشده): تکرار {n}"),
    (r"(?P<rank>\d+)\. lr (?P<lr>[\d.e-]+), betas \((?P<b1>[\d.]+), (?P<b2>[\d.]+)\), D steps (?P<d>\d+)",
     "{rank}. نرخ {lr}، ضرایب ({b1}، {b2})، {d} گام D"),
    (r"(?P<rank>\d+)\. RMSprop lr (?P<lr>[\d.e-]+) \(paper\)", "{rank}. RMSprop با نرخ {lr} (مقاله)"),
    (r"(?P<rank>\d+)\. RMSprop lr (?P<lr>[\d.e-]+)", "{rank}. RMSprop با نرخ {lr}"),
    (r"(?P<run>winner|default): lr (?P<lr>[\d.e-]+), betas \((?P<b1>[\d.]+), (?P<b2>[\d.]+)\) \((?P<kind>trained|EMA)\)",
     "{run}: نرخ {lr}، ضرایب ({b1}، {b2})، {kind}"),
    (r"(?P<model>GAN|WGAN|SSGAN) \((?P<kind>trained)\)", "{model} ({kind})"),
]
REPORT_WORDS_FA = {"early": "ابتدایی", "middle": "میانی", "final": "نهایی", "winner": "برنده", "default": "پیش‌فرض",
                   "trained": "خام"}


PERSIAN_FONT = "Vazirmatn"  # the report's font (report/fonts): the report copies' labels are Persian
RLM = "\u200f"  # right-to-left mark: a label that starts with "(a)" or a Latin name still reads right to left


def persian_font_ready():
    """Register the report's Persian font with matplotlib. False where the report copies keep English labels:
    no report/fonts in this checkout (e.g. the notebook alone on Colab), or a matplotlib before 3.11 (which
    does not shape right-to-left text)."""
    font = OUT / "report" / "fonts" / f"{PERSIAN_FONT}-Regular.ttf"
    if not font.is_file() or tuple(int(part) for part in matplotlib.__version__.split(".")[:2]) < (3, 11):
        return False
    if PERSIAN_FONT not in {entry.name for entry in matplotlib.font_manager.fontManager.ttflist}:
        matplotlib.font_manager.fontManager.addfont(str(font))
    return True


def persian_number(text):
    """Persian digits and Persian thousands and decimal marks: 5,000 -> ۵٬۰۰۰ (5e-05 is written out: ۰٫۰۰۰۰۵)."""
    if "e-" in text:
        text = f"{float(text):.12f}".rstrip("0")
    return text.translate(str.maketrans("0123456789,.", "۰۱۲۳۴۵۶۷۸۹٬٫"))


def persian_label(text):
    """The Persian of a figure's label (REPORT_LABELS_FA exactly, else the first REPORT_PATTERNS_FA that
    matches, each named group as its REPORT_WORDS_FA word or its number in Persian digits), or None for a
    label that stays as it is."""
    if text in REPORT_LABELS_FA:
        return RLM + REPORT_LABELS_FA[text]
    for pattern, template in REPORT_PATTERNS_FA:
        match = re.fullmatch(pattern, text)
        if match:
            return RLM + template.format(**{key: REPORT_WORDS_FA.get(value) or persian_number(value)
                                            for key, value in match.groupdict().items()})
    return None


def translate_labels(fig):
    """Every label of `fig` that has a Persian translation, in Persian (the report's font, then matplotlib's
    default for symbols it lacks, such as β)."""
    for text in fig.findobj(matplotlib.text.Text):
        persian = persian_label(text.get_text())
        if persian is not None:
            text.set_text(persian)
            text.set_fontfamily([PERSIAN_FONT, "DejaVu Sans"])


def save_report_copy(fig, name):
    """figures/report/<name>: the figure as the report prints it: without its English title (the report's
    Persian caption says it), with Persian labels where the font allows, and no text below REPORT_MIN_POINTS
    at the report's width."""
    if fig.get_suptitle():
        fig.suptitle("")
    elif len(fig.axes) == 1:
        fig.axes[0].set_title("")
    if persian_font_ready():
        translate_labels(fig)
    enlarge_small_text(fig)
    (FIGURES / "report").mkdir(parents=True, exist_ok=True)
    fig.savefig(FIGURES / "report" / name, dpi=130, bbox_inches="tight")


def save_figure(fig, name):
    """Save the figure, then show the saved PNG in the cell's output.

    Showing the file (not `plt.show()`) puts the plot into the saved notebook whatever backend the
    environment selects: `MPLBACKEND=Agg` would make `plt.show()` draw nothing.
    """
    path = FIGURES / name
    fig.savefig(path, dpi=130, bbox_inches="tight")
    save_report_copy(fig, name)
    plt.close(fig)
    show_png(path)
    print(f"saved figures/{name}")  # returns None: a path as a cell's last value would print the machine's folders


def show_png(path):
    try:
        from IPython.display import Image as PNG, display
    except ImportError:  # plain Python (tests): the file is the output
        return
    display(PNG(filename=str(path)))


def data_label(model=None):
    """Suffix for titles when a run departs from the assignment's setting: fewer training digits than the
    official 60,000, or reduced SSGAN widths (the profile and device are stated once, in the first output)."""
    tags = [] if DATA_INFO["official_size"] else [f"{DATA_INFO['n_train']:,} MNIST training digits, not 60,000"]
    if model == "ssgan" and RUN["ssgan_widths"] != SPEC_WIDTHS:
        tags.append(f"reduced widths G {RUN['ssgan_widths']['g']} / D {RUN['ssgan_widths']['d']}, "
                    f"not {SPEC_WIDTHS['g']} / {SPEC_WIDTHS['d']}")
    return f" ({'; '.join(tags)})" if tags else ""


def device_label(device):
    return torch.cuda.get_device_name(device) if torch.device(device).type == "cuda" else "cpu"


# %% tags=["setup"]
RUN_START = time.time()
DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
RUN = dict(profile=resolve_profile(PROFILE, torch.cuda.is_available()), device=str(DEVICE))
SETTINGS = copy.deepcopy(PROFILES[RUN["profile"]])
SETTINGS["iterations"].update(ITERATIONS)
SETTINGS["ssgan_widths"] = dict(SETTINGS["ssgan_widths"], **SSGAN_WIDTHS)
SETTINGS["fid_real"] = FID_NUM_REAL or SETTINGS["fid_real"]
SETTINGS["fid_gen"] = FID_NUM_GEN or SETTINGS["fid_gen"]
DATA_DIR = Path(DATA_DIR)
DATA_ROOTS = [Path(p) for p in (DATA_ROOT or os.environ.get("HW6_DATA_ROOT", ""), DATA_DIR) if p]
OUT = Path(OUTPUT_DIR)
FIGURES, RESULTS, CHECKPOINTS, WEIGHTS, SAMPLES = (OUT / d for d in ("figures", "results", "checkpoints", "weights", "samples"))
for folder in (DATA_DIR, FIGURES, RESULTS, CHECKPOINTS, WEIGHTS, SAMPLES):
    folder.mkdir(parents=True, exist_ok=True)
torch.manual_seed(SEED)
np.random.seed(SEED)
RUN.update(
    device_name=torch.cuda.get_device_name(0) if DEVICE.type == "cuda" else platform.processor() or "cpu",
    torch=torch.__version__, torch_threads=torch.get_num_threads(), seed=SEED, fid_subset_seed=FID_SUBSET_SEED,
    ema_decay=EMA_DECAY, from_weights=FROM_WEIGHTS, ssgan_widths=SETTINGS["ssgan_widths"],
    **{k: v for k, v in SETTINGS.items() if k != "ssgan_widths"})
print(json.dumps(RUN, indent=1))

# %% [markdown]
# ## Data: MNIST
# `torchvision.datasets.MNIST` from the first data root that holds `MNIST/raw`, else downloaded
# into `DATA_DIR`. Pixels are scaled to [-1, 1]. GAN and WGAN work at 28x28; SSGAN's networks
# (Table 4) produce 32x32, so its training digits are **zero-padded by 2 pixels** on each side
# (black, i.e. -1 after scaling), and its samples are cropped back to the centre 28x28 for FID.
# The cell prints the training-set size actually used (the official 60,000 training digits; a
# smaller set, e.g. in the tests, is flagged in every output of the run). The 10,000 test digits
# give the references: the FID floor, the classifier's accuracy, its class shares and legible share.

# %% tags=["defs"]
MNIST_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte")


def find_mnist_root(roots):
    for root in roots:
        if all((root / "MNIST" / "raw" / name).is_file() for name in MNIST_FILES):
            return root
    return None


def load_mnist(roots, data_dir, allow_download, train=True):
    """(uint8 images (N, 28, 28), int labels, info) from torchvision's MNIST."""
    from torchvision.datasets import MNIST
    root = find_mnist_root(roots)
    if root is None and not allow_download:
        raise FileNotFoundError(f"MNIST not found: expected MNIST/raw/{MNIST_FILES[0]} under one of "
                                f"{[str(r) for r in roots]}; set HW6_DATA_ROOT or allow the download.")
    try:
        dataset = MNIST(root=str(root or data_dir), train=train, download=root is None)
    except Exception as err:
        raise RuntimeError(f"MNIST could not be loaded or downloaded into {data_dir} ({err}). Offline, point "
                           "DATA_ROOT / HW6_DATA_ROOT at a folder holding MNIST/raw.") from err
    images, labels = dataset.data.numpy(), dataset.targets.numpy()
    if images.ndim != 3 or images.shape[1:] != (28, 28) or images.dtype != np.uint8:
        raise ValueError(f"MNIST in {root or data_dir}: found {images.shape} {images.dtype}, expected (N, 28, 28) uint8")
    info = dict(root=shown_path(root or data_dir, roots), downloaded=root is None, split="train" if train else "test",
                n=int(len(images)), official_size=len(images) == (60_000 if train else 10_000))
    return images, labels, info


def shown_path(path, roots):
    """A path as outputs show it: relative to the data root that holds it (no machine-specific prefix)."""
    path = Path(path)
    for root in roots:
        try:
            relative = path.resolve().relative_to(Path(root).resolve())
            return "<data root>" + ("" if relative == Path(".") else f"/{relative}")
        except ValueError:
            continue
    return path.name


def to_model_range(images_uint8):
    """uint8 [0, 255] -> float [-1, 1], with a channel axis."""
    return torch.as_tensor(images_uint8).float().div(127.5).sub(1.0).unsqueeze(1)


def pad_to_32(x):
    """28x28 -> 32x32 for SSGAN: 2 black pixels (-1) on every side."""
    return F.pad(x, (2, 2, 2, 2), value=-1.0)


def crop_to_28(x):
    """32x32 -> the centre 28x28: undoes pad_to_32 (SSGAN samples are compared at 28x28)."""
    return x[..., 2:30, 2:30]


def to_uint8(x):
    """Model output in [-1, 1] (N, 1, H, W) -> uint8 (N, H, W), as a PNG stores it."""
    return ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).squeeze(1).cpu().numpy()


def content_sha1(array):
    """A short fingerprint of an array's bytes: checkpoints and caches are keyed by the data they saw."""
    return hashlib.sha1(np.ascontiguousarray(array).tobytes()).hexdigest()[:16]


# %% tags=["setup"]
TRAIN_IMAGES, TRAIN_LABELS, DATA_INFO = load_mnist(DATA_ROOTS, DATA_DIR, ALLOW_DOWNLOAD, train=True)
DATA_INFO["n_train"] = DATA_INFO.pop("n")
DATA_INFO["sha1"] = content_sha1(TRAIN_IMAGES)
if not DATA_INFO["official_size"]:
    print("=" * 78 + f"\nNOTE: this MNIST training set has {DATA_INFO['n_train']:,} digits, not the official 60,000.\n"
          "Every result below is trained on this reduced set.\n" + "=" * 78)
TEST_IMAGES, TEST_LABELS, test_info = load_mnist(DATA_ROOTS, DATA_DIR, ALLOW_DOWNLOAD, train=False)
DATA_INFO["n_test"] = test_info["n"]
print(json.dumps(DATA_INFO, indent=1))

# %% [markdown]
# ## 2-1. A GAN on MNIST
# ### Working out the "?" of Tables 2 and 3
# **Generator.** The output is a 28x28 gray image. Each `PixelShuffle(2)` turns (4C, H, W) into
# (C, 2H, 2W), so the two shuffles multiply the side by 4: the tensor before the first shuffle is
# 7x7. Row 4's convolution takes 16 channels, so the first shuffle must produce 16 channels from
# 16·4 = 64 channels at 7x7: **Linear 2 has 64·7·7 = 3136 outputs** (reshaped to 64x7x7). Row 4
# outputs 32 channels at 14x14; the second shuffle gives 32/4 = 8 channels at 28x28, matching row 6's
# input of 8; row 6 outputs **1 channel** (gray). The table gives no output activation: we use
# **tanh**, matching the data scaled to [-1, 1].
# **Discriminator.** 28 -> 14 -> 7 after two 4x4 stride-2 convolutions with padding 1
# (`(28 + 2 - 4)/2 + 1 = 14`), so row 3's **Linear takes 64·7·7 = 3136** inputs. It outputs a logit
# (no sigmoid); the losses apply the sigmoid inside, in the numerically stable form.

# %% tags=["defs"]
class Generator(nn.Module):
    """Table 2: z (64) -> 28x28 in [-1, 1]."""

    def __init__(self, z_dim=64):
        super().__init__()
        self.z_dim = z_dim
        self.fc = nn.Sequential(
            nn.Linear(z_dim, 512), nn.BatchNorm1d(512), nn.ReLU(),
            nn.Linear(512, 64 * 7 * 7), nn.BatchNorm1d(64 * 7 * 7), nn.ReLU())
        self.conv = nn.Sequential(
            nn.PixelShuffle(2),                                                  # 64x7x7 -> 16x14x14
            nn.Conv2d(16, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(),
            nn.PixelShuffle(2),                                                  # 32x14x14 -> 8x28x28
            nn.Conv2d(8, 1, 3, padding=1), nn.Tanh())

    def forward(self, z):
        return self.conv(self.fc(z).view(-1, 64, 7, 7))


class Discriminator(nn.Module):
    """Table 3: 28x28 -> one logit (a critic score for WGAN)."""

    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(1, 32, 4, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(32, 64, 4, stride=2, padding=1), nn.ReLU(),
            nn.Flatten(), nn.Linear(64 * 7 * 7, 512), nn.ReLU(), nn.Linear(512, 1))

    def forward(self, x):
        return self.net(x).squeeze(1)


# %% [markdown]
# ### Losses, exactly as the given formulas
# `L_D = -mean log D(x) - mean log(1 - D(G(z)))`, `L_G^ns = -mean log D(G(z))` with
# `D = sigmoid(logit)`. Since `-log sigmoid(a) = softplus(-a)` and `-log(1 - sigmoid(a)) =
# softplus(a)`, they are computed from logits without overflow.

# %% tags=["defs"]
def d_loss_gan(real_logits, fake_logits):
    return F.softplus(-real_logits).mean() + F.softplus(fake_logits).mean()


def g_loss_nonsaturating(fake_logits):
    return F.softplus(-fake_logits).mean()


def d_loss_wgan(real_scores, fake_scores):
    """Critic loss: mean D(G(z)) - mean D(x) (its negative estimates the Wasserstein-1 distance)."""
    return fake_scores.mean() - real_scores.mean()


def g_loss_wgan(fake_scores):
    return -fake_scores.mean()


def clip_weights(module, c):
    """WGAN's Lipschitz constraint: every critic parameter into [-c, c]."""
    with torch.no_grad():
        for p in module.parameters():
            p.clamp_(-c, c)


def count_parameters(module):
    return sum(p.numel() for p in module.parameters())


# %% [markdown]
# ### Training loop (shared by GAN, WGAN and SSGAN)
# One *iteration* = one generator update, preceded by `d_steps` discriminator updates, each on a
# fresh real batch (an epoch uses each training digit at most once, in a seeded order; the last
# partial batch is dropped). Every model trains
# **exactly its number of iterations** (`iterations` of the profile): no stop rule ends a run early.
# Per iteration it logs D and G losses (and the model's extra terms); every `cheap_fd_every`
# iterations the cheap Fréchet distance (next section) scores the generator, and a fixed batch of
# 100 noise vectors is decoded for the stage grids.
#
# **Weight averaging (Yazici et al., 2019).** Beside the trained generator ("raw") the loop keeps
# an exponential moving average of its weights (decay `EMA_DECAY`). BatchNorm statistics are not
# averaged: before the averaged generator is scored or sampled, its BatchNorm running statistics
# are **recomputed** for its own weights from fresh noise batches. Both are scored at every check;
# the averaged one is reported only if its cheap FD is lower on average over the last checks.
#
# **The reported generator.** Of the chosen kind (raw or averaged), the final one, unless its cheap
# FD is more than 1.2x the best seen: then the best checkpoint is reported, named by its iteration
# everywhere. A run is a resumable job: a checkpoint (networks, optimisers, average, RNG, history,
# snapshots, best states) at least every `CHECKPOINT_MINUTES`, and a segment log of how long each
# stretch of training took and where. A NaN or infinite loss stops with a clear error and keeps
# the last good checkpoint.

# %% tags=["defs"]
class NonFiniteLoss(FloatingPointError):
    pass


class TrainingPaused(RuntimeError):
    pass


GENERATOR_KINDS = ("raw", "ema")
PROCESS = f"{platform.node()}-{os.getpid()}-{int(time.time())}"  # names this process in the segment log


def batches(n_items, batch_size, generator):
    """Endless stream of index batches, a fresh permutation every epoch (the last partial batch is dropped)."""
    while True:
        order = torch.randperm(n_items, generator=generator)
        for start in range(0, n_items - batch_size + 1, batch_size):
            yield order[start:start + batch_size]


def sample_images(generator_net, z):
    """Generator output in eval mode (BatchNorm running statistics); its previous mode is restored after."""
    was_training = generator_net.training
    generator_net.eval()
    with torch.no_grad():
        out = generator_net(z)
    generator_net.train(was_training)
    return out


@torch.no_grad()
def recompute_batchnorm(generator_net, n_batches=20, batch_size=256, seed=0):
    """Set every BatchNorm's running mean and variance to their average over n_batches of fresh
    noise, computed with these weights (cumulative average, momentum None). Returns the net in eval mode."""
    norms = [m for m in generator_net.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None
    device = next(generator_net.parameters()).device
    noise = torch.Generator().manual_seed(seed)
    generator_net.train()
    for _ in range(n_batches):
        generator_net(torch.randn(batch_size, generator_net.z_dim, generator=noise).to(device))
    for m, momentum in zip(norms, momenta):
        m.momentum = momentum
    return generator_net.eval()


def rotation_quarter(x):
    """SSGAN's rotation batch (compare_gan, rotated batch = batch size): the first quarter of x in
    all four orientations. Returns the 90/180/270-degree copies (the upright ones are x's own first
    quarter) and the labels 0..3 of the four orientations, upright first."""
    q = max(1, len(x) // 4)
    rotated = torch.cat([torch.rot90(x[:q], k, dims=(2, 3)) for k in (1, 2, 3)])
    labels = torch.arange(4, device=x.device).repeat_interleave(q)
    return rotated, labels


def rotation_logits_of_quarter(rot_logits, batch_size, q):
    """Rotation logits of [upright quarter, 90, 180, 270] from a pass over cat([batch, rotated, ...])."""
    return torch.cat([rot_logits[:q], rot_logits[batch_size:batch_size + 3 * q]])


class GANTrainer:
    """G, D, their optimisers, the weight average of G and the update rule of one model kind:
    'gan', 'wgan' or 'ssgan'."""

    def __init__(self, kind, generator_net, discriminator_net, config, device, ema_decay=0.0):
        self.kind, self.config, self.device, self.ema_decay = kind, config, device, ema_decay
        self.memory_format = torch.channels_last if config.get("channels_last") else torch.contiguous_format
        self.G = generator_net.to(device, memory_format=self.memory_format)
        self.D = discriminator_net.to(device, memory_format=self.memory_format)
        self.G_ema = copy.deepcopy(self.G).requires_grad_(False) if ema_decay else None
        if kind == "wgan":
            make_opt = lambda params: torch.optim.RMSprop(params, lr=config["lr"])
        else:
            make_opt = lambda params: torch.optim.Adam(params, lr=config["lr"], betas=tuple(config["betas"]))
        self.opt_g, self.opt_d = make_opt(self.G.parameters()), make_opt(self.D.parameters())

    def noise(self, n):
        return torch.randn(n, self.G.z_dim, device=self.device)

    def d_update(self, real):
        real = real.contiguous(memory_format=self.memory_format)
        with torch.no_grad():  # D's update needs no gradient through G
            fake = self.G(self.noise(len(real)))
        extras = {}
        if self.kind == "gan":
            loss = d_loss_gan(self.D(real), self.D(fake))
        elif self.kind == "wgan":
            loss = d_loss_wgan(self.D(real), self.D(fake))
            extras["wasserstein"] = -loss.item()
        else:  # one pass over [real batch, its rotated quarter, fake batch]
            rotated, labels = rotation_quarter(real)
            gan_logits, rot_logits = self.D(torch.cat([real, rotated, fake]))
            b, q = len(real), len(labels) // 4
            rot_loss = F.cross_entropy(rotation_logits_of_quarter(rot_logits, b, q), labels)
            loss = d_loss_gan(gan_logits[:b], gan_logits[b + 3 * q:]) + self.config["beta"] * rot_loss
            extras["d_rotation"] = rot_loss.item()
        self.step(self.opt_d, loss, "D")
        if self.kind == "wgan":
            clip_weights(self.D, self.config["clip"])
        return loss.item(), extras

    def g_update(self, batch_size):
        fake = self.G(self.noise(batch_size))
        extras = {}
        if self.kind == "gan":
            loss = g_loss_nonsaturating(self.D(fake))
        elif self.kind == "wgan":
            loss = g_loss_wgan(self.D(fake))
        else:  # GAN logits from the upright batch, rotation loss on its quarter in four orientations
            rotated, labels = rotation_quarter(fake)
            gan_logits, rot_logits = self.D(torch.cat([fake, rotated]))
            rot_loss = F.cross_entropy(rotation_logits_of_quarter(rot_logits, batch_size, len(labels) // 4), labels)
            loss = g_loss_nonsaturating(gan_logits[:batch_size]) + self.config["alpha"] * rot_loss
            extras["g_rotation"] = rot_loss.item()
        self.step(self.opt_g, loss, "G")
        self.update_average()
        return loss.item(), extras

    @torch.no_grad()
    def update_average(self):
        """G_ema <- decay * G_ema + (1 - decay) * G, weights only (BatchNorm statistics are recomputed when used)."""
        if self.G_ema is not None:
            for averaged, live in zip(self.G_ema.parameters(), self.G.parameters()):
                averaged.lerp_(live, 1.0 - self.ema_decay)

    def step(self, optimizer, loss, who):
        if not torch.isfinite(loss):
            raise NonFiniteLoss(f"{self.kind}: the {who} loss is {loss.item()}")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    def iteration(self, real_images, stream, d_steps):
        """d_steps critic/discriminator updates on fresh real batches, then one generator update."""
        for _ in range(d_steps):
            d_loss, d_extra = self.d_update(real_images[next(stream)].to(self.device, non_blocking=True))
        g_loss, g_extra = self.g_update(self.config["batch_size"])
        return d_loss, g_loss, {**d_extra, **g_extra}

    def generator(self, kind):
        """The live generator ('raw'), or a copy of the averaged weights with recomputed BatchNorm ('ema')."""
        if kind == "raw":
            return self.G
        return recompute_batchnorm(copy.deepcopy(self.G_ema))

    def state_dict(self):
        state = dict(G=self.G.state_dict(), D=self.D.state_dict(), opt_g=self.opt_g.state_dict(), opt_d=self.opt_d.state_dict())
        if self.G_ema is not None:
            state["G_ema"] = self.G_ema.state_dict()
        return state

    def load_state_dict(self, state):
        for key, target in (("G", self.G), ("D", self.D), ("opt_g", self.opt_g), ("opt_d", self.opt_d), ("G_ema", self.G_ema)):
            if target is not None:
                target.load_state_dict(state[key])


def kinds_of(trainer):
    return GENERATOR_KINDS if trainer.G_ema is not None else GENERATOR_KINDS[:1]


def snapshot(generator_net, fixed_noise, crop=False):
    """The fixed noise batch decoded, as 8-bit 28x28 images (what a grid and a PNG show)."""
    images = sample_images(generator_net, fixed_noise)
    return to_uint8(crop_to_28(images) if crop else images)


def rng_state():
    return dict(cpu=torch.get_rng_state(), cuda=torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None)


def set_rng_state(state):
    """Restore the generators; their states must be CPU byte tensors (a checkpoint loaded onto a GPU moves them)."""
    torch.set_rng_state(state["cpu"].cpu())
    if state["cuda"] is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])


def save_atomically(obj, path):
    """torch.save to a temporary file, then rename: a run killed mid-write keeps its previous checkpoint whole."""
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def load_checkpoint(path, config, device):
    """The saved state if it was made with `config`; a checkpoint of other settings is moved aside, not reused."""
    if not path.is_file():
        return None
    state = torch.load(path, map_location=device, weights_only=False)
    if state["config"] == config:
        return state
    aside = path.with_suffix(".other-settings.pt")
    path.rename(aside)
    print(f"{path.name} was made with other settings; kept as {aside.name}, training from scratch")
    return None


def new_history(kinds):
    return dict(d_loss=[], g_loss=[], tracked={k: [] for k in kinds}, snapshots={k: {} for k in kinds},
                best={k: None for k in kinds})


def check(history, trainer, step, tracker, fixed_noise, crop):
    """Score every generator kind with the cheap FD, keep its snapshot, and its state when it is the best so far."""
    for kind in kinds_of(trainer):
        net = trainer.generator(kind)
        value = tracker(net)
        history["tracked"][kind].append((step, value))
        history["snapshots"][kind][step] = snapshot(net, fixed_noise, crop)
        best = history["best"][kind]
        if best is None or value < best["cheap_fd"]:
            history["best"][kind] = dict(iteration=step, cheap_fd=value, G=copy.deepcopy(net.state_dict()))


def train_gan(name, trainer, real_images, iterations, d_steps, fixed_noise, tracker, check_every, checkpoint_dir,
              seed=0, resume=True, crop=False, print_every=0, segment_minutes=0.0, checkpoint_minutes=3.0, data_sha1=""):
    """Train exactly `iterations` generator iterations (resuming checkpoints/q2_<name>.pt); returns (history, info).
    real_images: float tensor (N, 1, H, W) in [-1, 1], on the CPU. Raises TrainingPaused when
    `segment_minutes` ends a segment before the last iteration (the checkpoint is saved)."""
    path = Path(checkpoint_dir) / f"q2_{name}.pt"
    path.parent.mkdir(parents=True, exist_ok=True)
    config = dict(trainer.config, kind=trainer.kind, d_steps=d_steps, seed=seed, ema_decay=trainer.ema_decay,
                  check_every=check_every, n_train=len(real_images), data_sha1=data_sha1, shape=list(real_images.shape[1:]))
    history, step, segments = new_history(kinds_of(trainer)), 0, []
    state = load_checkpoint(path, config, trainer.device) if resume else None
    if state:
        trainer.load_state_dict(state["trainer"])
        set_rng_state(state["rng"])
        history, step, segments = state["history"], state["step"], state["segments"]
        print(f"{name}: resumed from checkpoint q2_{name}.pt at iteration {step} of {iterations}")
    else:
        torch.manual_seed(seed)

    def save():
        save_atomically(dict(config=config, trainer=trainer.state_dict(), rng=rng_state(), history=history, step=step,
                             segments=segments), path)

    stream = batches(len(real_images), trainer.config["batch_size"], torch.Generator().manual_seed(seed))
    for _ in range(step * d_steps):  # replay the seeded batch order to where a resumed run stopped
        next(stream)
    start = last_save = time.time()
    if step < iterations:
        segments.append(dict(start=step, end=step, seconds=0.0, device=device_label(trainer.device), process=PROCESS))
    while step < iterations:
        try:
            d_loss, g_loss, extras = trainer.iteration(real_images, stream, d_steps)
        except NonFiniteLoss as err:
            kept = torch.load(path, weights_only=False)["step"] if path.is_file() else 0
            raise NonFiniteLoss(f"{name}, iteration {step + 1}: {err}. Training stopped; the last good checkpoint "
                                f"(iteration {kept}) is kept. Lower the learning rate and rerun.") from None
        step += 1
        history["d_loss"].append(d_loss)
        history["g_loss"].append(g_loss)
        for key, value in extras.items():
            history.setdefault(key, []).append(value)
        if step % check_every == 0 or step == iterations:  # the last iteration is always checked
            check(history, trainer, step, tracker, fixed_noise, crop)
        segments[-1].update(end=step, seconds=time.time() - start)
        paused = segment_minutes and segments[-1]["seconds"] >= segment_minutes * 60 and step < iterations
        if print_every and (step % print_every == 0 or step == iterations or paused):
            rate = segments[-1]["seconds"] / (step - segments[-1]["start"])
            fd = "  ".join(f"cheap FD {k} {history['tracked'][k][-1][1]:7.2f}" for k in history["tracked"] if history["tracked"][k])
            print(f"{name} it {step:6d}/{iterations}  D {d_loss:8.4f}  G {g_loss:8.4f}  {fd}  {rate:.3f} s/it  "
                  f"ETA {(iterations - step) * rate / 60:.1f} min")
        if step == iterations or paused or time.time() - last_save > checkpoint_minutes * 60:
            save()
            last_save = time.time()
        if paused:
            raise TrainingPaused(f"{name}: segment time limit ({segment_minutes} min) reached at iteration {step} of "
                                 f"{iterations}; the checkpoint is saved: run the notebook again to continue.")
    seconds = sum(s["seconds"] for s in segments)
    info = dict(iterations=step, d_steps=d_steps, batch_size=trainer.config["batch_size"],
                epochs=step * d_steps * trainer.config["batch_size"] / len(real_images), train_seconds=seconds,
                train_hours=seconds / 3600, segments=len(segments), sessions=sessions(segments), segment_log=segments,
                seconds_per_iteration=seconds / max(step, 1), params_g=count_parameters(trainer.G),
                params_d=count_parameters(trainer.D))
    print(f"{name}: {step} iterations in {len(segments)} segment(s) over {info['sessions']} session(s), "
          f"{seconds / 3600:.2f} h of training")
    return history, info


def sessions(segments):
    """How many processes (sessions) trained these segments: a search's rungs and the run that continues them
    in one process count once. Segments recorded before processes were (one process) count as one."""
    return len({s.get("process", "unrecorded") for s in segments})


def mean_of_last(tracked, n):
    return float(np.mean([v for _, v in tracked[-n:]]))


def choose_report(history, last_checks=3, tolerance=1.2):
    """Which generator every number comes from: the averaged one only if its cheap FD is lower on average
    over the last checks; of that kind, the final generator unless its cheap FD exceeds `tolerance` x
    the best seen, then the best one. Returns dict(kind, iteration, cheap_fd, restored_best, ...)."""
    tracked = history["tracked"]
    kind = "ema" if tracked.get("ema") and mean_of_last(tracked["ema"], last_checks) < mean_of_last(tracked["raw"], last_checks) else "raw"
    final_it, final_fd = tracked[kind][-1]
    best = history["best"][kind]
    restored = final_fd > tolerance * best["cheap_fd"]
    return dict(kind=kind, iteration=int(best["iteration"] if restored else final_it),
                cheap_fd=float(best["cheap_fd"] if restored else final_fd), final_cheap_fd=float(final_fd),
                best_cheap_fd=float(best["cheap_fd"]), best_iteration=int(best["iteration"]), restored_best=bool(restored),
                last_checks={k: mean_of_last(v, last_checks) for k, v in tracked.items() if v})


def reported_generator(trainer, history, report):
    """A copy of the generator named by `report`, in eval mode."""
    net = trainer.generator(report["kind"])
    net = copy.deepcopy(net) if net is trainer.G else net
    if report["restored_best"]:
        net.load_state_dict(history["best"][report["kind"]]["G"])
    return net.eval()


def select_stages(snapshots, reported_iteration):
    """The snapshots nearest 5%, 50% and 100% of the reported iteration (none after it): {stage: (iteration, images)}."""
    its = sorted(i for i in snapshots if i <= reported_iteration)
    pick = lambda share: min(its, key=lambda i: (abs(i - share * reported_iteration), i))
    return {stage: (pick(share), snapshots[pick(share)]) for stage, share in (("early", 0.05), ("middle", 0.5), ("final", 1.0))}


def history_for_weights(history, report):
    """What evaluation needs of a run, without the optimiser and best-state tensors: losses, checks, the reported kind's snapshots."""
    light = {k: np.asarray(v, dtype=np.float32) for k, v in history.items() if isinstance(v, list)}
    light.update(tracked=history["tracked"], snapshots={report["kind"]: history["snapshots"][report["kind"]]})
    return light


def export_generator(path, net, history, info, report, config):
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(dict(G=net.state_dict(), config=config, info=info, report=report,
                    history=history_for_weights(history, report)), path)


def load_generator(path, net, config, device):
    """(net with the final weights, history, info, report) from export_generator; a clear error when
    the file is missing or was made with other settings."""
    if not path.is_file():
        raise FileNotFoundError(f"FROM_WEIGHTS: {path.name} is not in weights/; set FROM_WEIGHTS = False to train.")
    state = torch.load(path, map_location=device, weights_only=False)
    if state["config"] != config:
        raise ValueError(f"{path.name} was trained with {state['config']}, not {config}: set FROM_WEIGHTS = False "
                         "to train with these settings.")
    net.load_state_dict(state["G"])
    info = state["info"]
    print(f"{path.stem}: final generator loaded ({info['iterations']} iterations, {info['segments']} segment(s), "
          f"{info['train_hours']:.2f} h of training; reported: {state['report']['kind']} at iteration {state['report']['iteration']})")
    return net.to(device).eval(), state["history"], info, state["report"]

# %% [markdown]
# ### A cheap, well-defined metric for the search and for quality over training
# FID proper (below) needs thousands of Inception passes. For the hyperparameter search and the
# quality-over-training curves we use the **Fréchet distance in the 128-d feature space of a small
# MNIST classifier trained here** (its penultimate layer), between `cheap_fd_n` generated digits
# (the same noise at every check) and as many real training digits. It costs about a second;
# the final numbers use pytorch-fid. The same classifier **labels generated digits**: the share
# of each class (mode coverage) and the **legible share**, the share of digits it labels with
# probability at least 0.9. Both are computed for 5,000 real test digits through the same
# functions, as the reference a model is read against. The classifier is trained once (seeded)
# and kept in `weights/`, so every segment of a resumed run scores with the same network.

# %% tags=["defs"]
class DigitClassifier(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(), nn.Linear(64 * 7 * 7, 128), nn.ReLU())
        self.head = nn.Linear(128, 10)

    def forward(self, x):
        return self.head(self.features(x))


def train_classifier(images, labels, steps, device, seed=0, batch_size=128):
    torch.manual_seed(seed)
    model = DigitClassifier().to(device)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    x_all, y_all = to_model_range(images), torch.as_tensor(labels).long()
    stream = batches(len(x_all), batch_size, torch.Generator().manual_seed(seed))
    for _ in range(steps):
        idx = next(stream)
        loss = F.cross_entropy(model(x_all[idx].to(device)), y_all[idx].to(device))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return model.eval()


def trained_classifier(path, images, labels, steps, device, seed=0):
    """The classifier saved at `path` if it was trained on these digits with these settings, else a new one (saved)."""
    config = dict(steps=steps, seed=seed, data_sha1=content_sha1(images))
    if path.is_file():
        state = torch.load(path, map_location=device, weights_only=False)
        if state["config"] == config:
            model = DigitClassifier().to(device)
            model.load_state_dict(state["model"])
            return model.eval(), dict(config, loaded=path.name)
    model = train_classifier(images, labels, steps, device, seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(dict(model=model.state_dict(), config=config), path)
    return model, dict(config, loaded=None)


@torch.no_grad()
def classifier_probabilities(model, images_uint8, device):
    """Softmax over the 10 classes for 8-bit digits (N, 28, 28), fed in the range the classifier was trained on."""
    x = to_model_range(images_uint8)
    return torch.cat([F.softmax(model(x[i:i + 1000].to(device)), dim=1).cpu() for i in range(0, len(x), 1000)]).numpy()


def classifier_accuracy(model, images, labels, device):
    return float((classifier_probabilities(model, images, device).argmax(1) == labels).mean())


def class_shares(probabilities):
    """Share of each digit class 0-9 among the classifier's labels (sums to 1)."""
    labels = probabilities.argmax(1)
    return (np.bincount(labels, minlength=10) / len(labels)).tolist()


def legible_share(probabilities, confidence=LEGIBLE_CONFIDENCE):
    """Share of digits whose label the classifier gives with probability >= confidence."""
    return float((probabilities.max(1) >= confidence).mean())


@torch.no_grad()
def classifier_features(model, x):
    """The classifier's penultimate (128-d) features of images in [-1, 1]."""
    return torch.cat([model.features(x[i:i + 1000]) for i in range(0, len(x), 1000)]).double().cpu().numpy()


SINGULAR_PRODUCTS = []  # one entry per Fréchet distance whose covariance product was singular


def frechet_distance(stats_a, stats_b):
    """pytorch-fid's Fréchet distance. scipy warns when the covariance product is (nearly) singular,
    e.g. feature dimensions that never vary; that warning (which prints file paths) becomes one note."""
    from scipy.linalg import LinAlgWarning
    from pytorch_fid.fid_score import calculate_frechet_distance
    with warnings.catch_warnings():
        warnings.simplefilter("error", LinAlgWarning)
        warnings.simplefilter("ignore", RuntimeWarning)  # sqrtm's own error estimate on a singular product
        try:
            return float(calculate_frechet_distance(stats_a[0], stats_a[1], stats_b[0], stats_b[1]))
        except LinAlgWarning:
            warnings.simplefilter("ignore", LinAlgWarning)
            SINGULAR_PRODUCTS.append(1)
            if len(SINGULAR_PRODUCTS) == 1:
                print("note: a covariance product is nearly singular (some feature dimensions barely vary); "
                      "scipy's square root is used as pytorch-fid does. Later cases are counted, not printed.")
            return float(calculate_frechet_distance(stats_a[0], stats_a[1], stats_b[0], stats_b[1]))


def covariance_root(covariance):
    """The symmetric square root of a covariance matrix (eigenvalues below 0 from rounding set to 0)."""
    values, vectors = np.linalg.eigh(covariance)
    return (vectors * np.sqrt(np.clip(values, 0.0, None))) @ vectors.T


def frechet_distance_from_root(real_stats, real_root, mean, covariance):
    """The Fréchet distance with tr sqrt(Σr Σg) computed as the sum of the square roots of the eigenvalues
    of Σr^½ Σg Σr^½ (similar matrices): pytorch-fid's value (tested) with the real side's root computed once."""
    products = np.clip(np.linalg.eigvalsh(real_root @ covariance @ real_root), 0.0, None)
    return float(((real_stats[0] - mean) ** 2).sum() + np.trace(real_stats[1]) + np.trace(covariance)
                 - 2.0 * np.sqrt(products).sum())


def fid_standard_error(real_stats, real_root, features, rounds, seed):
    """Bootstrap standard error of FID from the generated side: the spread of FID against the fixed real
    statistics over `rounds` resamples (with replacement) of the generated features; None when rounds < 2."""
    if rounds < 2:
        return None
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(rounds):
        sample = features[rng.integers(0, len(features), len(features))]
        values.append(frechet_distance_from_root(real_stats, real_root, sample.mean(axis=0), np.cov(sample, rowvar=False)))
    return float(np.std(values, ddof=1))


def gaussian_stats(features):
    return features.mean(axis=0), np.cov(features, rowvar=False)


def make_cheap_fd(classifier, real_28, n, device, seed=0, crop=False):
    """A function G -> Fréchet distance in classifier space (n generated vs n real digits).
    The n noise vectors are drawn once (seeded): every check scores the same z, so the curve
    shows the model changing, not the noise."""
    idx = torch.randperm(len(real_28), generator=torch.Generator().manual_seed(seed))[:n]
    real_stats = gaussian_stats(classifier_features(classifier, real_28[idx].to(device)))
    noise = {}

    def cheap_fd(generator_net):
        if generator_net.z_dim not in noise:
            noise[generator_net.z_dim] = torch.randn(n, generator_net.z_dim, generator=torch.Generator().manual_seed(seed + 1))
        fake = sample_images(generator_net, noise[generator_net.z_dim].to(device))
        fake = crop_to_28(fake) if crop else fake
        # quantise as a PNG would, so the cheap metric sees what FID sees
        fake = to_model_range(to_uint8(fake)).to(device)
        return frechet_distance(real_stats, gaussian_stats(classifier_features(classifier, fake)))

    return cheap_fd


# %% tags=["setup"]
t0 = time.time()
CLASSIFIER, CLASSIFIER_INFO = trained_classifier(WEIGHTS / "q2_classifier.pt", TRAIN_IMAGES, TRAIN_LABELS,
                                                 SETTINGS["classifier_steps"], DEVICE, SEED)
CLASSIFIER_INFO.update(seconds=time.time() - t0, test_accuracy=classifier_accuracy(CLASSIFIER, TEST_IMAGES, TEST_LABELS, DEVICE))
print("metric classifier:", CLASSIFIER_INFO)
REAL_28 = to_model_range(TRAIN_IMAGES)
CHEAP_FD_28 = make_cheap_fd(CLASSIFIER, REAL_28, SETTINGS["cheap_fd_n"], DEVICE, SEED)
CHEAP_FD_32 = make_cheap_fd(CLASSIFIER, REAL_28, SETTINGS["cheap_fd_n"], DEVICE, SEED, crop=True)  # SSGAN: centre crop

# %% [markdown]
# ### FID (pytorch-fid)
# One **fixed** subset of real training digits (seed `FID_SUBSET_SEED`) is written to `DATA_DIR`
# as PNGs and shared by all three models; its statistics are cached. Each model contributes
# `fid_gen` generated digits, turned into 8-bit images (`round(127.5 (x + 1))`) and written as PNGs
# too. **Every model is evaluated at 28x28**: SSGAN's 32x32 samples are cropped to the centre
# 28x28, the inverse of the padding its training data received. pytorch-fid's Inception resizes
# each image to 299x299 and repeats the gray channel. Features run in `channels_last` memory
# format (faster on CPU, same numbers; tested against pytorch-fid's own path).

# Precision and recall (Kynkäänniemi et al., 2019, k = 3) are computed on the same Inception
# features (no extra pass): precision is the share of generated digits inside the real digits'
# k-NN balls (fidelity), recall the share of real digits inside the generated ones' (diversity).
#
# **References.** The *floor* is the same FID between the real subset and 5,000 **test** digits
# (a disjoint real set): no model is expected below it at this sample size. The real-vs-real
# precision and recall of the same two subsets, and the test digits' class shares and legible
# share, are the values a perfect generator would score. Inception features of both real subsets
# are cached on disk, keyed by their content, so a rerun does not recompute them.

# %% tags=["defs"]
def load_fid_inception(device, dims=2048):
    """pytorch-fid's InceptionV3 (pool3, 2048-d by default); a clear error when its weights cannot be had."""
    from pytorch_fid.inception import InceptionV3
    try:
        model = InceptionV3([InceptionV3.BLOCK_INDEX_BY_DIM[dims]])
    except Exception as err:
        hub = Path(torch.hub.get_dir()) / "checkpoints"
        raise RuntimeError(
            f"pytorch-fid could not load its Inception weights ({err}). Offline, copy "
            f"pt_inception-2015-12-05-6726825d.pth into {hub} (or set TORCH_HOME).") from err
    return model.to(device).eval().to(memory_format=torch.channels_last)


@torch.inference_mode()
def inception_features(images, model, device, batch_size=100):
    """Inception features of gray uint8 images (N, H, W): the same input pytorch-fid builds from PNGs."""
    feats = []
    for start in range(0, len(images), batch_size):
        batch = torch.from_numpy(np.ascontiguousarray(images[start:start + batch_size])).to(device)
        x = (batch.float() / 255.0).unsqueeze(1).expand(-1, 3, -1, -1)
        x = x.contiguous(memory_format=torch.channels_last)
        out = model(x)[0]
        if out.shape[2:] != (1, 1):  # the 64/192/768-d blocks: pooled as pytorch-fid pools them
            out = F.adaptive_avg_pool2d(out, output_size=(1, 1))
        feats.append(out.flatten(1).double().cpu().numpy())
    return np.concatenate(feats)


def feature_statistics(features, min_images):
    if len(features) < min_images:
        raise ValueError(f"FID needs at least {min_images} images per set (got {len(features)}): with fewer "
                         "than the 2048 feature dimensions the covariance is singular. Raise the sample count.")
    return gaussian_stats(features)


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


def fixed_real_subset(images, n, seed, folder):
    """Pick n real images once (seeded), save them as PNGs with their indices (for `python -m
    pytorch_fid`), and reuse them. A folder left by another selection is rewritten."""
    folder = Path(folder)
    if n > len(images):
        raise ValueError(f"asked for {n} real images but the set has {len(images)}; lower FID_NUM_REAL")
    indices = np.random.default_rng(seed).choice(len(images), size=n, replace=False)
    index_file = folder / "indices.npy"
    if not (index_file.is_file() and np.array_equal(np.load(index_file), indices)
            and len(list(folder.glob("*.png"))) == n):
        write_pngs(images[indices], folder)
        np.save(index_file, indices)
    return folder, indices


def check_fid_counts(counts, min_images):
    """FID sample counts below min_images (2048 outside the smoke profile) are refused."""
    for count in counts:
        if count < min_images:
            raise ValueError(f"FID sample counts must be >= {min_images} outside the smoke profile; got {count}")


def cached_features(images, model, device, batch_size, cache_dir, dims):
    """Inception features of uint8 images, cached in cache_dir under a name made of their content's
    fingerprint and the feature size: a rerun on the same digits reads them back."""
    cache = Path(cache_dir) / f"features_{content_sha1(images)}_{dims}.npy"
    if cache.is_file():
        return np.load(cache)
    features = inception_features(images, model, device, batch_size)
    cache.parent.mkdir(parents=True, exist_ok=True)
    np.save(cache, features)
    return features


def pairwise_distances(a, b, chunk=1000):
    """Euclidean distances between the rows of a and b, (len(a), len(b))."""
    b = torch.from_numpy(b)
    return np.concatenate([torch.cdist(torch.from_numpy(a[i:i + chunk]), b).numpy() for i in range(0, len(a), chunk)])


def knn_radii(features, k):
    """Distance from each row to its k-th nearest other row."""
    distances = pairwise_distances(features, features)
    return np.partition(distances, k, axis=1)[:, k]  # column 0 holds the row itself (distance 0)


def precision_recall(real, generated, k=3):
    """Improved precision and recall (Kynkäänniemi et al., 2019) of feature sets (n, d), with their standard errors."""
    if min(len(real), len(generated)) <= k:
        raise ValueError(f"precision/recall with k = {k} needs more than {k} images per set "
                         f"(got {len(real)} real, {len(generated)} generated)")
    real_radii, generated_radii = knn_radii(real, k), knn_radii(generated, k)
    distances = pairwise_distances(generated, real)  # (generated, real)
    precision = (distances <= real_radii[None, :]).any(axis=1).mean()
    recall = (distances <= generated_radii[:, None]).any(axis=0).mean()
    return dict(precision=float(precision), recall=float(recall), precision_se=proportion_se(precision, len(generated)),
                recall_se=proportion_se(recall, len(real)))


def proportion_se(share, n):
    """Standard error of a share measured over n images, sqrt(p(1 - p) / n): the precision and recall
    uncertainty from the images drawn, with the k-NN neighbourhoods held fixed."""
    return math.sqrt(share * (1.0 - share) / n)


def with_se(value, se, digits=2):
    """'12.34 ± 0.56', or just '12.34' when no standard error was measured (FID_BOOTSTRAP < 2)."""
    return f"{value:.{digits}f}" + ("" if se is None else f" ± {se:.{digits}f}")


def se_cell(se, width=5):
    """A table cell for a standard error: '-' when none was measured."""
    return f"{'-' if se is None else f'{se:.2f}':>{width}s}"


def separations(scores, order, value="fid", error="fid_se"):
    """Each adjacent pair of `order`: the FID difference and that difference in standard errors of a
    difference, sqrt(se_a² + se_b²) (None without standard errors)."""
    out = []
    for better, worse in zip(order, order[1:]):
        difference = scores[worse][value] - scores[better][value]
        errors = scores[better].get(error), scores[worse].get(error)
        out.append(dict(better=better, worse=worse, difference=difference,
                        in_se=difference / math.hypot(*errors) if all(errors) else None))
    return out


def digit_scores(images, features):
    """Every score of a set of 8-bit digits against the fixed real subset: FID, precision/recall, class shares, legible share."""
    probabilities = classifier_probabilities(CLASSIFIER, images, DEVICE)
    return dict(fid=frechet_distance(REAL_STATS, feature_statistics(features, MIN_IMAGES)),
                **precision_recall(REAL_FEATURES, features, k=3), class_share=class_shares(probabilities),
                legible_share=legible_share(probabilities), n=len(images), image_size=list(images.shape[1:]),
                fid_se=fid_standard_error(REAL_STATS, REAL_ROOT, features, FID_BOOTSTRAP, SEED))


def generated_digits(generator_net, n, seed, crop=False):
    """n generated digits as 8-bit 28x28 images, sampled in eval mode (SSGAN: centre crop of its 32x32 output)."""
    device = next(generator_net.parameters()).device
    # seed + 2: noise apart from the cheap FD's (seed + 1), which chose the reported generator
    z = torch.randn(n, generator_net.z_dim, generator=torch.Generator().manual_seed(seed + 2)).to(device)
    fake = torch.cat([sample_images(generator_net, z[i:i + 500]) for i in range(0, n, 500)])
    return to_uint8(crop_to_28(fake) if crop else fake)


def generated_scores(name, generator_net, n, seed, crop=False):
    """The scores of n generated digits (written as PNGs under samples/ for pytorch-fid's command line); their
    Inception features are cached by content, so a rerun with the same generators (FROM_WEIGHTS) is fast."""
    t0 = time.time()
    images = generated_digits(generator_net, n, seed, crop)
    write_pngs(images, SAMPLES / f"q2_{name}")
    features = cached_features(images, INCEPTION, DEVICE, FID_BATCH_SIZE, FEATURE_CACHE, SETTINGS["fid_dims"])
    scores = digit_scores(images, features)
    shares = np.array(scores["class_share"])
    print(f"{name}: FID {with_se(scores['fid'], scores['fid_se'])} (floor {FID_FLOOR:.2f}), precision "
          f"{with_se(scores['precision'], scores['precision_se'], 3)}, recall {with_se(scores['recall'], scores['recall_se'], 3)}, legible {scores['legible_share']:.3f}; class shares min {shares.min():.3f} max "
          f"{shares.max():.3f}  ({n} generated vs {len(REAL_INDICES)} real, {time.time() - t0:.0f} s)")
    return scores


# %% tags=["setup"]
MIN_IMAGES = 2 if RUN["profile"] == "smoke" else MIN_FID_IMAGES
check_fid_counts((SETTINGS["fid_real"], SETTINGS["fid_gen"]), MIN_IMAGES)
subset_name = f"q2_mnist_train{DATA_INFO['n_train']}_real_n{SETTINGS['fid_real']}_seed{FID_SUBSET_SEED}"
floor_name = f"q2_mnist_test{DATA_INFO['n_test']}_real_n{SETTINGS['fid_real']}_seed{FID_SUBSET_SEED}"
REAL_FOLDER, REAL_INDICES = fixed_real_subset(TRAIN_IMAGES, SETTINGS["fid_real"], FID_SUBSET_SEED, DATA_DIR / "fid" / subset_name)
FLOOR_FOLDER, FLOOR_INDICES = fixed_real_subset(TEST_IMAGES, SETTINGS["fid_real"], FID_SUBSET_SEED, DATA_DIR / "fid" / floor_name)

# %%
t0 = time.time()
INCEPTION = load_fid_inception(DEVICE, SETTINGS["fid_dims"])
FEATURE_CACHE = DATA_DIR / "fid" / "generated_q2"  # generated digits' features, named by their content
REAL_FEATURES = cached_features(TRAIN_IMAGES[REAL_INDICES], INCEPTION, DEVICE, FID_BATCH_SIZE, DATA_DIR / "fid", SETTINGS["fid_dims"])
REAL_STATS = feature_statistics(REAL_FEATURES, MIN_IMAGES)
REAL_ROOT = covariance_root(REAL_STATS[1])  # computed once: every bootstrap resample reuses it
floor_features = cached_features(TEST_IMAGES[FLOOR_INDICES], INCEPTION, DEVICE, FID_BATCH_SIZE, DATA_DIR / "fid", SETTINGS["fid_dims"])
REFERENCE = digit_scores(TEST_IMAGES[FLOOR_INDICES], floor_features)
REFERENCE["source"] = f"{len(FLOOR_INDICES)} MNIST test digits vs the {len(REAL_INDICES)} training digits of the FID subset"
FID_FLOOR = REFERENCE["fid"]
print(f"real subset: {len(REAL_INDICES)} training digits in data/fid/{subset_name}; floor subset: {len(FLOOR_INDICES)} "
      f"test digits in data/fid/{floor_name} (features ready in {time.time() - t0:.0f} s)")
print(f"reference (real vs real): FID floor {with_se(FID_FLOOR, REFERENCE['fid_se'])}, precision "
      f"{with_se(REFERENCE['precision'], REFERENCE['precision_se'], 3)}, recall {with_se(REFERENCE['recall'], REFERENCE['recall_se'], 3)}, legible share {REFERENCE['legible_share']:.3f}")

# %% [markdown]
# ### Question 2: hyperparameter search for the GAN
# Five settings around the DCGAN default (Adam lr 2e-4, betas (0.5, 0.999), one D step per G
# step, batch 64): a lower and a higher learning rate, the betas (0.0, 0.9) of recent GANs, and two
# D steps per G step. Every setting starts from **the same initial networks and the same batch
# order** (one seed), and is scored by the cheap Fréchet distance above (lower is better).
#
# The search must predict the long run, and a short search favours settings that win early and
# collapse later. So it runs as **successive halving with long rungs**: every setting
# to `search_rungs[0]` iterations (no setting is dropped before 2,000), the better half on to
# `search_rungs[1]`. The score at the end of a rung is the final cheap FD **and its trend**:
# `score = final FD + (final FD - best FD)`, so a setting falling away from its best ranks below
# its last value. Rows are ranked by the furthest rung reached, then by score; the first row is the
# search's winner, and **its run continues from its search state** (its checkpoint at the last
# rung) into the last rung below instead of starting again: the search's iterations are part of
# its budget.

# %% tags=["defs"]
SEARCH_SETTINGS = [
    dict(lr=2e-4, betas=(0.5, 0.999), d_steps=1, batch_size=64),  # the DCGAN default
    dict(lr=1e-4, betas=(0.5, 0.999), d_steps=1, batch_size=64),
    dict(lr=5e-4, betas=(0.5, 0.999), d_steps=1, batch_size=64),
    dict(lr=2e-4, betas=(0.0, 0.9), d_steps=1, batch_size=64),
    dict(lr=2e-4, betas=(0.5, 0.999), d_steps=2, batch_size=64),
]


def seeded_trainer(kind, make_nets, setting, seed, device, ema_decay):
    """A trainer whose networks are initialised from `seed`: every setting of a search starts from the same networks."""
    torch.manual_seed(seed)
    generator_net, discriminator_net = make_nets()
    return GANTrainer(kind, generator_net, discriminator_net, setting, device, ema_decay)


def search_score(tracked):
    """Final cheap FD plus how far it has fallen from the best: lower is better."""
    values = [v for _, v in tracked]
    return values[-1] + (values[-1] - min(values))


def successive_halving(n_candidates, rungs, advance):
    """Advance every candidate to rungs[0], keep the better half, and so on.
    advance(index, rung) -> score. Returns rows dict(index, rung, score), ranked best first."""
    rows = {i: dict(index=i, rung=-1, score=float("inf")) for i in range(n_candidates)}
    alive = list(range(n_candidates))
    for rung_index, rung in enumerate(rungs):
        for i in alive:
            rows[i].update(rung=rung_index, score=advance(i, rung))
        alive.sort(key=lambda i: rows[i]["score"])
        alive = alive[:max(1, len(alive) // 2)]
    return sorted(rows.values(), key=lambda r: (-r["rung"], r["score"]))


def search_row(setting, tracked, info, score):
    return dict(setting, iterations=info["iterations"], final_cheap_fd=tracked[-1][1], best_cheap_fd=min(v for _, v in tracked),
                score=score, seconds=info["train_seconds"], tracked=[[int(i), float(v)] for i, v in tracked])


def run_search(kind, settings, rungs, make_trainer, train, file_prefix):
    """Successive halving over `settings`; each candidate is a resumable training job
    (checkpoints/q2_<file_prefix><i>.pt) started from the same seed. Returns the ranked rows; the
    first row's checkpoint is where the chosen model continues."""
    rows = {}

    def advance(i, rung):
        history, info = train(f"{file_prefix}{i}", make_trainer(settings[i]), rung, settings[i])
        # a resumed search may find a run already past this rung: score it at the rung, as the first time
        tracked = [(it, v) for it, v in history["tracked"]["raw"] if it <= rung]
        score = search_score(tracked)
        rows[i] = search_row(settings[i], tracked, dict(info, iterations=min(info["iterations"], rung)), score)
        print(f"  {kind} {settings[i]} -> iteration {rung}: cheap FD {rows[i]['final_cheap_fd']:.2f} "
              f"(best {rows[i]['best_cheap_fd']:.2f}), score {score:.2f}")
        return score

    ranking = successive_halving(len(settings), rungs, advance)
    return [dict(rows[r["index"]], candidate=r["index"], rung=r["rung"]) for r in ranking]


def search_config(kind, settings, rungs, data_sha1, seed, check_every, ema_decay):
    """What a saved search must match to be reused: its settings, rungs, data, seed and checks."""
    return dict(kind=kind, settings=[{k: list(v) if isinstance(v, tuple) else v for k, v in s.items()} for s in settings],
                rungs=list(rungs), data_sha1=data_sha1, seed=seed, check_every=check_every, ema_decay=ema_decay)


def finished_search(path, config):
    """The saved ranking of a finished search run with `config`, else None."""
    if path.is_file():
        saved = json.loads(path.read_text())
        if saved["config"] == config:
            return saved["rows"]
    return None


def adopt_winner(file_prefix, rows, name):
    """Continue the winner's run under `name` (its checkpoint becomes q2_<name>.pt); the other
    candidates' checkpoints are deleted (their rows keep what the report needs)."""
    target = CHECKPOINTS / f"q2_{name}.pt"
    for row in rows:
        path = CHECKPOINTS / f"q2_{file_prefix}{row['candidate']}.pt"
        if row is rows[0] and path.is_file():  # the search has just ended: its winner's state is the newest
            os.replace(path, target)
        path.unlink(missing_ok=True)


def search_once(kind, settings, rungs, make_trainer, train, file_prefix, saved, name, from_weights=False, **config):
    """The ranked rows of a search: read from `saved` (a JSON file) when a search with these settings
    finished earlier, else run and saved. The winner's run then continues as `name`. With
    from_weights a missing file is an error (evaluation never trains)."""
    config = search_config(kind, settings, rungs, **config)
    rows = finished_search(saved, config)
    if rows is None and from_weights:
        raise FileNotFoundError(f"FROM_WEIGHTS: weights/{saved.name} is missing; set FROM_WEIGHTS = False to train.")
    if rows is None:
        rows = run_search(kind, settings, rungs, make_trainer, train, file_prefix)
        saved.write_text(json.dumps(dict(config=config, rows=rows), indent=1))
    else:
        print(f"{kind}: the search finished earlier; its ranking is read from weights/{saved.name}")
    if not from_weights:
        adopt_winner(file_prefix, rows, name)
    return rows


def print_search(rows, columns=("lr", "betas", "d_steps")):
    print(f"{'rank':>4s} " + " ".join(f"{c:>12s}" for c in columns)
          + f" {'iters':>6s} {'final FD':>9s} {'best FD':>8s} {'score':>8s} {'min':>6s}")
    for rank, row in enumerate(rows, 1):
        print(f"{rank:4d} " + " ".join(f"{str(tuple(row[c]) if isinstance(row[c], list) else row[c]):>12s}" for c in columns)
              + f" {row['iterations']:6d} {row['final_cheap_fd']:9.2f} {row['best_cheap_fd']:8.2f} {row['score']:8.2f} "
              f"{row['seconds'] / 60:6.1f}")


def style_fd_axes(ax, title, legend_size=8, ncol=1):
    ax.set_yscale("log")
    ax.set_xlabel("generator iteration", fontsize=10)
    ax.set_ylabel("classifier-space FD (log scale)", fontsize=10)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=legend_size, ncol=ncol)
    ax.set_title(title, fontsize=9)


def plot_search(rows, title, label):
    fig, ax = plt.subplots(figsize=(8, 4.2))
    for rank, row in enumerate(rows, 1):
        its, values = zip(*row["tracked"])
        ax.plot(its, values, lw=2.2 if rank == 1 else 1.2, label=f"{rank}. {label(row)}")
    style_fd_axes(ax, title, legend_size=7)
    return fig


def plot_tracked(runs, title, ncol=1):
    """Cheap FD over training, one colour per run (solid: the trained generator, dashed: its average);
    a circle marks each run's reported generator. runs: {label: (color, tracked, report)}."""
    fig, ax = plt.subplots(figsize=(8, 4.2))
    for label, (color, tracked, report) in runs.items():
        for kind, style in (("raw", "-"), ("ema", "--")):
            if tracked.get(kind):
                its, values = zip(*tracked[kind])
                ax.plot(its, values, style, color=color, lw=1.3, label=f"{label} ({'EMA' if kind == 'ema' else 'trained'})")
        ax.plot(report["iteration"], report["cheap_fd"], "o", color=color, ms=8, mfc="none")
    style_fd_axes(ax, title, ncol=ncol)
    return fig


# %% tags=["train"]
FIXED_NOISE = {64: torch.randn(100, 64, generator=torch.Generator().manual_seed(SEED)).to(DEVICE),
               128: torch.randn(100, 128, generator=torch.Generator().manual_seed(SEED)).to(DEVICE)}
TRAIN_KW = dict(check_every=SETTINGS["cheap_fd_every"], checkpoint_dir=CHECKPOINTS, seed=SEED, resume=RESUME,
                segment_minutes=SEGMENT_MINUTES, checkpoint_minutes=CHECKPOINT_MINUTES, data_sha1=DATA_INFO["sha1"])


def gan_trainer(setting):
    return seeded_trainer("gan", lambda: (Generator(), Discriminator()), setting, SEED, DEVICE, EMA_DECAY)


def train_gan_setting(name, trainer, iterations, setting):
    return train_gan(name, trainer, REAL_28, iterations, setting["d_steps"], FIXED_NOISE[64], CHEAP_FD_28,
                     print_every=max(1, iterations // 10), **TRAIN_KW)


SEARCH_KW = dict(data_sha1=DATA_INFO["sha1"], seed=SEED, check_every=SETTINGS["cheap_fd_every"], ema_decay=EMA_DECAY,
                 from_weights=FROM_WEIGHTS)
SEARCH = search_once("gan", SEARCH_SETTINGS, SETTINGS["search_rungs"], gan_trainer, train_gan_setting, "gan_search",
                     WEIGHTS / "q2_gan_search.json", "gan_winner", **SEARCH_KW) if RUN_SEARCH else []
GAN_CONFIG = {k: SEARCH[0][k] for k in ("lr", "betas", "d_steps", "batch_size")} if SEARCH else dict(GAN_DEFAULT)
GAN_CONFIG["betas"] = tuple(GAN_CONFIG["betas"])

# %%
if SEARCH:
    print_search(SEARCH)
    fig = plot_search(SEARCH, "GAN search: successive halving (a line ends where its setting was dropped)" + data_label(),
                      lambda r: f"lr {r['lr']:g}, betas {tuple(r['betas'])}, D steps {r['d_steps']}")
    save_figure(fig, "q2_search.png")
print("the search's winner (rank 1: furthest rung, lowest score):", GAN_CONFIG)

# %% [markdown]
# ### The final rung: the search's winner and the DCGAN default, both to the full budget
# The search's last rung ends at 4,000 iterations, and a setting that leads there can still fall
# apart later (the short-horizon bias of any search by early scores). So the search has a last
# rung at the full budget, `iterations["gan"]`, with two candidates: **the search's winner**, which
# continues from its search state, and **the DCGAN default** (Radford et al. 2016), kept as a
# control whatever its early rank, because slow starters are what short rungs under-rate. The
# default's search state was not kept (the search deletes dropped runs), so its run starts again
# from iteration 0 with the same seed; its first rung repeats the search's exactly (checked
# below). The reported GAN is the candidate whose reported generator has the lower cheap FD; with
# `FROM_WEIGHTS` both generators and their histories are read from `weights/`.

# %% tags=["defs"]
def weights_config(trainer, iterations):
    return dict(trainer.config, kind=trainer.kind, iterations=iterations, seed=SEED, ema_decay=EMA_DECAY,
                data_sha1=DATA_INFO["sha1"])


def exported_with(path, config):
    """True when `path` holds a finished run's generator exported with `config` (its iterations included)."""
    return path.is_file() and torch.load(path, map_location="cpu", weights_only=False)["config"] == config


def finished_model(name, trainer, iterations, train):
    """(generator, history, info, report) of a finished run: read from weights/ (FROM_WEIGHTS, or when a
    run with these settings finished earlier: its checkpoint is then not needed), or trained
    (resuming any checkpoint; a finished one trains nothing more) and then exported."""
    path, config = WEIGHTS / f"q2_{name}.pt", weights_config(trainer, iterations)
    if FROM_WEIGHTS or (RESUME and exported_with(path, config)):
        return load_generator(path, copy.deepcopy(trainer.G), config, DEVICE)
    history, info = train(name, trainer, iterations)
    report = choose_report(history)
    net = reported_generator(trainer, history, report)
    export_generator(path, net, history, info, report, config)
    return net, history, info, report


def same_setting(a, b):
    return all(tuple(a[k]) == tuple(b[k]) if isinstance(a[k], (list, tuple)) else a[k] == b[k] for k in b)


def final_rung_candidates(winner, default):
    """{run name: setting} of the last rung: the search's winner (None: no search), and the default unless it is the winner."""
    if winner is None:
        return {"gan_default": default}
    return {"gan_winner": winner} if same_setting(winner, default) else {"gan_winner": winner, "gan_default": default}


def pick_final(reports):
    """The run whose reported generator has the lowest cheap FD."""
    return min(reports, key=lambda name: reports[name]["cheap_fd"])


def search_value_at(rows, setting, iteration):
    """The search's cheap FD of `setting` at `iteration`, or None if the search did not reach it."""
    for row in rows:
        if same_setting(row, setting):
            return dict(row["tracked"]).get(iteration)
    return None


def describe_report(name, info, report):
    """One line: which generator every number of this model comes from, and how it was trained."""
    which = "weight-averaged (EMA) generator" if report["kind"] == "ema" else "trained (raw) generator"
    when = (f"the best checkpoint, iteration {report['iteration']} (final cheap FD {report['final_cheap_fd']:.2f} > 1.2 x "
            f"best {report['best_cheap_fd']:.2f})" if report["restored_best"] else f"the final one, iteration {report['iteration']}")
    means = ", ".join(f"{k} {v:.2f}" for k, v in report["last_checks"].items())
    return (f"{name.upper()}: every number below comes from the {which}, {when}; mean cheap FD over the last 3 checks: "
            f"{means}. Trained {info['iterations']:,} iterations ({info['epochs']:.1f} epochs) in {info['segments']} "
            f"segment(s), {info['train_hours']:.2f} h ({info['seconds_per_iteration']:.3f} s/it).")


# %% tags=["train"]
GENERATORS, HISTORIES, INFOS, REPORTS, TRAINERS = {}, {}, {}, {}, {}
FINAL_RUNG = final_rung_candidates(GAN_CONFIG if SEARCH else None, GAN_DEFAULT)
for run_name, setting in FINAL_RUNG.items():
    TRAINERS[run_name] = gan_trainer(setting)
    GENERATORS[run_name], HISTORIES[run_name], INFOS[run_name], REPORTS[run_name] = finished_model(
        run_name, TRAINERS[run_name], SETTINGS["iterations"]["gan"],
        lambda name, trainer, iterations, setting=setting: train_gan_setting(name, trainer, iterations, setting))
print(TRAINERS[run_name].G, TRAINERS[run_name].D)

# %%
GAN_RUN = pick_final({name: REPORTS[name] for name in FINAL_RUNG})
print(f"{'run':12s} {'lr':>7s} {'betas':>12s} {'reported':>14s} {'cheap FD':>9s} {'best (iter)':>16s} {'final':>8s} {'at 2,000':>9s} {'search':>7s}")
for name, setting in FINAL_RUNG.items():
    rep, at_rung = REPORTS[name], dict(HISTORIES[name]["tracked"]["raw"]).get(SETTINGS["search_rungs"][0])
    in_search = search_value_at(SEARCH, setting, SETTINGS["search_rungs"][0])
    print(f"{name:12s} {setting['lr']:7g} {str(tuple(setting['betas'])):>12s} {rep['kind'] + ' @ ' + str(rep['iteration']):>14s} "
          f"{rep['cheap_fd']:9.2f} {rep['best_cheap_fd']:8.2f} ({rep['best_iteration']:5d}) {rep['final_cheap_fd']:8.2f} "
          f"{at_rung if at_rung is not None else float('nan'):9.2f} {in_search if in_search is not None else float('nan'):7.2f}")
print(f"'at 2,000' and 'search': the run's and the search's raw cheap FD at the first rung (equal: the run repeats the search). "
      f"Reported GAN: {GAN_RUN} ({FINAL_RUNG[GAN_RUN]}).")
RUNG_CURVES = {f"{n.removeprefix('gan_')}: lr {FINAL_RUNG[n]['lr']:g}, betas {tuple(FINAL_RUNG[n]['betas'])}":
               (color, HISTORIES[n]["tracked"], REPORTS[n]) for n, color in zip(FINAL_RUNG, ("tab:blue", "tab:purple"))}
save_figure(plot_tracked(RUNG_CURVES, "GAN, last rung of the search at the full budget (circle: each run's reported generator)"
                         + data_label()), "q2_gan_final_rung.png")
for store in (GENERATORS, HISTORIES, INFOS, REPORTS, TRAINERS):
    store["gan"] = store[GAN_RUN]
GAN_SETTING = dict(FINAL_RUNG[GAN_RUN])  # the reported GAN's setting

# %% [markdown]
# ### Evaluation block (used for all three models)
# 1. D and G losses over the whole run (per iteration, faint; moving average, solid), then the
#    moving averages after the first tenth on their own scale (the early transient hides the trend),
#    with the model's extra terms (WGAN's Wasserstein estimate, SSGAN's rotation losses) apart;
# 2. 10x10 grids of the same fixed noise at the early, middle and final stage: the snapshots
#    nearest 5%, 50% and 100% of the reported generator's iteration, each titled with its true
#    iteration;
# 3. FID (pytorch-fid, 5,000 generated vs the fixed 5,000 real digits) with precision, recall,
#    legible share and class shares, each beside its real-vs-real reference.

# %% tags=["defs"]
LOSS_LABELS = {"d_loss": "D loss", "g_loss": "G loss", "wasserstein": "Wasserstein estimate (-D loss)",
               "d_rotation": "D rotation CE (real)", "g_rotation": "G rotation CE (fake)"}


def plot_gan_losses(history, report, title, extra_keys=()):
    """Left: the whole run (per iteration faint, moving average solid). Then the moving averages after the first
    tenth, on their own scale, where the early transient no longer hides the trend: D and G losses, and the
    model's extra terms (WGAN's Wasserstein estimate, SSGAN's rotation losses) in a panel of their own."""
    groups = [[("d_loss", "tab:blue"), ("g_loss", "tab:orange")]] + ([list(zip(extra_keys, ["tab:green", "tab:red"]))] if extra_keys else [])
    if extra_keys:  # the whole run on top, the two zoomed panels below: each panel wide enough to read
        fig = plt.figure(figsize=(11, 7.6))
        grid = fig.add_gridspec(2, 2)
        axes = [fig.add_subplot(grid[0, :]), fig.add_subplot(grid[1, 0]), fig.add_subplot(grid[1, 1])]
    else:
        fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for zoomed, group in zip(axes[1:], groups):
        for key, color in group:
            its, smooth = np.arange(1, len(history[key]) + 1), ema(history[key])
            axes[0].plot(its, history[key], color=color, alpha=0.2, lw=0.6)
            axes[0].plot(its, smooth, color=color, lw=1.6, label=LOSS_LABELS.get(key, key))
            late = its > len(its) // 10
            zoomed.plot(its[late], smooth[late], color=color, lw=1.6, label=LOSS_LABELS.get(key, key))
        zoomed.legend(fontsize=9)
    titles = ["whole run"] + ["after the first tenth (zoomed)"] * len(groups)
    for ax, subtitle in zip(axes, titles):
        if report["restored_best"]:
            ax.axvline(report["iteration"], color="k", ls="--", lw=1,
                       label=f"reported generator (iteration {report['iteration']})" if ax is axes[0] else None)
        ax.set_xlabel("generator iteration", fontsize=10)
        ax.grid(alpha=0.3)
        ax.set_title(subtitle, fontsize=10)
    axes[0].set_ylabel("loss", fontsize=10)  # faint: per iteration; solid: moving average (the markdown above)
    axes[0].legend(fontsize=9)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def plot_stages(stages, title):
    """One 10x10 grid per stage, in one row (three stages) or two rows of two (four), large enough to read."""
    rows = 2 if len(stages) == 4 else 1
    cols = len(stages) // rows
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 4.3 * rows + 0.3), squeeze=False)
    for ax, (stage, (it, images)) in zip(axes.ravel(), stages.items()):
        grid = np.asarray(images[:100]).reshape(10, 10, 28, 28).transpose(0, 2, 1, 3).reshape(280, 280)
        ax.imshow(grid, cmap="gray", vmin=0, vmax=255)
        ax.set_title(f"{stage}: iteration {it:,}", fontsize=13)
        ax.axis("off")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def training_log(history, keys):
    """The recorded training, one line per tenth of the run: the mean losses over that tenth and the last cheap-FD
    checks within it (raw / weight-averaged generator). Read from the history, so it shows how a model trained
    even when this execution loaded it from weights/."""
    n = len(history[keys[0]])
    tenths = {k: tenth_means(history[k]) for k in keys}
    tracked = {kind: dict(map(tuple, history["tracked"][kind])) for kind in ("raw", "ema")}
    lines = [f"{'iterations':>16s} " + " ".join(f"{k:>11s}" for k in keys) + "   cheap FD raw / ema"]
    bounds = np.cumsum([0] + [len(part) for part in np.array_split(np.arange(n), 10)])  # tenth_means' stretches
    for i, (start, end) in enumerate(zip(bounds[:-1], bounds[1:])):
        last = {kind: max((it for it in checks if it <= end), default=None) for kind, checks in tracked.items()}
        fd = " / ".join(f"{tracked[kind][it]:.1f}" if it else "-" for kind, it in last.items())
        lines.append(f"{start + 1:>7,d}-{end:<8,d} " + " ".join(f"{tenths[k][i]:11.3f}" for k in keys) + f"   {fd}")
    return "\n".join(lines)


def evaluate_model(name, extra_keys=()):
    """The evaluation block for one model: losses, stage grids, then every score."""
    history, report = HISTORIES[name], REPORTS[name]
    print(describe_report(name, INFOS[name], report))
    print("training record (means over each tenth of the run):\n" + training_log(history, ["d_loss", "g_loss", *extra_keys]))
    save_figure(plot_gan_losses(history, report, f"{name.upper()}: losses during training" + data_label(name), extra_keys),
                f"q2_{name}_losses.png")
    snapshots = history["snapshots"][report["kind"]]
    stages = select_stages(snapshots, report["iteration"])
    shown = dict(stages)
    if report["restored_best"]:  # the reported generator is a best checkpoint: show where training ended too
        shown["end of training (not reported)"] = (max(snapshots), snapshots[max(snapshots)])
    kind = "weight-averaged generator" if report["kind"] == "ema" else "generator"
    save_figure(plot_stages(shown, f"{name.upper()} ({kind}): fixed noise, 10x10, early / middle / final"
                            + (" / end of training" if report["restored_best"] else "") + data_label(name)),
                f"q2_{name}_stages.png")
    scores = generated_scores(name, GENERATORS[name], SETTINGS["fid_gen"], SEED, crop=name == "ssgan")
    return dict(scores, stages={stage: int(it) for stage, (it, _) in stages.items()})


# %%
SCORES = {"gan": evaluate_model("gan")}

# %% [markdown]
# ## 2-2. Wasserstein GAN
# The critic is the Table 3 network (no sigmoid, it outputs a score), trained with
# `L_D = mean D(G(z)) - mean D(x)` and weight clipping to [-0.01, 0.01] after every update; the
# generator minimises `L_G = -mean D(G(z))`. Settings of Arjovsky et al. (2017): RMSprop, clip
# 0.01, 5 critic steps per generator step, lr 5e-5. `-L_D` estimates the Wasserstein-1 distance
# (up to the unknown Lipschitz constant) and is plotted too.
#
# **The learning rate, decided here.** With RMSprop every weight moves by about lr per step whatever
# its gradient's size, so lr sets how many steps the clipped critic and the generator need. The
# paper's 5e-5 and 2e-4 train side by side from the same initial networks for `wgan_trial`
# iterations and are scored as in the GAN search (final cheap FD and its trend). The paper's rate
# is kept unless the other scores better; the winner's run continues to `iterations["wgan"]`. A
# trial this short cannot show whether 5e-5 would catch up by the end of the budget; it shows which
# rate is further along at equal cost, and the quality curve below shows the chosen one's whole run.

# %% tags=["train"]
WGAN_SETTINGS = [dict(WGAN, lr=lr) for lr in WGAN_LRS]


def wgan_trainer(setting):
    return seeded_trainer("wgan", lambda: (Generator(), Discriminator()), setting, SEED, DEVICE, EMA_DECAY)


def train_wgan_setting(name, trainer, iterations, setting):
    return train_gan(name, trainer, REAL_28, iterations, setting["n_critic"], FIXED_NOISE[64], CHEAP_FD_28,
                     print_every=max(1, iterations // 10), **TRAIN_KW)


WGAN_TRIAL = search_once("wgan", WGAN_SETTINGS, [SETTINGS["wgan_trial"]], wgan_trainer, train_wgan_setting, "wgan_lr",
                         WEIGHTS / "q2_wgan_lr.json", "wgan", **SEARCH_KW)
WGAN_CONFIG = {k: WGAN_TRIAL[0][k] for k in ("lr", "clip", "n_critic", "batch_size")}

# %%
print_search(WGAN_TRIAL, columns=("lr",))
fig = plot_search(WGAN_TRIAL, f"WGAN learning rate: {len(WGAN_TRIAL)} rates side by side" + data_label(),
                  lambda r: f"RMSprop lr {r['lr']:g}" + (" (paper)" if r["lr"] == WGAN_LRS[0] else ""))
save_figure(fig, "q2_wgan_lr.png")
print(f"chosen WGAN setting: {WGAN_CONFIG}" + (" (the paper's)" if WGAN_CONFIG["lr"] == WGAN_LRS[0] else
                                                 f" (the paper's {WGAN_LRS[0]:g} scored worse over this trial)"))

# %% tags=["train"]
TRAINERS["wgan"] = wgan_trainer(WGAN_CONFIG)
GENERATORS["wgan"], HISTORIES["wgan"], INFOS["wgan"], REPORTS["wgan"] = finished_model(
    "wgan", TRAINERS["wgan"], SETTINGS["iterations"]["wgan"],
    lambda name, trainer, iterations: train_wgan_setting(name, trainer, iterations, WGAN_CONFIG))

# %%
SCORES["wgan"] = evaluate_model("wgan", extra_keys=("wasserstein",))

# %% [markdown]
# ## 2-3. Self-supervised GAN (SSGAN)
# Tables 4-7, read as follows (the printed tables cannot be built literally):
# - **Generator block (Table 5):** row 8's up-sampling is the *shortcut's*:
#   `out = Block1(x) + Upsample(x)` (a 1x1 convolution on the shortcut only if the channel counts
#   differ; here they never do). Table 4's first Linear is followed by BatchNorm as printed.
# - **Discriminator block (Table 7):** average pools are 2x2 with stride 2 and **padding 0**
#   (padding 1 would give 17x17 from 32x32), and apply only in the blocks marked down-sample; the
#   shortcut's 1x1 convolution takes the block's **in_channels** and is kept in every block, as
#   printed. The first block has no leading ReLU.
# - **Spectral norm** on every discriminator convolution and on both heads. After block 4:
#   ReLU, then **global sum pooling** over space, then the two heads: real/fake (1 logit) and
#   rotation (4 classes: 0, 90, 180, 270 degrees).
# - **Losses (Chen et al., 2019):** the non-saturating GAN loss of 2-1 on upright images, plus
#   the rotation cross-entropy on rotated **real** images for D (weight β = 1.0) and on rotated
#   **generated** images for G (weight α = 0.2):
#   `L_D = L_D^GAN + β CE_rot(real)`, `L_G = L_G^ns + α CE_rot(fake)`.
# - **Rotated batch, as in the paper's code (compare_gan, rotated batch size = batch size):** the
#   GAN loss uses the whole upright batch of B; the rotation loss uses its first quarter in all
#   four orientations (B images, labels 0..3), the upright copies being the batch's own. D sees
#   B + 3B/4 real and B fake images in one pass, G's loss B + 3B/4 images: about half of rotating
#   all 4B images. (Mimicry instead turns each quarter of the batch by one angle.)
# - The networks run in `channels_last` memory layout, faster for these convolutions on CPU (the
#   same arithmetic). Adam lr 2e-4, betas (0.0, 0.9), as in Mimicry's SSGAN.

# %% tags=["defs"]
class GBlock(nn.Module):
    """Table 5: BN-ReLU-Up-Conv-BN-ReLU-Conv, plus the up-sampled input."""

    def __init__(self, in_ch, out_ch):
        super().__init__()
        self.block = nn.Sequential(
            nn.BatchNorm2d(in_ch), nn.ReLU(), nn.Upsample(scale_factor=2, mode="nearest"),
            nn.Conv2d(in_ch, out_ch, 3, padding=1), nn.BatchNorm2d(out_ch), nn.ReLU(),
            nn.Conv2d(out_ch, out_ch, 3, padding=1))
        shortcut = [nn.Upsample(scale_factor=2, mode="nearest")]
        if in_ch != out_ch:
            shortcut.append(nn.Conv2d(in_ch, out_ch, 1))
        self.shortcut = nn.Sequential(*shortcut)

    def forward(self, x):
        return self.block(x) + self.shortcut(x)


class SSGenerator(nn.Module):
    """Table 4: z (128) -> 32x32 in [-1, 1]."""

    def __init__(self, z_dim=128, ch=256):
        super().__init__()
        self.z_dim, self.ch = z_dim, ch
        self.fc = nn.Sequential(nn.Linear(z_dim, ch * 4 * 4), nn.BatchNorm1d(ch * 4 * 4))
        self.blocks = nn.Sequential(GBlock(ch, ch), GBlock(ch, ch), GBlock(ch, ch))
        self.out = nn.Sequential(nn.ReLU(), nn.Conv2d(ch, 1, 3, padding=1), nn.Tanh())

    def forward(self, z):
        return self.out(self.blocks(self.fc(z).view(-1, self.ch, 4, 4)))


class DBlock(nn.Module):
    """Table 7: [ReLU]-SNConv-ReLU-SNConv-[AvgPool], plus [AvgPool]-SNConv1x1 of the input."""

    def __init__(self, in_ch, out_ch, downsample, first=False):
        super().__init__()
        pool = [nn.AvgPool2d(2, stride=2, padding=0)] if downsample else []
        self.block = nn.Sequential(
            *([] if first else [nn.ReLU()]),
            spectral_norm(nn.Conv2d(in_ch, out_ch, 3, padding=1)), nn.ReLU(),
            spectral_norm(nn.Conv2d(out_ch, out_ch, 3, padding=1)), *pool)
        self.shortcut = nn.Sequential(*pool, spectral_norm(nn.Conv2d(in_ch, out_ch, 1)))

    def forward(self, x):
        return self.block(x) + self.shortcut(x)


class SSDiscriminator(nn.Module):
    """Table 6: 32x32 -> (real/fake logit, 4 rotation logits)."""

    def __init__(self, ch=128):
        super().__init__()
        self.blocks = nn.Sequential(DBlock(1, ch, True, first=True), DBlock(ch, ch, True),
                                    DBlock(ch, ch, False), DBlock(ch, ch, False), nn.ReLU())
        self.gan_head = spectral_norm(nn.Linear(ch, 1))
        self.rotation_head = spectral_norm(nn.Linear(ch, 4))

    def forward(self, x):
        h = self.blocks(x).sum(dim=(2, 3))  # global sum pooling
        return self.gan_head(h).squeeze(1), self.rotation_head(h)


def ssgan_step_seconds(width, real_32, steps=3, warmup=1):
    """Seconds per SSGAN iteration (one D and one G update, batch 64) at generator and discriminator width `width`."""
    trainer = GANTrainer("ssgan", SSGenerator(ch=width), SSDiscriminator(ch=width), SSGAN, DEVICE)
    stream = batches(len(real_32), SSGAN["batch_size"], torch.Generator().manual_seed(0))
    for _ in range(warmup):
        trainer.iteration(real_32, stream, SSGAN["n_dis"])
    t0 = time.time()
    for _ in range(steps):
        trainer.iteration(real_32, stream, SSGAN["n_dis"])
    return (time.time() - t0) / steps


# %% [markdown]
# **Widths.** The specified widths (256 / 128) cost too much on a CPU for 10,000 iterations, so the
# `cpu` profile uses reduced widths, 32/32, fixed before the long runs from step times measured on
# the slower of the project's 2-core machines, where 64/64 took several seconds per iteration and
# two models trained at once, one thread each. The step time at each candidate width on the
# machine of this execution (two threads, nothing else running; these machines differ up to 5x in
# speed) follows: here a wider network would have fitted, so the reduced width is a limit of this
# run, not a necessity.

# %%
REAL_32 = pad_to_32(REAL_28)
SSGAN_STEP_SECONDS = {}  # width -> seconds per iteration on this machine (stored in results/q2.json)
for width in SETTINGS["ssgan_timed_widths"]:
    seconds = SSGAN_STEP_SECONDS[width] = ssgan_step_seconds(width, REAL_32)
    hours = seconds * SETTINGS["iterations"]["ssgan"] / 3600
    print(f"width {width:3d}/{width:<3d}: {seconds:.2f} s per iteration -> {SETTINGS['iterations']['ssgan']:,} iterations "
          f"in about {hours:.1f} h ({'within' if hours <= 3 else 'beyond'} three hours)")
print(f"this run: generator {SETTINGS['ssgan_widths']['g']}, discriminator {SETTINGS['ssgan_widths']['d']}")


# %% tags=["train"]
widths = SETTINGS["ssgan_widths"]
if widths != SPEC_WIDTHS:
    print(f"REDUCED WIDTH: this {RUN['profile']} run uses generator width {widths['g']} and discriminator width "
          f"{widths['d']} instead of the specified {SPEC_WIDTHS['g']} / {SPEC_WIDTHS['d']} (step times above).")
print("SSGAN settings:", SSGAN)
REAL_32 = pad_to_32(REAL_28)


def ssgan_trainer(setting):
    return seeded_trainer("ssgan", lambda: (SSGenerator(ch=widths["g"]), SSDiscriminator(ch=widths["d"])), setting, SEED,
                          DEVICE, EMA_DECAY)


def train_ssgan(name, trainer, iterations):
    return train_gan(name, trainer, REAL_32, iterations, SSGAN["n_dis"], FIXED_NOISE[128], CHEAP_FD_32, crop=True,
                     print_every=max(1, iterations // 20), **TRAIN_KW)


TRAINERS["ssgan"] = ssgan_trainer(dict(SSGAN, widths=dict(widths)))
GENERATORS["ssgan"], HISTORIES["ssgan"], INFOS["ssgan"], REPORTS["ssgan"] = finished_model(
    "ssgan", TRAINERS["ssgan"], SETTINGS["iterations"]["ssgan"], train_ssgan)

# %%
SCORES["ssgan"] = evaluate_model("ssgan", extra_keys=("d_rotation", "g_rotation"))

# %% [markdown]
# ## Comparison of the three models
# Quality over training (the cheap classifier-space Fréchet distance, same real digits and noise
# for all; solid: the trained generator, dashed: its weight average); **mode coverage**: the
# share of each digit class among the 5,000 generated digits scored by FID, labelled by the
# notebook's classifier, beside the same shares of 5,000 real test digits; and the closing table,
# with each FID's bootstrap standard error (± se: the spread of FID over `FID_BOOTSTRAP` = 20
# resamples, with replacement, of the generated features against the fixed real statistics) and
# each gap between adjacent models in standard errors of the difference, sqrt(se_a² + se_b²).

# %%
MODEL_CURVES = {name.upper(): (color, HISTORIES[name]["tracked"], REPORTS[name])
                for name, color in zip(("gan", "wgan", "ssgan"), ("tab:blue", "tab:orange", "tab:green"))}
save_figure(plot_tracked(MODEL_CURVES, "Quality over training: classifier-space FD (circle: the reported generator)" + data_label("ssgan"),
                         ncol=3), "q2_quality_over_training.png")

# %%
fig, ax = plt.subplots(figsize=(8, 3.8))
width = 0.2
bars = [("MNIST test (real)", REFERENCE["class_share"])] + [(n.upper(), SCORES[n]["class_share"]) for n in ("gan", "wgan", "ssgan")]
for k, (label, shares) in enumerate(bars):
    ax.bar(np.arange(10) + (k - 1.5) * width, shares, width, label=label, color=["0.6", "tab:blue", "tab:orange", "tab:green"][k])
ax.axhspan(0.05, 0.15, color="0.9", zorder=0, label="0.05-0.15")
ax.set_ylim(0, 0.19)  # headroom: the legend above the tallest bar
ax.set_xticks(range(10))
ax.set_xlabel("digit class (classifier's label)", fontsize=10)
ax.set_ylabel(f"share of {SETTINGS['fid_gen']:,} digits", fontsize=10)
ax.legend(fontsize=8, ncol=5, loc="upper center")
ax.set_title("Mode coverage: class shares of generated digits" + data_label("ssgan"), fontsize=9)
save_figure(fig, "q2_class_shares.png")

# %%
SUMMARY = {}
for name in ("gan", "wgan", "ssgan"):
    SUMMARY[name] = dict(INFOS[name], **SCORES[name], reported=REPORTS[name], run=GAN_RUN if name == "gan" else name,
                         tracked={k: [[int(i), float(v)] for i, v in t] for k, t in HISTORIES[name]["tracked"].items()},
                         loss_tenths={k: tenth_means(v) for k, v in HISTORIES[name].items() if k in LOSS_LABELS})
SUMMARY["ssgan"]["widths"] = dict(widths, reduced=widths != SPEC_WIDTHS, step_seconds=SSGAN_STEP_SECONDS)
head = (f"{'model':9s} {'FID':>7s} {'± se':>5s} {'prec':>6s} {'recall':>6s} {'legible':>7s} {'shares':>11s} {'reported':>14s} "
        f"{'iters':>6s} {'epochs':>6s} {'segm':>4s} {'hours':>5s} {'params G':>10s} {'params D':>9s}")
print(head + "\n" + "-" * len(head))
print(f"{'real':9s} {FID_FLOOR:7.2f} {se_cell(REFERENCE['fid_se'])} {REFERENCE['precision']:6.3f} {REFERENCE['recall']:6.3f} {REFERENCE['legible_share']:7.3f} "
      f"{min(REFERENCE['class_share']):5.3f}-{max(REFERENCE['class_share']):.3f}   (test digits vs the training subset)")
for name, s in SUMMARY.items():
    rep = s["reported"]
    print(f"{name:9s} {s['fid']:7.2f} {se_cell(s['fid_se'])} {s['precision']:6.3f} {s['recall']:6.3f} {s['legible_share']:7.3f} "
          f"{min(s['class_share']):5.3f}-{max(s['class_share']):.3f} {rep['kind'] + ' @ ' + str(rep['iteration']):>14s} "
          f"{s['iterations']:6d} {s['epochs']:6.1f} {s['segments']:4d} {s['train_hours']:5.2f} {s['params_g']:10,d} {s['params_d']:9,d}")
print("FID: pytorch-fid, 5,000 generated vs the fixed 5,000 training digits (real row: 5,000 test digits, the floor). "
      "± se: bootstrap standard error of FID. reported: which generator (raw or EMA) at which iteration.")
RANKING = sorted(SUMMARY, key=lambda name: SUMMARY[name]["fid"])
SEPARATIONS = separations(SUMMARY, RANKING)
for pair in SEPARATIONS:
    print(f"{pair['better']} before {pair['worse']}: FID lower by {pair['difference']:.2f}"
          + (f" = {pair['in_se']:.1f} standard errors of the difference" if pair["in_se"] is not None else ""))
if not DATA_INFO["official_size"]:
    print(f"\nTrained on {DATA_INFO['n_train']:,} MNIST training digits (not the official 60,000).")

# %%
RUN["wall_seconds"] = time.time() - RUN_START
RESULTS_JSON = dict(
    run=RUN, data=DATA_INFO, classifier=CLASSIFIER_INFO, fid_floor=FID_FLOOR, reference=REFERENCE,
    fid=dict(num_real=len(REAL_INDICES), num_gen=SETTINGS["fid_gen"], dims=SETTINGS["fid_dims"],
             real_subset=f"data/fid/{subset_name}", floor_subset=f"data/fid/{floor_name}",
             floor="training subset vs the same number of test digits (seeded)", subset_seed=FID_SUBSET_SEED,
             resolution="28x28 (SSGAN: centre crop of 32x32)", generated_png="round(127.5 * (G(z) + 1))",
             precision_recall="Kynkäänniemi et al. 2019, k = 3, on the FID features",
             legible=f"classifier probability >= {LEGIBLE_CONFIDENCE}", library="pytorch-fid 0.3.0, InceptionV3",
             ranking=RANKING, separations=SEPARATIONS,
             standard_error=f"bootstrap: std of FID over {FID_BOOTSTRAP} resamples of the generated features, real statistics fixed"),
    search=dict(settings=SEARCH_SETTINGS, method="successive halving", rungs=SETTINGS["search_rungs"],
                score="final cheap FD + (final - best cheap FD)", rows=SEARCH, chosen=GAN_CONFIG,
                continued_from_search=bool(SEARCH),
                final_rung=dict(iterations=SETTINGS["iterations"]["gan"], chosen=GAN_RUN,
                                runs={n: dict(setting=FINAL_RUNG[n], report=REPORTS[n], info=INFOS[n],
                                              tracked=HISTORIES[n]["tracked"]) for n in FINAL_RUNG})),
    wgan_lr=dict(rates=WGAN_LRS, trial_iterations=SETTINGS["wgan_trial"], rows=WGAN_TRIAL, chosen=WGAN_CONFIG["lr"]),
    settings=dict(gan=GAN_SETTING, wgan=WGAN_CONFIG, ssgan=SSGAN, ema_decay=EMA_DECAY), models=SUMMARY)
(RESULTS / "q2.json").write_text(json.dumps(RESULTS_JSON, indent=1, default=list))
print(f"wrote results/q2.json; wall time {RUN['wall_seconds'] / 60:.1f} min, profile {RUN['profile']}, "
      f"device {RUN['device']}, MNIST train n={DATA_INFO['n_train']:,}")
