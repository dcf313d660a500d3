"""LISA's training loss (docs/protocol.md §5): 1.0 x next-token CE + 2.0 x BCE + 0.5 x Dice.

CE: mean over the assistant's tokens of the whole batch (labels shifted by one; IGNORE_INDEX elsewhere), in fp32.
BCE: per mask, the mean over its pixels of the sigmoid cross-entropy. Dice: per mask, on sigmoid probabilities with
numerator and denominator sums scaled by 1/1000 and eps 1e-6. Both mask terms: sum over every mask of the batch
divided by (number of masks + 1e-8), at the original image resolution.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

CE_WEIGHT, BCE_WEIGHT, DICE_WEIGHT = 1.0, 2.0, 0.5
DICE_SCALE, DICE_EPS, COUNT_EPS = 1000.0, 1e-6, 1e-8


@dataclass(frozen=True)
class LossWeights:
    ce: float = CE_WEIGHT
    bce: float = BCE_WEIGHT
    dice: float = DICE_WEIGHT


def token_ce(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    shifted_logits = logits[:, :-1].float().reshape(-1, logits.shape[-1])
    shifted_labels = labels[:, 1:].reshape(-1)
    if not bool((shifted_labels != -100).any()):
        return logits.sum() * 0.0
    return F.cross_entropy(shifted_logits, shifted_labels, ignore_index=-100)


def mask_bce(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """k: the mean pixel sigmoid cross-entropy of each of k masks."""
    loss = F.binary_cross_entropy_with_logits(logits.float(), target.float(), reduction="none")
    return loss.flatten(1).mean(1)


def mask_dice(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """k: 1 - (2 sum(p t) + eps) / (sum p + sum t + eps), with p and t scaled by 1/1000 inside the sums."""
    p = logits.float().sigmoid().flatten(1) / DICE_SCALE
    t = target.float().flatten(1) / DICE_SCALE
    numerator = 2 * (p * target.float().flatten(1)).sum(-1)
    denominator = p.sum(-1) + t.sum(-1)
    return 1 - (numerator + DICE_EPS) / (denominator + DICE_EPS)


def lisa_loss(logits: torch.Tensor, labels: torch.Tensor, mask_logits: list[torch.Tensor],
              masks: list[torch.Tensor], weights: LossWeights = LossWeights()) -> dict[str, torch.Tensor]:
    """{"loss", "ce", "bce", "dice"} (the last three unweighted) for one batch."""
    ce = token_ce(logits, labels)
    bce_sum = logits.new_zeros((), dtype=torch.float32)
    dice_sum = logits.new_zeros((), dtype=torch.float32)
    n_masks = 0
    for pred, gt in zip(mask_logits, masks, strict=True):
        if pred.shape != gt.shape:
            raise ValueError(f"{pred.shape[0]} predicted masks of size {tuple(pred.shape[1:])} for "
                             f"{gt.shape[0]} targets of size {tuple(gt.shape[1:])}")
        if gt.shape[0] == 0:
            continue
        bce_sum = bce_sum + mask_bce(pred, gt).sum()
        dice_sum = dice_sum + mask_dice(pred, gt).sum()
        n_masks += gt.shape[0]
    bce = bce_sum / (n_masks + COUNT_EPS)
    dice = dice_sum / (n_masks + COUNT_EPS)
    total = weights.ce * ce + weights.bce * bce + weights.dice * dice
    return {"loss": total, "ce": ce.detach(), "bce": bce.detach(), "dice": dice.detach()}
