import torch

from reasonseg.lisa.loss import LossWeights, lisa_loss


def _restated(logits, labels, mask_logits, masks):
    """docs/protocol.md §5 written out directly, loop by loop."""
    ce_terms = []
    for n in range(labels.shape[0]):
        for t in range(labels.shape[1] - 1):
            if labels[n, t + 1] != -100:
                ce_terms.append(-torch.log_softmax(logits[n, t].double(), -1)[labels[n, t + 1]])
    ce = torch.stack(ce_terms).mean()
    bce_total, dice_total, count = 0.0, 0.0, 0
    for pred, gt in zip(mask_logits, masks, strict=True):
        for x, y in zip(pred.double(), gt.double(), strict=True):
            p = torch.sigmoid(x)
            bce_total += (-(y * torch.log(p) + (1 - y) * torch.log(1 - p))).mean()
            numerator = 2 * (p / 1000 * y).sum()
            denominator = (p / 1000).sum() + (y / 1000).sum()
            dice_total += 1 - (numerator + 1e-6) / (denominator + 1e-6)
            count += 1
    bce = bce_total / (count + 1e-8)
    dice = dice_total / (count + 1e-8)
    return 1.0 * ce + 2.0 * bce + 0.5 * dice, ce, bce, dice


def test_loss_matches_the_protocol_restatement():
    g = torch.Generator().manual_seed(3)
    logits = torch.randn(3, 9, 17, generator=g)
    labels = torch.randint(0, 17, (3, 9), generator=g)
    labels[torch.rand(3, 9, generator=g) < 0.5] = -100
    labels[0, 1] = 4
    mask_logits = [torch.randn(2, 11, 13, generator=g) * 3, torch.randn(0, 5, 5), torch.randn(1, 7, 6, generator=g)]
    masks = [(torch.rand(2, 11, 13, generator=g) > 0.6).float(), torch.zeros(0, 5, 5),
             (torch.rand(1, 7, 6, generator=g) > 0.3).float()]
    got = lisa_loss(logits, labels, mask_logits, masks)
    total, ce, bce, dice = _restated(logits, labels, mask_logits, masks)
    assert torch.allclose(got["ce"].double(), ce, rtol=1e-5)
    assert torch.allclose(got["bce"].double(), bce, rtol=1e-5)
    assert torch.allclose(got["dice"].double(), dice, rtol=1e-5)
    assert torch.allclose(got["loss"].double(), total, rtol=1e-5)
    weighted = lisa_loss(logits, labels, mask_logits, masks, LossWeights(ce=0.0, bce=1.0, dice=0.0))
    assert torch.allclose(weighted["loss"].double(), bce, rtol=1e-5)


def test_no_masks_leaves_only_the_token_loss():
    logits = torch.randn(1, 4, 5)
    labels = torch.tensor([[-100, 1, 2, -100]])
    got = lisa_loss(logits, labels, [torch.zeros(0, 3, 3)], [torch.zeros(0, 3, 3)])
    assert float(got["bce"]) == 0.0 and float(got["dice"]) == 0.0
    assert torch.allclose(got["loss"], got["ce"])
