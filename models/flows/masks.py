"""Binary masks for masked coupling layers, for vectors (d,) and images (C, H, W).

A mask ``m`` selects the entries a coupling layer keeps fixed (``m = 1``) and feeds to its
conditioner; the other entries (``1 - m``) are transformed.
"""

from __future__ import annotations

from typing import Literal

import torch

MaskKind = Literal["checkerboard", "alternating", "channel"]
MASK_KINDS: tuple[str, ...] = ("checkerboard", "alternating", "channel")


def make_mask(shape: tuple[int, ...], kind: MaskKind = "alternating", parity: int = 0) -> torch.Tensor:
    """Return a {0, 1} float mask of ``shape`` ((d,) or (C, H, W)).

    - ``alternating``: every other feature (vectors) or every other channel (images);
    - ``checkerboard``: (i + j) mod 2 over the spatial grid, the same for every channel
      (images); for vectors it equals ``alternating``;
    - ``channel``: the first half of the features / channels.

    ``parity`` (0 or 1) flips the mask, so consecutive layers transform complementary parts.
    """
    if kind not in MASK_KINDS:
        raise ValueError(f"unknown mask kind {kind!r}; expected one of {MASK_KINDS}")
    if len(shape) not in (1, 3):
        raise ValueError(f"mask shape must be (d,) or (C, H, W), got {shape}")
    features = shape[0]
    if kind == "checkerboard" and len(shape) == 3:
        h, w = shape[1], shape[2]
        grid = (torch.arange(h)[:, None] + torch.arange(w)[None, :]) % 2
        mask = grid.expand(features, h, w).clone()
    else:
        index = torch.arange(features)
        mask = (index < features // 2).long() if kind == "channel" else index % 2
        mask = mask.view(features, *([1] * (len(shape) - 1))).expand(*shape).clone()
    mask = mask.float()
    if parity % 2 == 1:
        mask = 1.0 - mask
    if mask.sum() == 0 or mask.sum() == mask.numel():
        raise ValueError(f"mask {kind!r} of shape {shape} would leave no entry to condition on")
    return mask
