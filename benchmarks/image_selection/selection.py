"""Model selection without test labels (issue 11): one flow, scored on held-out good + synthetic defects.

Trains one family x flow on the seed's training split (cached backbone features), then scores the
15 % held-out *training* good images and synthetic defects made on the same images (even rows:
anomalib's ``PerlinAnomalyGenerator``; odd rows: a CutPaste-style thin rotated strip copied from
elsewhere in the image with its brightness scaled) and prints image / pixel AUROC for each map
variant (own map or per-position latent NLL; Gaussian sigma 0 or 4; max or top-1 % mean).
The test split is never read. Exploratory (a quick script, not a product command):

    PYTHONPATH=. python benchmarks/image_selection/selection.py --family fastflow --flow usf \
        --scale 1 --long-side 256 --out-indices 2,3 --epochs 40 --seconds 300 --tag ff256s23
"""

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[2]))
from sklearn.metrics import roc_auc_score

from models.image.backbone import IMAGENET_MEAN, IMAGENET_STD, BackboneSpec
from models.image.factory import build_image_detector as build_detector
from models.image.map_score import latent_nll_map
from models.image.scorer import ImageScorer
from training.image.data import load_category, load_images, split_train_validation, typical_geometry
from training.image.features import extract_features, file_features
from training.image.train import FAMILY_DEFAULTS, _parameter_groups, resolve_settings
from training.loop import FitConfig, fit

CACHE = os.environ.get("SELECTION_CACHE", "selection-cache")  # features + synthetic sets
RESULTS = os.environ.get("SELECTION_RESULTS", "selection-results.jsonl")

ap = argparse.ArgumentParser()
ap.add_argument("--data", default="/work/shared/data/images/magnetic_tile")
ap.add_argument("--family", default="fastflow")
ap.add_argument("--flow", default="usf")
ap.add_argument("--long-side", type=int, default=256)
ap.add_argument("--epochs", type=int, default=30)
ap.add_argument("--seconds", type=float, default=300)
ap.add_argument("--scale", type=int, default=-1)
ap.add_argument("--out-indices", default="")
ap.add_argument("--lr", type=float, default=0)
ap.add_argument("--batch", type=int, default=32)
ap.add_argument("--patience", type=int, default=3)
ap.add_argument("--tag", default="")
ap.add_argument("--seed", type=int, default=0)
ap.add_argument("--set", action="append", default=[], help="model_args KEY=PYTHON_LITERAL")
a = ap.parse_args()
torch.set_num_threads(2)
cat = load_category(a.data)
train_p, val_p = split_train_validation(cat.train, 0.15, a.seed)
size = typical_geometry(cat.train, a.long_side, 32)
settings = resolve_settings(a.family, "cpu", {})
margs = dict(settings.model_args)
if a.scale >= 0:
    margs["channel_scale"] = bool(a.scale)
if a.out_indices:
    margs["out_indices"] = tuple(int(x) for x in a.out_indices.split(","))
for item in a.set:
    key, value = item.split("=", 1)
    margs[key] = __import__("ast").literal_eval(value)
torch.manual_seed(a.seed)
det = build_detector(a.family, a.flow, size, BackboneSpec(), **margs)
scorer = ImageScorer(det, IMAGENET_MEAN, IMAGENET_STD).eval()
cache = CACHE
desc = BackboneSpec().describe()
t0 = time.time()
feats = file_features(scorer, train_p + val_p, size, "cpu", desc, cache)

# synthetic anomalies on the validation images (seeded, cached per size)
syn_file = Path(cache) / f"synth_{a.data.replace('/', '_')}_{size[0]}x{size[1]}_s{a.seed}.pt"
if syn_file.is_file():
    syn = torch.load(syn_file)
else:
    from anomalib.data.utils.generators.perlin import PerlinAnomalyGenerator

    torch.manual_seed(1234)
    rng = np.random.default_rng(1234)
    imgs = load_images(val_p, size)  # uint8 N H W 3
    gen = PerlinAnomalyGenerator(probability=1.0, blend_factor=(0.2, 1.0))
    out_imgs, out_masks, kinds = [], [], []
    for i in range(len(imgs)):
        x = imgs[i].permute(2, 0, 1).float() / 255
        if i % 2 == 0:
            y, m = gen(x)
            y = (y.clamp(0, 1) * 255).round().byte().permute(1, 2, 0)
            m = m[0] > 0.5
            kinds.append("perlin")
        else:  # CutPaste-scar: a thin rotated strip from elsewhere in the image, brightness-jittered
            H, W = size
            arr = imgs[i].numpy().astype(np.float32)
            L = rng.uniform(0.05, 0.25) * max(H, W)
            w = rng.uniform(1.5, 5) * max(H, W) / 256
            cx, cy = rng.uniform(0.15, 0.85) * W, rng.uniform(0.15, 0.85) * H
            ang = rng.uniform(0, np.pi)
            dx, dy = np.cos(ang) * L / 2, np.sin(ang) * L / 2
            nx, ny = -np.sin(ang) * w / 2, np.cos(ang) * w / 2
            poly = [
                (cx - dx + nx, cy - dy + ny),
                (cx + dx + nx, cy + dy + ny),
                (cx + dx - nx, cy + dy - ny),
                (cx - dx - nx, cy - dy - ny),
            ]
            mi = Image.new("L", (W, H), 0)
            ImageDraw.Draw(mi).polygon(poly, fill=255)
            m = np.asarray(mi) > 127
            src = np.roll(
                arr, (int(rng.integers(H // 4, 3 * H // 4)), int(rng.integers(W // 4, 3 * W // 4))), (0, 1)
            )
            src = np.clip(src * rng.choice([rng.uniform(0.3, 0.7), rng.uniform(1.3, 2.0)]), 0, 255)
            y = arr.copy()
            y[m] = src[m]
            y = torch.from_numpy(y.round().astype(np.uint8))
            m = torch.from_numpy(m)
            kinds.append("scar")
        out_imgs.append(y)
        out_masks.append(m)
    syn = {"images": torch.stack(out_imgs), "masks": torch.stack(out_masks), "kinds": kinds}
    torch.save(syn, syn_file)
syn_feats = extract_features(scorer, syn["images"], "cpu")
t_feat = time.time() - t0

n_train = len(train_p)
ti, vi = torch.arange(n_train), torch.arange(n_train, n_train + len(val_p))


def loss_fn(m, idx):
    return m.loss([f[idx.long()] for f in feats])


det.initialise([f[:n_train] for f in feats])
fam = FAMILY_DEFAULTS[a.family]["cpu"]
lr = a.lr or fam["lr"]
settings.lr = lr
cfg = FitConfig(
    epochs=a.epochs,
    batch_size=a.batch,
    lr=lr,
    weight_decay=fam["weight_decay"],
    grad_clip=10.0,
    patience=a.patience,
    seed=a.seed,
    max_seconds=a.seconds,
    monitor="val",
    lr_schedule=fam.get("lr_schedule"),
)
res = fit(
    det,
    ti,
    loss_fn,
    cfg,
    val=vi,
    parameters=_parameter_groups(det, settings),
    on_epoch=lambda e, t, v: print(
        f"  epoch {e} train {t:.5g} val {v:.5g} ({time.time() - t0:.0f}s)", flush=True
    ),
)
scorer.eval()

from anomalib.models.components.filters import GaussianBlur2d  # noqa: E402 - after training, as run


@torch.no_grad()
def maps_of(fs):
    det.eval()
    out = {"own": [], "nll": []}
    for s in range(0, fs[0].shape[0], 32):
        part = [f[s : s + 32] for f in fs]
        _, _, m = det.predict(part)
        out["own"].append(m)
        if a.family in ("fastflow", "uflow"):
            z, _ = det.latents(part)
            out["nll"].append(latent_nll_map(z, size))
    return {k: torch.cat(v) for k, v in out.items() if v}


val_maps = maps_of([f[n_train:] for f in feats])
syn_maps = maps_of(syn_feats)
blur = GaussianBlur2d(sigma=(4.0, 4.0), channels=1, kernel_size=(33, 33))
labels = np.r_[np.zeros(len(val_p)), np.ones(len(val_p))]
masks = torch.cat([torch.zeros(len(val_p), *size, dtype=torch.bool), syn["masks"]]).numpy().ravel()
kinds = np.array(syn["kinds"])
rows = {}
for mk in val_maps:
    for sig in (0, 4):
        M = torch.cat([val_maps[mk], syn_maps[mk]])
        if sig:
            M = blur(M)
        flat = M.flatten(1)
        k = max(1, flat.shape[1] // 100)
        sc = {"max": flat.max(1).values, "top1": flat.topk(k, 1).values.mean(1)}
        pix = roc_auc_score(masks, M.numpy().ravel())
        for sk, s in sc.items():
            s = s.numpy()
            img = roc_auc_score(labels, s)
            per = {
                kd: roc_auc_score(
                    np.r_[np.zeros(len(val_p)), np.ones((kinds == kd).sum())],
                    np.r_[s[: len(val_p)], s[len(val_p) :][kinds == kd]],
                )
                for kd in ("perlin", "scar")
            }
            rows[f"{mk}/s{sig}/{sk}"] = {
                "img": round(100 * img, 1),
                "pix": round(100 * pix, 1),
                "perlin": round(100 * per["perlin"], 1),
                "scar": round(100 * per["scar"], 1),
            }
summary = {
    "family": a.family,
    "flow": a.flow,
    "size": size,
    "margs": {k: str(v) for k, v in margs.items()},
    "lr": lr,
    "epochs_run": res.epochs_run,
    "stop": res.stop_reason,
    "fit_s": round(res.seconds, 1),
    "feat_s": round(t_feat, 1),
    "best_val": min(res.val_history) if res.val_history else None,
    "variants": rows,
}
print(json.dumps(summary))
with open(RESULTS, "a") as fh:
    fh.write(json.dumps({"tag": a.tag, **summary}) + "\n")
