"""Image AUROC, pixel AUROC and AUPRO with anomalib's metric implementations."""

from __future__ import annotations

import torch


def _unit_range(values: torch.Tensor) -> torch.Tensor:
    """Min-max scale to ``[0, 1]`` (float64 → float32).

    torchmetrics' binary curves treat predictions outside ``[0, 1]`` as logits and apply a
    sigmoid, which saturates for NLL-sized scores and ties them all (AUROC 50). Every metric
    here depends only on the ranking, so this monotone rescaling changes nothing else.
    """
    values = values.double()
    low, high = values.min(), values.max()
    return ((values - low) / (high - low).clamp_min(1e-300)).float()


def image_auroc(scores: torch.Tensor, labels: torch.Tensor) -> float:
    """Area under the ROC curve of image scores against image labels (1 = defective)."""
    from anomalib.metrics.auroc import _AUROC

    metric = _AUROC()
    metric.update(_unit_range(scores.flatten()), labels.long().flatten())
    return float(metric.compute())


def pixel_auroc(maps: torch.Tensor, masks: torch.Tensor) -> float:
    """AUROC over every pixel of every test image (maps ``[N, 1, H, W]`` or ``[N, H, W]``)."""
    return image_auroc(maps.flatten(), masks.flatten())


def aupro(maps: torch.Tensor, masks: torch.Tensor, fpr_limit: float = 0.3) -> float:
    """anomalib's AUPRO (area under the per-region-overlap curve up to ``fpr_limit``), normalised."""
    from anomalib.metrics.aupro import _AUPRO

    metric = _AUPRO(fpr_limit=fpr_limit)
    size = masks.shape[-2:]
    metric.update(_unit_range(maps).reshape(-1, *size), masks.reshape(-1, *size).long())
    return float(metric.compute())


def evaluate(
    scores: torch.Tensor, labels: torch.Tensor, maps: torch.Tensor, masks: torch.Tensor
) -> dict[str, float]:
    """``{"image_auroc", "pixel_auroc", "aupro"}`` in percent."""
    result = {"image_auroc": 100 * image_auroc(scores, labels)}
    if masks.any():
        result["pixel_auroc"] = 100 * pixel_auroc(maps, masks)
        result["aupro"] = 100 * aupro(maps, masks)
    return result
