"""One door into timm's ``VisionTransformer`` for the methods that work on its tokens.

iBOT hides masked patch embeddings before positions are added, MAE encodes only the visible
tokens, and attention maps (a later stage) need the input of the last block. Each of them
needs the steps of timm's ``VisionTransformer.forward_features`` one at a time, which timm
does not expose as an API; this module is the only place in sslray that follows those steps
(timm 1.0.31: ``patch_embed``, ``_pos_embed``, ``patch_drop``, ``norm_pre``, ``blocks``,
``norm``), so a timm upgrade is checked against one file and its test.

The pieces, in forward order::

    tokens = vit.tokens(x, mask, mask_embedding)   # (B, prefix + L, D): patches, positions
    x = vit.block_input(tokens, keep_indices)      # drop/keep patch tokens, norm_pre
    x = vit.forward_blocks(x, stop)                # blocks[:stop]; stop=-1 leaves the last
    x = vit.norm(x)                                #   block to run by hand (its attention)
    pooled = vit.forward_head(x)                   # the backbone's own pooling

``forward_tokens`` runs the middle three; with nothing masked or dropped,
``forward_tokens(tokens(x))`` is timm's ``forward_features(x)``. Plain torch and timm: no Ray.
"""

from __future__ import annotations

import torch
from timm.models import checkpoint_seq
from timm.models.vision_transformer import VisionTransformer
from torch import nn


def patch_grid(model: nn.Module, size: tuple[int, int]) -> tuple[int, int]:
    """The (rows, columns) patch grid an (H, W) input gives, as the model's ``patch_embed`` computes it.

    Works for any timm model with a ``PatchEmbed`` (ViT, DeiT, EVA...), not only
    ``VisionTransformer``: VICRegL lays out the patch tokens of any of them on this grid.
    """
    h, w = model.patch_embed.dynamic_feat_size(tuple(size))
    return int(h), int(w)


def num_prefix_tokens(model: nn.Module) -> int:
    """How many class/register tokens come before the patch tokens (0 for models without any)."""
    return int(getattr(model, "num_prefix_tokens", 0))


def select_tokens(tokens: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """(B, L, D) tokens at (B, K) indices -> (B, K, D), in the order of ``index``."""
    return torch.gather(tokens, 1, index.unsqueeze(-1).expand(-1, -1, tokens.shape[-1]))


def replace_masked(patches: torch.Tensor, mask: torch.Tensor, embedding: torch.Tensor) -> torch.Tensor:
    """Patch embeddings (B, ..., D) with ``embedding`` (D,) wherever ``mask`` (B, L) is True.

    ``torch.where`` keeps ``embedding`` in the graph even when nothing is masked, so it gets
    a (zero) gradient every step, as DDP needs of every trainable parameter.
    """
    masked = mask.reshape(patches.shape[:-1]).unsqueeze(-1)
    return torch.where(masked, embedding.to(patches.dtype), patches)


class ViTAdapter:
    """The steps of a timm ``VisionTransformer``'s forward, callable one at a time.

    A view on ``model``, not a module: it holds no parameters, so wrapping a backbone
    changes neither its state dict nor what an optimizer or DDP sees.
    """

    def __init__(self, model: nn.Module) -> None:
        if not isinstance(model, VisionTransformer):
            raise TypeError(f"ViTAdapter needs a timm VisionTransformer, got {type(model).__name__}")
        self.model = model

    @property
    def num_prefix_tokens(self) -> int:
        return int(self.model.num_prefix_tokens)

    @property
    def patch_size(self) -> tuple[int, int]:
        ph, pw = self.model.patch_embed.patch_size
        return int(ph), int(pw)

    @property
    def img_size(self) -> tuple[int, int] | None:
        """The input size the position embeddings were built for (None when timm was given none)."""
        size = self.model.patch_embed.img_size
        return (int(size[0]), int(size[1])) if size else None

    @property
    def in_chans(self) -> int:
        return int(self.model.patch_embed.proj.in_channels)

    @property
    def blocks(self) -> nn.Sequential:
        """The transformer blocks; each has ``norm1`` and ``attn`` for attention maps."""
        return self.model.blocks

    def patch_grid(self, size: tuple[int, int]) -> tuple[int, int]:
        return patch_grid(self.model, size)

    def tokens(self, x: torch.Tensor, mask: torch.Tensor | None = None,
               mask_embedding: torch.Tensor | None = None) -> torch.Tensor:
        """Images (B, C, H, W) -> tokens (B, prefix + L, D): patch embedding, then prefix and positions.

        With ``mask`` (B, L), masked patch embeddings are replaced by ``mask_embedding``
        before positions are added (iBOT, BEiT), so a masked patch keeps its place but
        loses its content.
        """
        patches = self.model.patch_embed(x)  # (B, H, W, D) with dynamic_img_size, else (B, L, D)
        if mask is not None:
            if mask_embedding is None:
                raise ValueError("ViTAdapter.tokens: a mask needs a mask_embedding")
            patches = replace_masked(patches, mask, mask_embedding)
        return self.model._pos_embed(patches)

    def block_input(self, tokens: torch.Tensor, keep_indices: torch.Tensor | None = None) -> torch.Tensor:
        """Tokens -> the input of the first block (``norm_pre`` applied).

        ``keep_indices`` (B, K) keeps those patch tokens, in that order, with every prefix
        token (MAE's visible patches); timm's own ``patch_drop`` then does not run, the
        caller having chosen the tokens. Without it, ``patch_drop`` runs as in timm.
        """
        if keep_indices is None:
            x = self.model.patch_drop(tokens)
        else:
            n_prefix = self.num_prefix_tokens
            kept = select_tokens(tokens[:, n_prefix:], keep_indices)
            x = torch.cat([tokens[:, :n_prefix], kept], dim=1)
        return self.model.norm_pre(x)

    def forward_blocks(self, x: torch.Tensor, stop: int | None = None) -> torch.Tensor:
        """``x`` through ``blocks[:stop]`` (all of them by default), with timm's gradient checkpointing."""
        blocks = self.model.blocks if stop is None else self.model.blocks[:stop]
        if self.model.grad_checkpointing and not torch.jit.is_scripting():
            return checkpoint_seq(blocks, x)
        return blocks(x)

    def norm(self, x: torch.Tensor) -> torch.Tensor:
        """The final norm (the identity for avg-pooled ViTs, whose norm is ``fc_norm`` in the head)."""
        return self.model.norm(x)

    def forward_tokens(self, tokens: torch.Tensor, keep_indices: torch.Tensor | None = None) -> torch.Tensor:
        """Tokens -> encoded tokens (B, prefix + K, D): block input, every block, final norm."""
        return self.norm(self.forward_blocks(self.block_input(tokens, keep_indices)))

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """timm's ``forward_features``, assembled from the steps above."""
        return self.forward_tokens(self.tokens(x))

    def forward_head(self, tokens: torch.Tensor, pre_logits: bool = True) -> torch.Tensor:
        """The backbone's own pooling (class token or patch mean, ``fc_norm``) of encoded tokens."""
        return self.model.forward_head(tokens, pre_logits=pre_logits)
