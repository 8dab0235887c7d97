"""anomalib's folder layout: the same Category as the MVTec layout, clear errors, CLI training."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.image_support import magnetic_tile

pytestmark = pytest.mark.image

DEFECTS = ("blowhole", "crack")
N_NORMAL, N_PER_DEFECT = 10, 3


@pytest.fixture(scope="module")
def folder_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Real Magnetic Tile images copied into anomalib's folder layout; masks named like their image."""
    root = tmp_path_factory.mktemp("folder_layout") / "tiles"
    (root / "good").mkdir(parents=True)
    for path in sorted((magnetic_tile() / "train" / "good").iterdir())[:N_NORMAL]:
        shutil.copy(path, root / "good" / path.name)
    for defect in DEFECTS:
        (root / "defect" / defect).mkdir(parents=True)
        (root / "mask" / defect).mkdir(parents=True)
        for path in sorted((magnetic_tile() / "test" / defect).iterdir())[:N_PER_DEFECT]:
            shutil.copy(path, root / "defect" / defect / path.name)
            mask = magnetic_tile() / "ground_truth" / defect / f"{path.stem}_mask.png"
            shutil.copy(mask, root / "mask" / defect / f"{path.stem}.png")
    return root


def _layout(**changes):  # noqa: ANN003, ANN202
    from training.image.folder import FolderLayout

    values = {
        "normal_dir": "good",
        "abnormal_dirs": tuple(f"defect/{d}" for d in DEFECTS),
        "mask_dirs": tuple(f"mask/{d}" for d in DEFECTS),
    }
    return FolderLayout(**{**values, **changes})


def test_folder_layout_gives_a_category_split_like_anomalib(folder_root: Path) -> None:
    from anomalib.data import Folder

    from training.image.data import load_category

    category = load_category(folder_root, _layout())
    normal = {p.resolve() for p in (folder_root / "good").iterdir()}
    good_test = [p for p, label in zip(category.test, category.test_labels, strict=True) if label == 0]
    # 20 % of the 10 normal images become test-good; the rest train; no image is in both.
    assert len(category.train) == 8 and len(good_test) == 2
    assert set(category.train) | set(good_test) == normal
    assert not set(category.train) & set(good_test)
    assert sum(category.test_labels) == len(DEFECTS) * N_PER_DEFECT
    for path, label, mask in zip(category.test, category.test_labels, category.test_masks, strict=True):
        if label:
            assert path.parent.parent.name == "defect" and mask is not None
            assert mask.stem == path.stem and mask.parent.name == path.parent.name
        else:
            assert mask is None and path.parent.name == "good"
    # The split is seeded: the same seed gives the same split, another seed another one.
    assert load_category(folder_root, _layout()) == category
    other = load_category(folder_root, _layout(split_seed=1))
    assert set(other.train) != set(category.train) and len(other.train) == 8
    # It is exactly the split of anomalib's Folder datamodule with the same seed.
    datamodule = Folder(
        name="tiles",
        root=folder_root,
        normal_dir="good",
        abnormal_dir=[f"defect/{d}" for d in DEFECTS],
        mask_dir=[f"mask/{d}" for d in DEFECTS],
        val_split_mode="none",
        seed=0,
        num_workers=0,
    )
    datamodule.setup()
    assert sorted(datamodule.train_data.samples.image_path) == [str(p) for p in category.train]
    assert list(datamodule.test_data.samples.image_path) == [str(p) for p in category.test]


def test_normal_test_dir_replaces_the_split(folder_root: Path, tmp_path: Path) -> None:
    from training.image.data import load_category

    root = tmp_path / "tiles"
    shutil.copytree(folder_root, root)
    (root / "good_test").mkdir()
    for path in sorted((magnetic_tile() / "test" / "good").iterdir())[:4]:
        shutil.copy(path, root / "good_test" / path.name)
    category = load_category(root, _layout(mask_dirs=(), normal_test_dir=str(root / "good_test")))
    assert len(category.train) == N_NORMAL  # every normal image trains
    good_test = [p for p, label in zip(category.test, category.test_labels, strict=True) if label == 0]
    assert sorted(p.parent.name for p in good_test) == ["good_test"] * 4
    assert all(mask is None for mask in category.test_masks)  # no --mask-dir: no masks


def test_bad_folders_name_their_option(folder_root: Path, tmp_path: Path) -> None:
    from training.image.data import load_category

    with pytest.raises(FileNotFoundError, match="--normal-dir: no folder at"):
        load_category(folder_root, _layout(normal_dir="nope"))
    with pytest.raises(FileNotFoundError, match="--abnormal-dir: no folder at"):
        load_category(folder_root, _layout(abnormal_dirs=("defect/blowhole", "defect/nope")))
    with pytest.raises(ValueError, match="--mask-dir: 3 masks for 6 abnormal images"):
        load_category(folder_root, _layout(mask_dirs=("mask/blowhole",)))
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="--normal-test-dir: .* holds no images"):
        load_category(folder_root, _layout(normal_test_dir=str(tmp_path / "empty")))
    with pytest.raises(ValueError, match="--normal-split-ratio"):
        load_category(folder_root, _layout(normal_split_ratio=1.0))


def _cli(*args: str) -> int:
    from training.cli import main

    return main(["train", "image", "--model", "fastflow", "--flow", "usf", *args])


def test_cli_layout_options_are_checked(folder_root: Path, tmp_path: Path, capsys) -> None:  # noqa: ANN001
    out = str(tmp_path / "run")
    assert _cli("--data", str(folder_root), "--out", out, "--layout", "folder") == 2
    assert "--normal-dir" in capsys.readouterr().err
    assert _cli("--data", str(folder_root), "--out", out, "--layout", "mvtec", "--normal-dir", "good") == 2
    assert "--normal-dir belongs to the folder layout" in capsys.readouterr().err
    assert _cli("--data", str(folder_root), "--out", out) == 2  # auto: no --normal-dir means MVTec
    assert "--layout folder" in capsys.readouterr().err


def test_cli_trains_on_a_folder_layout(folder_root: Path, tmp_path: Path, capsys) -> None:  # noqa: ANN001
    out = tmp_path / "run"
    code = _cli(
        "--data",
        str(folder_root),
        "--normal-dir",
        "good",
        "--abnormal-dir",
        "defect/blowhole,defect/crack",
        "--mask-dir",
        "mask/blowhole, mask/crack",
        "--out",
        str(out),
        "--epochs",
        "1",
        "--input-size",
        "64x96",
        "--profile",
        "cpu",
    )
    assert code == 0, capsys.readouterr().err
    run = json.loads((out / "run.json").read_text())
    assert run["settings"]["folder_layout"]["normal_dir"] == "good"
    assert run["settings"]["folder_layout"]["mask_dirs"] == ["mask/blowhole", "mask/crack"]
    data = run["training_data"]
    assert data["rows"] + data["validation_rows"] + data["calibration_rows"] == 8
    assert run["metrics"]["test_images"] == 8
    for metric in ("image_auroc", "pixel_auroc", "aupro"):
        assert 0 <= run["metrics"][metric] <= 100
    assert run["fit"]["epochs_run"] == 1 and not run["fit"]["failed"]


def test_bench_runs_on_a_folder_layout(folder_root: Path, tmp_path: Path) -> None:
    from training.cli import main

    out = tmp_path / "bench"
    folder = ["--normal-dir", "good", "--abnormal-dir", "defect/blowhole,defect/crack"]
    tiny = ["--epochs", "1", "--input-size", "64x96", "--profile", "cpu", "--seeds", "1", "--no-references"]
    args = ["bench", "image", "--data-dir", str(folder_root), "--out", str(out), "--models", "fastflow"]
    assert main([*args, "--flows", "usf", *folder, *tiny]) == 0
    run = json.loads((out / "runs" / "tiles" / "fastflow-usf" / "seed0" / "run.json").read_text())
    assert run["settings"]["folder_layout"]["abnormal_dirs"] == ["defect/blowhole", "defect/crack"]
    assert run["metrics"]["test_images"] == 8
    assert list((out / "overlays").glob("tiles_fastflow-usf_*.png"))  # overlays read the folder layout
