"""PaDiM / PatchCore on the same held-out good + synthetic set as selection.py (calibrates the proxy).

PYTHONPATH=. python benchmarks/image_selection/reference.py --name padim --long-side 256
"""

import argparse
import json
import os
import sys
import time

import numpy as np
import torch

sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[2]))
from pathlib import Path

from sklearn.metrics import roc_auc_score

from models.image.backbone import BackboneSpec
from training.image.data import load_category, load_images, split_train_validation, typical_geometry
from training.image.reference import PATCHCORE_SAMPLING_RATIO, _build, _normalize

CACHE = os.environ.get("SELECTION_CACHE", "selection-cache")  # features + synthetic sets
RESULTS = os.environ.get("SELECTION_RESULTS", "selection-results.jsonl")
ap = argparse.ArgumentParser()
ap.add_argument("--name", default="padim")
ap.add_argument("--long-side", type=int, default=128)
ap.add_argument("--data", default="/work/shared/data/images/magnetic_tile")
ap.add_argument("--seed", type=int, default=0)
a = ap.parse_args()
torch.set_num_threads(2)
cat = load_category(a.data)
train_p, val_p = split_train_validation(cat.train, 0.15, a.seed)
size = typical_geometry(cat.train, a.long_side, 32)
syn = torch.load(Path(CACHE) / f"synth_{a.data.replace('/', '_')}_{size[0]}x{size[1]}_s{a.seed}.pt")
torch.manual_seed(a.seed)
model = _build(a.name, BackboneSpec(), "cpu")
t0 = time.time()
model.train()
emb = []
with torch.no_grad():
    for s in range(0, len(train_p), 32):
        emb.append(model(_normalize(load_images(train_p[s : s + 32], size))))
if a.name == "padim":
    model.fit()
else:
    model.subsample_embedding(PATCHCORE_SAMPLING_RATIO["cpu"], torch.cat(emb))
model.eval()
imgs = torch.cat([load_images(val_p, size), syn["images"]])
sc, mp = [], []
with torch.no_grad():
    for s in range(0, len(imgs), 32):
        b = model(_normalize(imgs[s : s + 32]))
        sc.append(b.pred_score.flatten())
        mp.append(b.anomaly_map.reshape(-1, *size))
sc = torch.cat(sc).numpy()
mp = torch.cat(mp).numpy()
n = len(val_p)
labels = np.r_[np.zeros(n), np.ones(n)]
kinds = np.array(syn["kinds"])
masks = np.concatenate([np.zeros((n, *size), bool), syn["masks"].numpy()])
res = {
    "tag": f"ref-{a.name}",
    "family": a.name,
    "size": size,
    "fit_s": round(time.time() - t0, 1),
    "variants": {
        "own": {
            "img": round(100 * roc_auc_score(labels, sc), 1),
            "pix": round(100 * roc_auc_score(masks.ravel(), mp.ravel()), 1),
            **{
                k: round(
                    100
                    * roc_auc_score(
                        np.r_[np.zeros(n), np.ones((kinds == k).sum())], np.r_[sc[:n], sc[n:][kinds == k]]
                    ),
                    1,
                )
                for k in ("perlin", "scar")
            },
        }
    },
}
print(json.dumps(res))
with open(RESULTS, "a") as fh:
    fh.write(json.dumps(res) + "\n")
