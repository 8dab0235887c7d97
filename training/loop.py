"""A small training loop for models on tensors, reused by every trainer in usfad.

One optimizer for the whole run, an optional per-step learning-rate schedule, gradient-norm
clipping, early stopping when the epoch loss has not improved by more than ``min_delta`` for
``patience`` epochs, and a run that produces a non-finite loss is stopped and reported as failed
(never silently retried).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, fields
from typing import Any

import torch
from torch import nn

from training import progress

LossFn = Callable[[nn.Module, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class LinearLRSchedule:
    """Per-step learning-rate factor going linearly from ``start_factor`` to ``end_factor``.

    torch's ``LinearLR`` stepped after every optimizer step: after ``total_steps`` steps every
    parameter group's rate is its initial rate times ``end_factor``, and stays there.
    """

    start_factor: float
    end_factor: float
    total_steps: int

    def build(self, optimizer: torch.optim.Optimizer) -> torch.optim.lr_scheduler.LRScheduler:
        """The torch scheduler for ``optimizer``."""
        return torch.optim.lr_scheduler.LinearLR(
            optimizer,
            start_factor=self.start_factor,
            end_factor=self.end_factor,
            total_iters=self.total_steps,
        )


@dataclass
class Optimisation:
    """The optimisation knobs every training command shares (defaults: the paper's tabular flows).

    ``FitConfig``, the tabular ``TrainingSettings`` and the image ``ImageTrainSettings`` (with its
    own defaults) extend it; the settings reach ``fit`` via ``FitConfig.from_settings``.
    """

    epochs: int = 200
    batch_size: int = 64
    lr: float = 1e-4
    weight_decay: float = 0.0
    patience: int = 5
    min_delta: float = 1e-4
    max_seconds: float | None = None  # optional time budget of one fit


@dataclass
class FitConfig(Optimisation):
    """Hyper-parameters of :func:`fit`: the shared :class:`Optimisation` plus these."""

    grad_clip: float | None = 10.0
    seed: int = 0
    device: str = "cpu"
    monitor: str = "train"  # "train" or "val": which epoch loss drives early stopping
    lr_schedule: LinearLRSchedule | None = None  # None: constant learning rate

    @classmethod
    def from_settings(cls, settings: object, **overrides: Any) -> FitConfig:
        """One stage's config from a command's settings: same-named fields, then ``overrides``.

        The tabular ``TrainingSettings`` and the image ``ImageTrainSettings`` carry the knobs of
        their commands; this is the one place their shared fields become a ``FitConfig``.
        """
        shared = {f.name: getattr(settings, f.name) for f in fields(cls) if hasattr(settings, f.name)}
        return cls(**{**shared, **overrides})


@dataclass
class FitResult:
    """What happened during :func:`fit`."""

    epochs_run: int = 0
    best_loss: float = math.inf
    train_history: list[float] = field(default_factory=list)
    val_history: list[float] = field(default_factory=list)
    stop_reason: str = "max_epochs"
    failed: bool = False
    seconds: float = 0.0
    steps: int = 0  # optimizer steps taken
    lr_history: list[float] = field(default_factory=list)  # first group's rate after each epoch


def _batches(data: torch.Tensor, batch_size: int, generator: torch.Generator) -> Iterable[torch.Tensor]:
    order = torch.randperm(data.shape[0], generator=generator)
    for start in range(0, data.shape[0], batch_size):
        yield data[order[start : start + batch_size]]


@torch.no_grad()
def evaluate_loss(model: nn.Module, data: torch.Tensor, loss_fn: LossFn, batch_size: int = 1024) -> float:
    """Mean of ``loss_fn`` over ``data`` in eval mode (weighted by batch size)."""
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    for start in range(0, data.shape[0], batch_size):
        batch = data[start : start + batch_size]
        total += float(loss_fn(model, batch)) * batch.shape[0]
        count += batch.shape[0]
    model.train(was_training)
    return total / max(count, 1)


def fit(
    model: nn.Module,
    train: torch.Tensor,
    loss_fn: LossFn,
    config: FitConfig,
    val: torch.Tensor | None = None,
    parameters: Iterable[nn.Parameter] | list[dict] | None = None,
    on_epoch: Callable[[int, float, float | None], None] | None = None,
) -> FitResult:
    """Train ``model`` with Adam on mini-batches of ``train``; restores the best weights.

    ``loss_fn(model, batch)`` returns a scalar. ``parameters`` may be parameter groups (for
    example LU factors with their own, smaller learning rate).
    """
    torch.manual_seed(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    model.to(config.device)
    train = train.to(config.device)
    val = val.to(config.device) if val is not None else None
    optimizer = torch.optim.Adam(
        parameters if parameters is not None else model.parameters(),
        lr=config.lr,
        weight_decay=config.weight_decay,
        # One fused kernel per step instead of a Python loop over parameters: about a quarter
        # of a tabular flow's CPU step time at batch 64 (measured with torch.profiler).
        fused=True,
    )
    scheduler = config.lr_schedule.build(optimizer) if config.lr_schedule is not None else None
    result = FitResult()
    best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    epochs_without_improvement = 0
    started = time.perf_counter()
    model.train()
    epochs_bar = progress.bar(config.epochs, "fit", unit="epoch", leave=False)
    for epoch in range(config.epochs):
        total, count = 0.0, 0
        for batch in _batches(train, config.batch_size, generator):
            loss = loss_fn(model, batch)
            if not torch.isfinite(loss):
                result.failed, result.stop_reason = True, f"non-finite loss at epoch {epoch + 1}"
                break
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if config.grad_clip is not None:
                nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
            optimizer.step()
            result.steps += 1
            if scheduler is not None:
                scheduler.step()
            total += float(loss.detach()) * batch.shape[0]
            count += batch.shape[0]
        if result.failed:
            break
        train_loss = total / max(count, 1)
        val_loss = evaluate_loss(model, val, loss_fn) if val is not None else None
        result.train_history.append(train_loss)
        if val_loss is not None:
            result.val_history.append(val_loss)
        result.epochs_run = epoch + 1
        result.lr_history.append(float(optimizer.param_groups[0]["lr"]))
        if on_epoch is not None:
            on_epoch(epoch + 1, train_loss, val_loss)
        epochs_bar.update(1)
        shown = f"loss {train_loss:.4g}" + (f", val {val_loss:.4g}" if val_loss is not None else "")
        epochs_bar.set_postfix_str(shown, refresh=False)
        monitored = val_loss if (config.monitor == "val" and val_loss is not None) else train_loss
        if not math.isfinite(monitored):
            result.failed, result.stop_reason = True, f"non-finite loss at epoch {epoch + 1}"
            break
        if monitored < result.best_loss - config.min_delta:
            result.best_loss = monitored
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            epochs_without_improvement = 0
        else:
            epochs_without_improvement += 1
            if epochs_without_improvement >= config.patience:
                result.stop_reason = (
                    f"early stop: no {config.monitor} improvement > {config.min_delta:g} "
                    f"for {config.patience} epochs"
                )
                break
        if config.max_seconds is not None and time.perf_counter() - started > config.max_seconds:
            result.stop_reason = f"time budget of {config.max_seconds:g}s reached"
            break
    epochs_bar.close()
    if not result.failed:
        model.load_state_dict(best_state)
    result.seconds = time.perf_counter() - started
    model.eval()
    return result
