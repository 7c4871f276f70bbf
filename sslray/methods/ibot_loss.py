"""iBOT's masked-patch loss: self-distillation on the patches the student could not see.

Zhou et al., "iBOT: Image BERT Pre-Training with Online Tokenizer", ICLR 2022
(arXiv:2111.07832); the reduction follows the reference implementation
(github.com/bytedance/ibot, ``main_ibot.py``, ``iBOTLoss``). A pure function of logits,
masks and the centre, so it is tested on hand-made tensors; the class-token term is
:func:`sslray.methods.dino.dino_loss`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def ibot_patch_loss(
    student_patch_logits: list[torch.Tensor],
    teacher_patch_logits: list[torch.Tensor],
    masks: list[torch.Tensor],
    center: torch.Tensor,
    student_temp: float,
    teacher_temp: float,
) -> torch.Tensor:
    """Masked-patch self-distillation, averaged over global views.

    For each global view ``v`` (lists of (B, L, K) logits and (B, L) boolean masks): the
    cross-entropy between the teacher's centred, sharpened distribution and the student's,
    summed over the masked patches of each image and divided by that image's masked count
    (at least 1), then averaged over the batch. As in the reference implementation, an
    image with no masked patch contributes 0 and still counts in the batch mean, so the
    patch term scales with the fraction of masked crops. Only the student is differentiated.
    """
    total = student_patch_logits[0].new_zeros(())
    for s, t, m in zip(student_patch_logits, teacher_patch_logits, masks, strict=True):
        target = F.softmax((t - center) / teacher_temp, dim=-1).detach()
        per_patch = torch.sum(-target * F.log_softmax(s / student_temp, dim=-1), dim=-1)  # (B, L)
        m = m.to(per_patch.dtype)
        per_image = (per_patch * m).sum(-1) / m.sum(-1).clamp(min=1.0)
        total = total + per_image.mean()
    return total / len(student_patch_logits)
