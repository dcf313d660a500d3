"""Attention computed as transformers 4.31 computed it for the original LISA, registered with current transformers.

Current transformers default to fused SDPA kernels and, in their eager path, scale and upcast slightly differently;
in float32 the results agree to ~1e-7, in bf16/fp16 they round differently. These two functions restate 4.31's
arithmetic so a bf16 model takes the same roundings as the original:

- LLaMA (`LlamaAttention`, 4.31): `(q @ k^T) / sqrt(head_dim)`, + the additive causal/padding mask, softmax in
  float32, cast back to the model dtype, `@ v`.
- CLIP (`CLIPAttention`, 4.31): `q * head_dim^-0.5` before the product, `q @ k^T`, softmax in the model dtype, `@ v`.

Both use transformers' additive (eager) masks. `LLAMA_ATTENTION` / `CLIP_ATTENTION` are the names to put in a
config's `attn_implementation`.
"""
from __future__ import annotations

import math

import torch
from torch import nn

LLAMA_ATTENTION = "lisa_llama_431"
CLIP_ATTENTION = "lisa_clip_431"


def llama_attention(module: nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                    attention_mask: torch.Tensor | None, scaling: float, dropout: float = 0.0, **_):
    groups = query.shape[1] // key.shape[1]
    if groups > 1:  # grouped-query attention: 4.31's repeat_kv
        key, value = key.repeat_interleave(groups, dim=1), value.repeat_interleave(groups, dim=1)
    weights = torch.matmul(query, key.transpose(2, 3)) / math.sqrt(query.shape[-1])
    if attention_mask is not None:
        weights = weights + attention_mask[:, :, :, :key.shape[-2]]
    weights = nn.functional.softmax(weights, dim=-1, dtype=torch.float32).to(query.dtype)
    weights = nn.functional.dropout(weights, p=dropout, training=module.training)
    return torch.matmul(weights, value).transpose(1, 2).contiguous(), weights


def clip_attention(module: nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                   attention_mask: torch.Tensor | None, scaling: float, dropout: float = 0.0, **_):
    weights = torch.matmul(query * scaling, key.transpose(-1, -2))
    if attention_mask is not None:
        weights = weights + attention_mask
    weights = nn.functional.softmax(weights, dim=-1)
    weights = nn.functional.dropout(weights, p=dropout, training=module.training)
    return torch.matmul(weights, value).transpose(1, 2).contiguous(), weights


def register() -> None:
    """Make both names known to transformers (idempotent)."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, eager_mask

    for name, function in ((LLAMA_ATTENTION, llama_attention), (CLIP_ATTENTION, clip_attention)):
        AttentionInterface.register(name, function)
        AttentionMaskInterface.register(name, eager_mask)
