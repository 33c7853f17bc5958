"""Write the report's numbers and tables from results/*.json and report/config.toml.

Usage: python3 report/generate.py [--results DIR] [--out DIR]
Writes into report/generated/:
  values.tex   one \\rv{key} value per result the report quotes (e.g. \\rv{q1.vae.fid}), the
               \\ifreconstructed / \\ifmnistofficial / \\ifssganreduced switches, the title page fields;
  q1_table.tex, q1_eval_table.tex, mig_table.tex, q2_table.tex, search_table.tex   the tables.
No number in the report is typed by hand: report.tex only refers to these keys, an unknown key
stops the LaTeX build, and a result missing from the JSON stops this script with its name.
Standard library only, so it runs without the project's virtual environment.
"""
import argparse
import json
import math
import re
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RERUN = {"q1": "notebooks/01_controlvae_dsprites.ipynb", "q2": "notebooks/02_gans_mnist.ipynb"}
Q1_MODELS = {"vae": "vae", "kl8": "controlvae_kl8", "kl14": "controlvae_kl14"}
Q2_MODELS = ("gan", "wgan", "ssgan")
SHARE_BAND = (0.05, 0.15)  # issue 9: each digit's share of the generated samples, 0.1 +- 50%
MODEL_FA = {"vae": r"\lr{VAE}", "kl8": r"\lr{ControlVAE ($KL^*=8$)}", "kl14": r"\lr{ControlVAE ($KL^*=14$)}", "gan": r"\lr{GAN}", "wgan": r"\lr{WGAN}",
            "ssgan": r"\lr{SSGAN}"}


class MissingResult(Exception):
    pass


class OutdatedAnalysis(MissingResult):
    """The results no longer support a sentence of report.tex's analysis."""


def load_results(results_dir):
    results = {}
    for key, notebook in RERUN.items():
        path = results_dir / f"{key}.json"
        if not path.is_file():
            raise MissingResult(f"{path} is missing: run {notebook} (or `make run`) to produce it")
        results[key] = json.loads(path.read_text())
    return results


def get(results, dotted):
    """results['q1']['models']['vae']['fid'] from 'q1.models.vae.fid', or a clear error."""
    node = results
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            q = dotted.split(".")[0]
            raise MissingResult(f"results/{q}.json has no '{dotted.partition('.')[2]}': "
                                f"rerun {RERUN.get(q, 'the notebook')} so that it records it")
        node = node[part]
    return node


def in_share_band(share):
    return SHARE_BAND[0] <= share <= SHARE_BAND[1]


def fixed(x, digits=2):
    return f"{x:.{digits}f}"


def count(n):
    """An integer for math mode with the Persian thousands mark (report.tex's \\thsep): 30٬000."""
    return f"{int(n):,}".replace(",", "\\thsep ")


def minutes(seconds):
    return f"{seconds / 60:.1f}"


def sci(x):
    """1e-3 -> 10^{-3}, 5e-5 -> 5\\times 10^{-5}, 2e-4 -> 2\\times 10^{-4} (math mode)."""
    mantissa, exponent = f"{x:.0e}".split("e")
    power = f"10^{{{int(exponent)}}}"
    return power if mantissa == "1" else rf"{mantissa}\times {power}"


def betas(pair):
    return f"({pair[0]:g},\\,{pair[1]:g})"


def run_values(r, q):
    """What both questions record about their run: profile, device, seeds, FID sample counts, wall time."""
    return {f"{q}.profile": get(r, f"{q}.run.profile"), f"{q}.device": get(r, f"{q}.run.device"),
            f"{q}.threads": str(get(r, f"{q}.run.torch_threads")), f"{q}.wall": minutes(get(r, f"{q}.run.wall_seconds")),
            f"{q}.seed": str(get(r, f"{q}.run.seed")), f"{q}.subsetseed": str(get(r, f"{q}.run.fid_subset_seed")),
            f"{q}.fidreal": count(get(r, f"{q}.fid.num_real")), f"{q}.fidgen": count(get(r, f"{q}.fid.num_gen"))}


def gap_in_se(lower, higher, key):
    """higher[key] - lower[key] in standard errors of the difference, each score with its own <key>_se
    (FID, precision or recall)."""
    return (higher[key] - lower[key]) / math.hypot(lower[f"{key}_se"], higher[f"{key}_se"])


def share_se_values(r, q):
    """The largest standard error of any precision or recall the question reports (models and reference)."""
    scored = list(get(r, f"{q}.models").values()) + [get(r, f"{q}.reference")]
    return {f"{q}.prse.max": fixed(max(m[f"{key}_se"] for m in scored for key in ("precision", "recall")), 3)}


def q1_values(r):
    tolerances = get(r, "q1.training.tolerances")
    check = get(r, "q1.data.verified_against") if get(r, "q1.data.reconstructed") else None
    v = {
        **run_values(r, "q1"), **share_se_values(r, "q1"),
        "q1.recall.kl14vae.se": fixed(abs(gap_in_se(get(r, "q1.models.vae"), get(r, "q1.models.controlvae_kl14"), "recall")), 1),
        "q1.means.vaekl14.se": fixed(gap_in_se(get(r, "q1.models.vae"), get(r, "q1.models.controlvae_kl14"), "fid"), 1),
        "q1.means.kl14kl8.se": fixed(gap_in_se(get(r, "q1.models.controlvae_kl14"), get(r, "q1.models.controlvae_kl8"), "fid"), 1),
        "q1.batch": str(get(r, "q1.run.batch_size")), "q1.lr": sci(get(r, "q1.run.learning_rate")),
        "q1.nimages": count(get(r, "q1.data.n_images")),
        "q1.ceiling": fixed(math.log(get(r, "q1.data.n_images")), 2),
        "q1.excess14": fixed(14 - math.log(get(r, "q1.data.n_images")), 2),
        "q1.vae.excess": fixed(get(r, "q1.models.vae.final_kl") - math.log(get(r, "q1.data.n_images")), 2),
        "q1.kp": f"{get(r, 'q1.controller.kp'):g}", "q1.ki": f"{get(r, 'q1.controller.ki'):g}",
        "q1.betamin": f"{get(r, 'q1.controller.beta_min'):g}", "q1.betamax": f"{get(r, 'q1.controller.beta_max'):g}",
        "q1.ramp": count(get(r, "q1.controller.ramp_iters")),
        "q1.iters": count(get(r, "q1.training.iterations")),
        "q1.tol.recon": f"{tolerances['recon_plateau']:g}", "q1.tol.beta": f"{tolerances['beta_drift']:g}",
        "q1.floor": fixed(get(r, "q1.fid_floor")),
        "q1.bootstrap": re.search(r"over (\d+) resamples", get(r, "q1.fid.standard_error")).group(1),
        **separation_values("q1", get(r, "q1.fid.separations")),
        "q1.ref.precision": fixed(get(r, "q1.reference.precision"), 3),
        "q1.ref.recall": fixed(get(r, "q1.reference.recall"), 3),
        "q1.ref.blank": fixed(100 * get(r, "q1.reference.blank_share"), 1),
        "q1.threshold": re.search(r"> ([0-9.]+)", get(r, "q1.fid.binary")).group(1),
        "q1.mincarrier": f"{get(r, 'q1.mig.min_carrier_nats'):g}",
        **{f"q1.order.{k}": fixed(v, 3) for k, v in get(r, "q1.mig.factor_order_check").items()},
        "q1.blackpct": fixed(100 * (1 - get(r, "q1.data.mean_pixel")), 1),
        "q1.data.nreal": count(check["images"]) if check else "0",
        "q1.data.exact": count(check["pixel_exact"]) if check else "0",
    }
    short_of = {name: short for short, name in Q1_MODELS.items()}
    plain = {"vae": "VAE", "kl8": "ControlVAE ($KL^*=8$)", "kl14": "ControlVAE ($KL^*=14$)"}
    # by the primary FID, best first; one left-to-right box, so the bidi algorithm cannot reorder it
    v["q1.ranking"] = r"\mbox{\lr{" + " $<$ ".join(plain[short_of[name]] for name in get(r, "q1.fid.ranking")) + "}}"
    for short, name in Q1_MODELS.items():  # where prior samples lie against the training posteriors
        for group, g in get(r, f"q1.models.{name}.blank_geometry").items():
            v[f"q1.{short}.geometry.{group}.n"] = count(g["n"])
            if g["n"]:
                v[f"q1.{short}.geometry.{group}.norm"] = fixed(g["median_norm"])
                v[f"q1.{short}.geometry.{group}.nearest"] = fixed(g["median_nearest_mean"])
                v[f"q1.{short}.geometry.{group}.sigmas"] = fixed(g["median_nearest_sigmas"], 1)
    for short, name in Q1_MODELS.items():
        m = f"q1.models.{name}"
        plateau = get(r, m + ".convergence.recon_plateau.value")
        drift = get(r, m + ".convergence.beta_drift.value")
        v.update({f"q1.{short}.fid": fixed(get(r, m + ".fid")), f"q1.{short}.fidbin": fixed(get(r, m + ".fid_binary")),
                  f"q1.{short}.fidbinse": fixed(get(r, m + ".fid_binary_se")),
                  f"q1.{short}.kl": fixed(get(r, m + ".final_kl")), f"q1.{short}.recon": fixed(get(r, m + ".final_recon")),
                  f"q1.{short}.total": fixed(get(r, m + ".final_total")), f"q1.{short}.beta": fixed(get(r, m + ".final_beta")),
                  f"q1.{short}.active": str(get(r, m + ".active_latents")),
                  f"q1.{short}.epochs": fixed(get(r, m + ".epochs"), 1),
                  f"q1.{short}.hours": fixed(get(r, m + ".train_hours"), 2),
                  f"q1.{short}.segments": str(get(r, m + ".segments")),
                  f"q1.{short}.sperit": fixed(get(r, m + ".seconds_per_iteration"), 3),
                  f"q1.{short}.plateau": f"{plateau:+.4f}", f"q1.{short}.plateaupct": fixed(100 * abs(plateau), 1),
                  f"q1.{short}.betadrift": f"{drift:+.4f}", f"q1.{short}.betadriftpct": fixed(100 * abs(drift), 1),
                  f"q1.{short}.precision": fixed(get(r, m + ".precision"), 3),
                  f"q1.{short}.recall": fixed(get(r, m + ".recall"), 3),
                  f"q1.{short}.blank": fixed(100 * get(r, m + ".blank_share"), 1),
                  f"q1.{short}.blankbin": fixed(100 * get(r, m + ".blank_share_binary"), 1),
                  f"q1.{short}.mig": fixed(get(r, m + ".mig"), 3), f"q1.{short}.migsampled": fixed(get(r, m + ".mig_sampled"), 3)})
        for factor, c in get(r, m + ".mig_factors").items():
            v.update({f"q1.{short}.{factor}.latent": str(c["latent"]), f"q1.{short}.{factor}.mi": fixed(c["mi_nats"]),
                      f"q1.{short}.{factor}.misampled": fixed(c["mi_sampled_nats"]),
                      f"q1.{short}.{factor}.kl": fixed(c["kl_nats"]), f"q1.{short}.{factor}.nmi": fixed(c["normalised_mi"]),
                      f"q1.{short}.{factor}.gap": fixed(c["gap"])})
        if short != "vae":
            v[f"q1.{short}.klerror"] = fixed(abs(get(r, m + ".kl_error")), 2)
    return v


def separation_values(q, pairs):
    """Each adjacent pair of the ranking, best first: the FID gap and the gap in standard errors of a difference."""
    return {k: v for i, pair in enumerate(pairs, 1)
            for k, v in ((f"{q}.sep{i}.diff", fixed(pair["difference"])), (f"{q}.sep{i}.se", fixed(pair["in_se"], 1)))}


def share_values(key, shares):
    """Smallest and largest class share, their digits, and how many digits lie outside the 0.05-0.15 band."""
    return {f"{key}.sharemin": fixed(min(shares), 3), f"{key}.sharemax": fixed(max(shares), 3),
            f"{key}.sharemindigit": str(min(range(10), key=lambda d: shares[d])),
            f"{key}.sharemaxdigit": str(max(range(10), key=lambda d: shares[d])),
            f"{key}.outofband": str(sum(not in_share_band(x) for x in shares))}


def reported_label(report):
    """'EMA' or 'raw', with the iteration, for the generator every number of a model comes from."""
    return ("\\lr{EMA}" if report["kind"] == "ema" else "خام") + f"، تکرار {{\\persianmathdigits${count(report['iteration'])}$}}"


def q2_ranking(r, key):
    """Q2's models, best (lowest) first by `key` of results/q2.json's models."""
    return sorted(Q2_MODELS, key=lambda n: get(r, f"q2.models.{n}.{key}"))


def search_row(rows, **setting):
    """The search row of one setting (betas as a tuple), and its rank (1 = the winner)."""
    for rank, row in enumerate(rows, 1):
        if all((tuple(row[k]) if k == "betas" else row[k]) == v for k, v in setting.items()):
            return rank, row
    raise MissingResult(f"results/q2.json: the search has no row with {setting}")


DCGAN = dict(lr=2e-4, betas=(0.5, 0.999), d_steps=1)  # the default the search is built around


def search_values(rows):
    """The search rows the text names: the lower and higher learning rates, two D steps, the default."""
    named = dict(lowlr=dict(DCGAN, lr=1e-4), highlr=dict(DCGAN, lr=5e-4), twod=dict(DCGAN, d_steps=2), default=DCGAN)
    v = {f"q2.search.{key}": fixed(search_row(rows, **setting)[1]["final_cheap_fd"], 1) for key, setting in named.items()}
    v["q2.search.defaultrank"] = str(search_row(rows, **DCGAN)[0])
    return v


def common_iterations(r):
    """The shortest model's length: every Q2 model reached it."""
    return min(get(r, f"q2.models.{n}.iterations") for n in Q2_MODELS)


def common_cheap_fd(r, name):
    """A model's weight-averaged (EMA) generator's cheap FD at the shortest model's last iteration: the three at equal length."""
    return dict(map(tuple, get(r, f"q2.models.{name}.tracked")["ema"]))[common_iterations(r)]


def q2_values(r):
    ref = get(r, "q2.reference")
    trial = {row["lr"]: row for row in get(r, "q2.wgan_lr.rows")}
    rung = get(r, "q2.search.final_rung")
    v = {
        **run_values(r, "q2"),
        "q2.ntrain": count(get(r, "q2.data.n_train")),
        "q2.cheapfd.n": count(get(r, "q2.run.cheap_fd_n")), "q2.cheapfd.every": count(get(r, "q2.run.cheap_fd_every")),
        "q2.classifier.acc": fixed(100 * get(r, "q2.classifier.test_accuracy"), 2),
        "q2.classifier.steps": count(get(r, "q2.classifier.steps")),
        "q2.search.first": count(get(r, "q2.search.rungs")[0]), "q2.search.mid": count(get(r, "q2.search.rungs")[-1]),
        "q2.search.n": str(len(get(r, "q2.search.rows"))),
        "q2.search.top.final": fixed(get(r, "q2.search.rows")[0]["final_cheap_fd"], 1),
        "q2.search.top.best": fixed(get(r, "q2.search.rows")[0]["best_cheap_fd"], 1),
        "q2.floor": fixed(get(r, "q2.fid_floor")),
        **separation_values("q2", get(r, "q2.fid.separations")), **share_se_values(r, "q2"),
        "q2.recall.ssgangan.se": fixed(abs(gap_in_se(get(r, "q2.models.gan"), get(r, "q2.models.ssgan"), "recall")), 1),
        "q2.ref.precision": fixed(ref["precision"], 3), "q2.ref.recall": fixed(ref["recall"], 3),
        "q2.ref.legible": fixed(ref["legible_share"], 3), "q2.ref.illegiblepct": fixed(100 * (1 - ref["legible_share"]), 1), **share_values("q2.ref", ref["class_share"]),
        "q2.legible.conf": re.search(r"([0-9.]+)", get(r, "q2.fid.legible")).group(1),
        "q2.ema": f"{get(r, 'q2.settings.ema_decay'):g}",
        "q2.gan.lr": sci(get(r, "q2.settings.gan.lr")), "q2.gan.betas": betas(get(r, "q2.settings.gan.betas")),
        "q2.gan.dsteps": str(get(r, "q2.settings.gan.d_steps")), "q2.gan.batch": str(get(r, "q2.settings.gan.batch_size")),
        "q2.wgan.lr": sci(get(r, "q2.settings.wgan.lr")), "q2.wgan.paperlr": sci(get(r, "q2.wgan_lr.rates")[0]),
        "q2.wgan.clip": f"{get(r, 'q2.settings.wgan.clip'):g}", "q2.wgan.ncritic": str(get(r, "q2.settings.wgan.n_critic")),
        "q2.wgan.trial": count(get(r, "q2.wgan_lr.trial_iterations")),
        "q2.wgan.trialother": sci(get(r, "q2.wgan_lr.rates")[1]),
        **{f"q2.wgan.trial.{i}": fixed(trial[lr]["final_cheap_fd"], 1) for i, lr in enumerate(get(r, "q2.wgan_lr.rates"))},
        "q2.ssgan.lr": sci(get(r, "q2.settings.ssgan.lr")), "q2.ssgan.betas": betas(get(r, "q2.settings.ssgan.betas")),
        "q2.ssgan.alpha": f"{get(r, 'q2.settings.ssgan.alpha'):g}", "q2.ssgan.beta": f"{get(r, 'q2.settings.ssgan.beta'):g}",
        "q2.ssgan.widthg": str(get(r, "q2.models.ssgan.widths.g")), "q2.ssgan.widthd": str(get(r, "q2.models.ssgan.widths.d")),
        **{f"q2.ssgan.step{w}": fixed(sec, 2) for w, sec in get(r, "q2.models.ssgan.widths.step_seconds").items()},
        **{f"q2.ssgan.hours{w}": fixed(sec * get(r, "q2.models.ssgan.iterations") / 3600, 1)
           for w, sec in get(r, "q2.models.ssgan.widths.step_seconds").items()},
        "q2.ssgan.growth": fixed(get(r, "q2.models.ssgan.widths.step_seconds")["64"] / get(r, "q2.models.ssgan.widths.step_seconds")["32"], 1),
        "q2.common.it": count(common_iterations(r)),
        "q2.rung.iterations": count(rung["iterations"]),
        "q2.ranking": r"\mbox{\lr{" + " $<$ ".join(n.upper() for n in q2_ranking(r, "fid")) + "}}",
        **search_values(get(r, "q2.search.rows")),
    }
    for run, info in rung["runs"].items():
        key, rep = f"q2.rung.{run.removeprefix('gan_')}", info["report"]
        v.update({f"{key}.lr": sci(info["setting"]["lr"]), f"{key}.betas": betas(info["setting"]["betas"]),
                  f"{key}.cheapfd": fixed(rep["cheap_fd"], 1), f"{key}.best": fixed(rep["best_cheap_fd"], 1),
                  f"{key}.bestit": count(rep["best_iteration"]), f"{key}.final": fixed(rep["final_cheap_fd"], 1),
                  f"{key}.reported": reported_label(rep)})
    ssgan = get(r, "q2.models.ssgan")
    beta = get(r, "q2.settings.ssgan.beta")
    v["q2.ssgan.dgan.t9"] = fixed(ssgan["loss_tenths"]["d_loss"][9] - beta * ssgan["loss_tenths"]["d_rotation"][9], 3)
    for name in Q2_MODELS:
        m = get(r, f"q2.models.{name}")
        rep, stages = m["reported"], m["stages"]
        curve = dict(map(tuple, m["tracked"][rep["kind"]]))  # the reported kind's cheap FD by iteration
        v.update({f"q2.{name}.fid": fixed(m["fid"]), f"q2.{name}.fidgap": fixed(m["fid"] - get(r, "q2.fid_floor")),
                  f"q2.{name}.precision": fixed(m["precision"], 3), f"q2.{name}.recall": fixed(m["recall"], 3),
                  f"q2.{name}.legible": fixed(m["legible_share"], 3), **share_values(f"q2.{name}", m["class_share"]),
                  f"q2.{name}.precisionpct": fixed(100 * m["precision"] / ref["precision"], 0),
                  f"q2.{name}.recallpct": fixed(100 * m["recall"] / ref["recall"], 0),
                  f"q2.{name}.illegibletenths": fixed(10 * (1 - m["legible_share"]), 0),
                  f"q2.{name}.iterations": count(m["iterations"]), f"q2.{name}.epochs": fixed(m["epochs"], 1),
                  f"q2.{name}.hours": fixed(m["train_hours"], 2), f"q2.{name}.segments": str(m["segments"]),
                  f"q2.{name}.sperit": fixed(m["seconds_per_iteration"], 3), f"q2.{name}.dsteps": str(m["d_steps"]),
                  f"q2.{name}.paramsg": count(m["params_g"]), f"q2.{name}.paramsd": count(m["params_d"]),
                  f"q2.{name}.reported": reported_label(rep), f"q2.{name}.reportedit": count(rep["iteration"]),
                  f"q2.{name}.kindfa": "مولد \\lr{EMA}" if rep["kind"] == "ema" else "مولد خام",
                  f"q2.{name}.cheapfd": fixed(rep["cheap_fd"], 1), f"q2.{name}.cheapfd.best": fixed(rep["best_cheap_fd"], 1),
                  f"q2.{name}.cheapfd.bestit": count(rep["best_iteration"]),
                  f"q2.{name}.cheapfd.final": fixed(rep["final_cheap_fd"], 1),
                  f"q2.{name}.finalbestratio": fixed(rep["final_cheap_fd"] / rep["best_cheap_fd"]),
                  f"q2.{name}.cheapfd.first": fixed(m["tracked"]["raw"][0][1], 1),
                  **{f"q2.{name}.last.{k}": fixed(x, 1) for k, x in rep["last_checks"].items()},
                  **{f"q2.{name}.stage.{k}": count(it) for k, it in stages.items()},
                  **{f"q2.{name}.{key}.t{i}": fixed(x, 3) for key, tenths in m["loss_tenths"].items()
                     for i, x in enumerate(tenths)},
                  **{f"q2.{name}.{key}.from3{end}": fixed(f(tenths[2:]), 3) for key, tenths in m["loss_tenths"].items()
                     for end, f in (("min", min), ("max", max))},
                  f"q2.{name}.fifthit": count(m["iterations"] // 5),
                  f"q2.{name}.cheapfd.mid": fixed(curve.get(m["iterations"] // 2, math.nan), 1),
                  f"q2.{name}.cheapfd.common": fixed(common_cheap_fd(r, name), 1),
                  f"q2.{name}.nchecks": count(len(m["tracked"][rep["kind"]])),
                  f"q2.{name}.cheapfd.fifth": fixed(curve.get(m["iterations"] // 5, math.nan), 1)})
    return v


def q1_rows(r, cells):
    """One table row per Q1 model: its name, then `cells(model results)`."""
    return "".join(f"{MODEL_FA[short]} & {cells(get(r, f'q1.models.{name}'))} \\\\\n" for short, name in Q1_MODELS.items())


def q1_table(r):
    """Training: where each model ended after the same N iterations, and how it was trained."""
    def cells(m):
        set_point = "-" if m["set_point"] is None else f"${m['set_point']:g}$"
        c = m["convergence"]
        return (f"{set_point} & ${m['final_kl']:.2f}$ & ${m['final_recon']:.2f}$ & ${m['final_beta']:.2f}$ & "
                f"${c['recon_plateau']['value']:+.4f}$ & ${c['beta_drift']['value']:+.4f}$ & ${m['active_latents']}$")
    return q1_rows(r, cells)


def q1_eval_table(r):
    """Evaluation: the primary FID (binary samples), FID on means, precision/recall, blank samples, MIG; then the
    real-vs-real reference row."""
    rows = q1_rows(r, lambda m: f"${m['fid_binary']:.2f} \\pm {m['fid_binary_se']:.2f}$ & ${m['fid']:.2f} \\pm {m['fid_se']:.2f}$ & "
                                f"${m['precision']:.3f}$ & ${m['recall']:.3f}$ & "
                                f"${100 * m['blank_share']:.1f}$ & ${m['mig']:.3f}$ & ${m['mig_sampled']:.3f}$")
    ref = get(r, "q1.reference")
    return rows + (f"\\midrule\n مرجع (واقعی / واقعی) & ${ref['fid']:.2f} \\pm {ref['fid_se']:.2f}$ & - & ${ref['precision']:.3f}$ & "
                   f"${ref['recall']:.3f}$ & ${100 * ref['blank_share']:.1f}$ & - & - \\\\\n")


def mig_table(r):
    """Which latent the posterior means name for each factor (normalised MI / gap), and whether it survives on
    sampled codes (a dagger where it does not)."""
    def cell(c):
        mark = "" if c["survives"] else r"\textsuperscript{\dag}"
        return f"\\lr{{$z_{{{c['latent']}}}$}}{mark} ($%.2f$ / $%.2f$)" % (c["normalised_mi"], c["gap"])
    return q1_rows(r, lambda m: " & ".join(cell(c) for c in m["mig_factors"].values()))


def q2_table(r):
    """The three models and the real-vs-real reference: FID, precision/recall, legibility, class shares, then
    which generator the numbers come from and how it was trained."""
    rows = []
    for name in Q2_MODELS:
        m = get(r, f"q2.models.{name}")
        rows.append(f"{MODEL_FA[name]} & ${m['fid']:.2f} \\pm {m['fid_se']:.2f}$ & ${m['precision']:.3f}$ & ${m['recall']:.3f}$ & "
                    f"${m['legible_share']:.3f}$ & ${min(m['class_share']):.3f}$ تا ${max(m['class_share']):.3f}$ & "
                    f"{reported_label(m['reported'])} & ${count(m['iterations'])}$ & ${m['epochs']:.1f}$ \\\\")
    ref = get(r, "q2.reference")
    rows.append(f"\\midrule\nمرجع (واقعی / واقعی) & ${ref['fid']:.2f} \\pm {ref['fid_se']:.2f}$ & ${ref['precision']:.3f}$ & ${ref['recall']:.3f}$ & "
                f"${ref['legible_share']:.3f}$ & ${min(ref['class_share']):.3f}$ تا ${max(ref['class_share']):.3f}$ & - & - & - \\\\")
    return "\n".join(rows) + "\n"


def search_table(r):
    """The search's rows, best first (by score): setting, the rung it reached, its cheap FD there, its role."""
    rows, reported = [], get(r, "q2.settings.gan")
    for rank, row in enumerate(get(r, "q2.search.rows"), 1):
        roles = (["برنده‌ی جست‌وجو"] if rank == 1 else []) + (["گزارش‌شده"] if all(
            tuple(row[k]) == tuple(reported[k]) if isinstance(row[k], list) else row[k] == reported[k]
            for k in ("lr", "betas", "d_steps")) else [])
        rows.append(f"${rank}$ & ${sci(row['lr'])}$ & ${betas(row['betas'])}$ & ${row['d_steps']}$ & "
                    f"${count(row['iterations'])}$ & ${row['final_cheap_fd']:.1f}$ & "
                    f"{'، '.join(roles) or '-'} \\\\")
    return "\n".join(rows) + "\n"


# Tables 2 and 3 of the assignment with their "?" filled in: (row, layer, in, out, output shape, trainable
# parameters, which cell held the "?"). The shapes follow from the 28x28 output and input (report 2-1).
GAN_GENERATOR_ROWS = [
    ("1", r"\lr{Linear + BN + ReLU}", 64, 512, (512,), 64 * 512 + 512 + 2 * 512, None),
    ("2", r"\lr{Linear + BN + ReLU}", 512, 3136, (64, 7, 7), 512 * 3136 + 3136 + 2 * 3136, "out"),
    ("3", r"\lr{PixelShuffle(2)}", None, None, (16, 14, 14), 0, None),
    ("4", r"\lr{Conv 3\texttimes 3, \textit{p}\,=\,1 + BN + ReLU}", 16, 32, (32, 14, 14), 16 * 32 * 9 + 32 + 2 * 32, None),
    ("5", r"\lr{PixelShuffle(2)}", None, None, (8, 28, 28), 0, None),
    ("6", r"\lr{Conv 3\texttimes 3, \textit{p}\,=\,1 + tanh}", 8, 1, (1, 28, 28), 8 * 1 * 9 + 1, "out"),
]
GAN_DISCRIMINATOR_ROWS = [
    ("1", r"\lr{Conv 4\texttimes 4, \textit{s}\,=\,2, \textit{p}\,=\,1 + ReLU}", 1, 32, (32, 14, 14), 1 * 32 * 16 + 32, None),
    ("2", r"\lr{Conv 4\texttimes 4, \textit{s}\,=\,2, \textit{p}\,=\,1 + ReLU}", 32, 64, (64, 7, 7), 32 * 64 * 16 + 64, None),
    ("3", r"\lr{Linear + ReLU}", 3136, 512, (512,), 3136 * 512 + 512, "in"),
    ("4", r"\lr{Linear (logit)}", 512, 1, (1,), 512 + 1, None),
]


def architecture_rows(title, rows, trained):
    """One network's rows of the filled-in table, the found "?" values shaded; the layers' parameters must add
    up to the trained network's count (so the table describes the networks that were trained)."""
    total = sum(row[5] for row in rows)
    if total != trained:
        raise MissingResult(f"{title}: the table's layers hold {total:,} parameters, the trained network {trained:,} "
                            "(results/q2.json); update GAN_GENERATOR_ROWS / GAN_DISCRIMINATOR_ROWS in report/generate.py")

    def cell(value, found):
        text = "-" if value is None else f"${count(value)}$"
        return f"\\colorbox{{gray!20}}{{{text}}}" if found else text
    lines = [f" & \\textbf{{{title}}} & & & & \\\\", "\\midrule"]  # no \\multicolumn first: it cannot follow \\input
    for number, name, n_in, n_out, shape, params, question in rows:
        shape_tex = r"\times ".join(map(str, shape))
        lines.append(f"${number}$ & {name} & {cell(n_in, question == 'in')} & {cell(n_out, question == 'out')} & "
                     f"${shape_tex}$ & ${count(params)}$ \\\\")
    lines.append(f"\\multicolumn{{5}}{{r}}{{جمع}} & ${count(total)}$ \\\\")
    return "\n".join(lines)


def gan_architecture_table(r):
    """Tables 2 and 3 of the assignment, filled in, with each layer's output shape and parameters."""
    model = get(r, "q2.models.gan")
    return (architecture_rows("مولد (جدول ۲ صورت تمرین)", GAN_GENERATOR_ROWS, model["params_g"]) + "\n\\midrule\n"
            + architecture_rows("تمیزدهنده (جدول ۳ صورت تمرین)", GAN_DISCRIMINATOR_ROWS, model["params_d"]) + "\n")


def q1_claims(q1, r):
    """Question 1's statements (the third run: equal iterations, primary metric fid_binary)."""
    tol = get(r, "q1.training.tolerances")
    ref = get(r, "q1.reference")
    plateau = {k: m["convergence"]["recon_plateau"]["value"] for k, m in q1.items()}
    drift = {k: m["convergence"]["beta_drift"]["value"] for k, m in q1.items()}
    vae_geometry = q1["vae"]["blank_geometry"]
    alike = all(abs(vae_geometry["blank"][key] / vae_geometry["other"][key] - 1) < 0.15
                for key in ("median_norm", "median_nearest_mean", "median_nearest_sigmas")) if vae_geometry["blank"]["n"] else False
    return {
        "1-4: KL*=14's recall is within two standard errors of the VAE's (level), KL*=8's far below both":
            abs(gap_in_se(q1["vae"], q1["kl14"], "recall")) < 2 and gap_in_se(q1["kl8"], q1["vae"], "recall") > 10,
        "1-4: the means FID orders VAE < KL*=14 < KL*=8, each gap over three standard errors (not the binary order reversed)":
            gap_in_se(q1["vae"], q1["kl14"], "fid") > 3 and gap_in_se(q1["kl14"], q1["kl8"], "fid") > 3,
        "1-4: each gap between adjacent models' binary FIDs exceeds three standard errors of the difference":
            all(pair["in_se"] > 3 for pair in get(r, "q1.fid.separations")),
        "1-2: every model trained the same N iterations": len({m["iterations"] for m in q1.values()}) == 1 and
            q1["vae"]["iterations"] == get(r, "q1.training.iterations"),
        "1-3: the VAE's reconstruction was still falling at N, beyond the tolerance": plateau["vae"] < -tol["recon_plateau"],
        "1-3: the VAE draws blank samples, the real data none": q1["vae"]["blank_share"] > 0 == ref["blank_share"],
        "1-3: blank and other VAE samples lie alike (medians within 15% on all three measures)": alike,
        "1-3: a typical VAE prior sample lies tens of sigmas from every training posterior":
            vae_geometry["other"]["median_nearest_sigmas"] > 10,
        "1-3: the FID of the means is above the primary (binary) FID for the VAE": q1["vae"]["fid"] > q1["vae"]["fid_binary"],
        "1-3: the VAE's primary FID is tens of times the real-vs-real reference":
            q1["vae"]["fid_binary"] > 10 * get(r, "q1.fid_floor"),
        "1-3: the VAE's precision is tiny (< 0.1) while its recall is above one half":
            q1["vae"]["precision"] < 0.1 < 0.5 < q1["vae"]["recall"],
        "1-4: both ControlVAEs end within 0.5 nats of their set point": all(abs(q1[k]["kl_error"]) < 0.5 for k in ("kl8", "kl14")),
        "1-4: the VAE's own KL lies above both set points, so the controller raises beta above 1":
            q1["vae"]["final_kl"] > max(q1["kl8"]["set_point"], q1["kl14"]["set_point"]) and
            min(q1["kl8"]["final_beta"], q1["kl14"]["final_beta"]) > 1,
        "1-4: beta still rising at N, beyond the tolerance, for both ControlVAEs": all(
            drift[k] > tol["beta_drift"] for k in ("kl8", "kl14")),
        "1-4: only set point 8's reconstruction is within the tolerance; the larger the KL, the later the plateau":
            abs(plateau["kl8"]) <= tol["recon_plateau"] < abs(plateau["kl14"]) < abs(plateau["vae"]),
        "1-4: holding KL at 8 takes several times the beta that 14 takes (> 2x)":
            q1["kl8"]["final_beta"] > 2 * q1["kl14"]["final_beta"],
        "1-4: beta stays far below beta_max": max(q1["kl8"]["final_beta"], q1["kl14"]["final_beta"]) <
            0.5 * get(r, "q1.controller.beta_max"),
        "1-4: set point 14 lies above the information ceiling log N and 8 below it":
            q1["kl8"]["set_point"] < math.log(get(r, "q1.data.n_images")) < q1["kl14"]["set_point"],
        "1-4: reconstruction worsens as KL falls (kl8 > kl14 > vae)":
            q1["kl8"]["final_recon"] > q1["kl14"]["final_recon"] > q1["vae"]["final_recon"],
        "1-4: set point 8's MIG is more than twice the others', on means and on sampled codes alike":
            q1["kl8"]["mig"] > 2 * max(q1["vae"]["mig"], q1["kl14"]["mig"]) and
            q1["kl8"]["mig_sampled"] > max(q1["vae"]["mig_sampled"], q1["kl14"]["mig_sampled"]),
        "1-4: no model is disentangled (every MIG < 0.25)": all(m["mig"] < 0.25 and m["mig_sampled"] < 0.25 for m in q1.values()),
        "1-4: at set point 8 one latent carries both scale and shape":
            q1["kl8"]["mig_factors"]["scale"]["latent"] == q1["kl8"]["mig_factors"]["shape"]["latent"],
        "1-4: posX has its clearest carrier at set point 8 (gap > 0.5), posY a small gap everywhere (< 0.06)":
            q1["kl8"]["mig_factors"]["posX"]["gap"] > 0.5 and all(m["mig_factors"]["posY"]["gap"] < 0.06 for m in q1.values()),
        "1-4: the VAE has the clearest shape carrier": q1["vae"]["mig_factors"]["shape"]["normalised_mi"] > max(
            q1[k]["mig_factors"]["shape"]["normalised_mi"] for k in ("kl8", "kl14")),
        "1-4: only set point 14's scale carrier fails on sampled codes": [
            (k, f) for k, m in q1.items() for f, c in m["mig_factors"].items() if not c["survives"]] == [("kl14", "scale")],
        "1-4: every carrier's MI is below its latent's KL": all(
            c["mi_nats"] <= c["kl_nats"] for m in q1.values() for c in m["mig_factors"].values()),
        "1-4: blank samples fall as KL falls (vae > kl14 > kl8)":
            q1["vae"]["blank_share"] > q1["kl14"]["blank_share"] > q1["kl8"]["blank_share"],
        "1-4: prior samples lie nearer the training posteriors (in their sigmas) as KL falls":
            q1["vae"]["blank_geometry"]["other"]["median_nearest_sigmas"] >
            q1["kl14"]["blank_geometry"]["other"]["median_nearest_sigmas"] >
            q1["kl8"]["blank_geometry"]["other"]["median_nearest_sigmas"],
        "1-4: precision rises as KL falls (vae < kl14 < kl8); set point 14 keeps the VAE's recall, 8 loses a third of it":
            q1["vae"]["precision"] < q1["kl14"]["precision"] < q1["kl8"]["precision"] and
            abs(q1["kl14"]["recall"] - q1["vae"]["recall"]) < 0.02 and q1["kl8"]["recall"] < 0.7 * q1["vae"]["recall"],
        "1-4: by the primary FID both ControlVAEs beat the VAE and set point 14 is best":
            get(r, "q1.fid.ranking") == ["controlvae_kl14", "controlvae_kl8", "vae"],
        "1-4: the FID of the means reverses the order (vae < kl14 < kl8)": q1["vae"]["fid"] < q1["kl14"]["fid"] < q1["kl8"]["fid"],
        "1-4: every model's precision is far below the real-vs-real reference (< 1/5)":
            all(m["precision"] < ref["precision"] / 5 for m in q1.values()),
        "1-4: both ControlVAEs hold KL within 0.1 nats": all(abs(q1[k]["kl_error"]) < 0.1 for k in ("kl8", "kl14")),
        "1-4: fewer active latents at lower KL (kl8 < kl14 < vae)":
            q1["kl8"]["active_latents"] < q1["kl14"]["active_latents"] < q1["vae"]["active_latents"],
    }


def search_claims(r):
    """2-1's search and its last rung (issue 17: the search must predict the long run, or say where it did not)."""
    rows, rungs = get(r, "q2.search.rows"), get(r, "q2.search.rungs")
    rung = get(r, "q2.search.final_rung")
    runs = {name.removeprefix("gan_"): run["report"] for name, run in rung["runs"].items()}
    (_, low), (_, high), (_, twod), (default_rank, default) = (
        search_row(rows, **dict(DCGAN, lr=1e-4)), search_row(rows, **dict(DCGAN, lr=5e-4)),
        search_row(rows, **dict(DCGAN, d_steps=2)), search_row(rows, **DCGAN))
    late = [v for i, v in high["tracked"] if i >= 2500] + [high["final_cheap_fd"]]
    return {
        "2-1: every search row's final cheap FD lies within 0.1 of its best (the score is about the final FD)":
            all(row["final_cheap_fd"] - row["best_cheap_fd"] <= 0.1 for row in get(r, "q2.search.rows")),
        "2-1: lr 1e-4 ranks last, more than twice every other setting's cheap FD at the first rung":
            rows[-1] is low and all(low["final_cheap_fd"] > 2 * row["final_cheap_fd"] for row in rows if row is not low),
        "2-1: two D steps and the default were dropped at the first rung":
            twod["iterations"] == default["iterations"] == rungs[0],
        "2-1: the winner uses betas (0, 0.9) and was still improving at the last rung":
            tuple(rows[0]["betas"]) == (0.0, 0.9) and rows[0]["iterations"] == rungs[-1] and
            rows[0]["final_cheap_fd"] == rows[0]["best_cheap_fd"],
        "2-1: lr 5e-4 stayed flat (within 10%) from iteration 2,500 on": max(late) < 1.1 * min(late),
        "2-1: the default, dropped early, peaks later and better than the winner in the last rung":
            default_rank > 1 and runs["default"]["best_iteration"] > runs["winner"]["best_iteration"] and
            runs["default"]["best_cheap_fd"] < runs["winner"]["best_cheap_fd"] and rung["chosen"] == "gan_default",
        "2-1: both candidates degrade past 1.2x their best by the full budget (the best checkpoints are reported)":
            all(rep["restored_best"] and rep["final_cheap_fd"] > 1.2 * rep["best_cheap_fd"] for rep in runs.values()),
    }


def analysis_claims(r):
    """Each qualitative statement of report.tex's analysis, as a test on the results: a rerun that
    changes one of them stops the build, so the text is revised rather than left wrong."""
    q1 = {short: get(r, f"q1.models.{name}") for short, name in Q1_MODELS.items()}
    return {**q1_claims(q1, r), **search_claims(r), **q2_claims(r)}


def q2_claims(r):
    """The evaluation of the three GANs (sections 2-1 to 2-4)."""
    q2 = {name: get(r, f"q2.models.{name}") for name in Q2_MODELS}
    ref = get(r, "q2.reference")
    tenths = {name: m["loss_tenths"] for name, m in q2.items()}
    rising = lambda v: all(b > a for a, b in zip(v, v[1:]))
    falling = lambda v: all(b < a for a, b in zip(v, v[1:]))
    tracked = {name: dict(map(tuple, m["tracked"][m["reported"]["kind"]])) for name, m in q2.items()}
    wgan_w = tenths["wgan"]["wasserstein"]
    ssgan_dgan = tenths["ssgan"]["d_loss"][9] - get(r, "q2.settings.ssgan.beta") * tenths["ssgan"]["d_rotation"][9]
    at_common = {name: common_cheap_fd(r, name) for name in Q2_MODELS}
    separations = get(r, "q2.fid.separations")
    return {
        "2-3: SSGAN's recall is within two standard errors of the GAN's, its precision many above":
            abs(gap_in_se(q2["gan"], q2["ssgan"], "recall")) < 2 and gap_in_se(q2["gan"], q2["ssgan"], "precision") > 5,
        "2-2: WGAN's generator updates exceed twice those of the reported GAN generator":
            q2["wgan"]["iterations"] > 2 * q2["gan"]["reported"]["iteration"],
        "2-2: WGAN's recall is the lowest of the three models":
            min(Q2_MODELS, key=lambda n: q2[n]["recall"]) == "wgan",
        "2-4: at the shortest model's length the EMA generators' cheap FD orders the models as their FIDs do":
            sorted(Q2_MODELS, key=at_common.get) == q2_ranking(r, "fid"),
        "2-4: each gap between adjacent models' FIDs exceeds three standard errors of the difference":
            all(pair["in_se"] > 3 for pair in separations),
        "2-1: from the second tenth on, D's loss falls and G's rises in every tenth (D gains on G)":
            falling(tenths["gan"]["d_loss"][1:]) and rising(tenths["gan"]["g_loss"][1:]),
        "2-1: the reported GAN is its best checkpoint, and its final cheap FD is more than twice that best":
            q2["gan"]["reported"]["restored_best"] and q2["gan"]["reported"]["final_cheap_fd"] > 2 * q2["gan"]["reported"]["best_cheap_fd"],
        "2-1: the GAN's recall is nearer the reference than its precision": q2["gan"]["recall"] / ref["recall"] >
            q2["gan"]["precision"] / ref["precision"] + 0.1,
        "2-2: the Wasserstein estimate's first tenth is over five times any later tenth's, and from the third tenth on it "
        "stays within a factor 1.5":
            wgan_w[0] > 5 * max(wgan_w[1:]) and max(wgan_w[2:]) < 1.5 * min(wgan_w[2:]),
        "2-2: WGAN's cheap FD still improved by more than 15% after the first fifth, and its best is its last":
            tracked["wgan"][q2["wgan"]["iterations"] // 5] > 1.15 * q2["wgan"]["reported"]["cheap_fd"] and
            not q2["wgan"]["reported"]["restored_best"] and q2["wgan"]["reported"]["iteration"] == q2["wgan"]["iterations"],
        "2-2: WGAN's second half changed its cheap FD by less than 10%":
            tracked["wgan"][q2["wgan"]["iterations"] // 2] < 1.1 * q2["wgan"]["reported"]["cheap_fd"],
        "2-2: WGAN is worse than the GAN on all four scores": q2["wgan"]["fid"] > q2["gan"]["fid"] and
            all(q2["wgan"][k] < q2["gan"][k] for k in ("precision", "recall", "legible_share")),
        "2-2: WGAN's recall and precision are about equally far from the reference (within 10 points)":
            abs(q2["wgan"]["recall"] / ref["recall"] - q2["wgan"]["precision"] / ref["precision"]) < 0.1,
        "2-2: WGAN's critic saw more epochs than the GAN's discriminator": q2["wgan"]["epochs"] > q2["gan"]["epochs"],
        "2-3: SSGAN's rotation losses end far below log 4, G's above D's":
            tenths["ssgan"]["d_rotation"][9] < math.log(4) / 10 and tenths["ssgan"]["g_rotation"][9] < math.log(4) / 5 and
            tenths["ssgan"]["g_rotation"][9] > tenths["ssgan"]["d_rotation"][9],
        "2-3: SSGAN's D (GAN part) ends nearer 2 log 2 than the GAN's D": abs(ssgan_dgan - 2 * math.log(2)) <
            abs(tenths["gan"]["d_loss"][9] - 2 * math.log(2)),
        "2-3: SSGAN's best cheap FD is its last check": not q2["ssgan"]["reported"]["restored_best"] and
            q2["ssgan"]["reported"]["iteration"] == q2["ssgan"]["iterations"] ==
            min(tracked["ssgan"], key=tracked["ssgan"].get),
        "2-3: SSGAN is best on all four scores, with half the GAN's iterations": q2["ssgan"]["fid"] < q2["gan"]["fid"] and
            all(q2["ssgan"][k] > max(q2["gan"][k], q2["wgan"][k]) for k in ("precision", "recall", "legible_share")) and
            q2["ssgan"]["iterations"] <= q2["gan"]["iterations"] / 2,
        "2-4: every model's recall is nearer the reference than its precision": all(
            m["recall"] / ref["recall"] > m["precision"] / ref["precision"] for m in q2.values()),
        "2-4: every class share of every model lies in 0.05-0.15": all(
            in_share_band(x) for m in q2.values() for x in m["class_share"]),
        "2-4: the generated shares spread wider than the test digits' (every model)": all(
            max(m["class_share"]) - min(m["class_share"]) > max(ref["class_share"]) - min(ref["class_share"]) for m in q2.values()),
        "2-4: the GAN and the WGAN have the same least frequent digit":
            min(range(10), key=lambda d: q2["gan"]["class_share"][d]) == min(range(10), key=lambda d: q2["wgan"]["class_share"][d]),
        "2-1: any best-checkpoint threshold between 1 and the GAN's final/best ratio picks the same generators":
            q2["gan"]["reported"]["final_cheap_fd"] / q2["gan"]["reported"]["best_cheap_fd"] > 2
            and all(q2[n]["reported"]["final_cheap_fd"] == q2[n]["reported"]["best_cheap_fd"] for n in ("wgan", "ssgan")),
        "2-4: no model reaches the reference FID (each > 2x)": all(m["fid"] > 2 * get(r, "q2.fid_floor") for m in q2.values()),
        "2-3: SSGAN's generator has fewer parameters than the GAN's": q2["ssgan"]["params_g"] < q2["gan"]["params_g"],
        "2-4: the legible shares rank the models as FID does":
            q2_ranking(r, "fid") == sorted(Q2_MODELS, key=lambda n: -q2[n]["legible_share"]),
    }


def check_analysis(r):
    broken = [claim for claim, holds in analysis_claims(r).items() if not holds]
    if broken:
        raise OutdatedAnalysis("the results no longer support these statements of report.tex's analysis; "
                               "revise the paragraphs (and analysis_claims) before building:\n  - " + "\n  - ".join(broken))


LATEX_SPECIAL = re.compile(r"([\\{}$&#%_^~])")


def tex_escape(text):
    return LATEX_SPECIAL.sub(r"\\\1", str(text))


def title_values(config):
    students = config.get("students", [])
    if not 1 <= len(students) <= 2:
        raise MissingResult("report/config.toml must list one or two [[students]] (the assignment allows groups of two)")
    v = {f"title.{k}": tex_escape(config[k]) for k in ("university_fa", "faculty_fa", "course_fa", "title_fa", "date_fa")}
    lines = [rf"{tex_escape(s['name_fa'])} \quad {{\persianmathdigits${tex_escape(s['number'])}$}}" for s in students]
    v["title.students"] = r" \\[2mm] ".join(lines)
    return v


def values_tex(values, switches):
    out = ["% Generated by report/generate.py from results/*.json and report/config.toml. Do not edit."]
    for name, on in switches.items():
        out.append(rf"\newif\if{name} \{name}{'true' if on else 'false'}")
    for key, value in sorted(values.items()):
        out.append(rf"\expandafter\def\csname rv@{key}\endcsname{{{value}}}")
    return "\n".join(out) + "\n"


def generate(results_dir, out_dir, config_path):
    r = load_results(results_dir)
    config = tomllib.loads(Path(config_path).read_text())
    values = {**q1_values(r), **q2_values(r)}  # first: a missing result is named here
    check_analysis(r)
    titles = title_values(config)
    switches = {"reconstructed": bool(get(r, "q1.data.reconstructed")),
                "vaeblankfig": get(r, "q1.models.vae.blank_share") > 0,  # the notebook saves the figure only then
                "mnistofficial": bool(get(r, "q2.data.official_size")),
                "ssganreduced": bool(get(r, "q2.models.ssgan.widths.reduced")),
                "ssganbeatsgan": get(r, "q2.models.ssgan.fid") < get(r, "q2.models.gan.fid"),
                "ranksagree": q2_ranking(r, "fid") == q2_ranking(r, "reported.cheap_fd"),
                **{f"{name}shares": all(map(in_share_band, get(r, f"q2.models.{name}.class_share"))) for name in Q2_MODELS}}
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "values.tex").write_text(values_tex({**values, **titles}, switches))
    (out_dir / "q1_table.tex").write_text(q1_table(r))
    (out_dir / "q1_eval_table.tex").write_text(q1_eval_table(r))
    (out_dir / "mig_table.tex").write_text(mig_table(r))
    (out_dir / "q2_table.tex").write_text(q2_table(r))
    (out_dir / "search_table.tex").write_text(search_table(r))
    (out_dir / "gan_architecture_table.tex").write_text(gan_architecture_table(r))
    return {**values, **titles}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=Path, default=ROOT / "results")
    parser.add_argument("--out", type=Path, default=ROOT / "report" / "generated")
    parser.add_argument("--config", type=Path, default=ROOT / "report" / "config.toml")
    args = parser.parse_args(argv)
    try:
        values = generate(args.results, args.out, args.config)
    except MissingResult as err:
        sys.exit(f"report/generate.py: {err}")
    print(f"wrote {len(values)} values and 6 tables into {args.out}")


if __name__ == "__main__":
    main()
