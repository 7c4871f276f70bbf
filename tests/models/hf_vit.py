"""timm ViT weights renamed into Hugging Face ``ViTModel``'s names: the layout Phikon is published in
(transformers 4) or the one transformers 5 saves, written out by hand as the reference for the
mapping in sslray.models.layouts."""

import torch

V4_BLOCK = {"norm1": "layernorm_before", "attn.proj": "attention.output.dense", "norm2": "layernorm_after",
            "mlp.fc1": "intermediate.dense", "mlp.fc2": "output.dense"}
V5_BLOCK = {"norm1": "layernorm_before", "attn.proj": "attention.o_proj", "norm2": "layernorm_after",
            "mlp.fc1": "mlp.fc1", "mlp.fc2": "mlp.fc2"}


def timm_to_hf(state: dict[str, torch.Tensor], version: int = 4) -> dict[str, torch.Tensor]:
    """The inverse of sslray's mapping, with Hugging Face's pooler (which sslray drops)."""
    dim = state["cls_token"].shape[-1]
    hf = {"embeddings.cls_token": state["cls_token"], "embeddings.position_embeddings": state["pos_embed"],
          "embeddings.patch_embeddings.projection.weight": state["patch_embed.proj.weight"],
          "embeddings.patch_embeddings.projection.bias": state["patch_embed.proj.bias"],
          "layernorm.weight": state["norm.weight"], "layernorm.bias": state["norm.bias"],
          "pooler.dense.weight": torch.zeros(dim, dim), "pooler.dense.bias": torch.zeros(dim)}
    layer, names = ("encoder.layer", V4_BLOCK) if version == 4 else ("layers", V5_BLOCK)
    qkv = ("attention.attention.query", "attention.attention.key", "attention.attention.value") if version == 4 \
        else ("attention.q_proj", "attention.k_proj", "attention.v_proj")
    for i in sorted({int(k.split(".")[1]) for k in state if k.startswith("blocks.")}):
        for part in ("weight", "bias"):
            for name, t in zip(qkv, state[f"blocks.{i}.attn.qkv.{part}"].chunk(3), strict=True):
                hf[f"{layer}.{i}.{name}.{part}"] = t.clone()
            for ours, theirs in names.items():
                hf[f"{layer}.{i}.{theirs}.{part}"] = state[f"blocks.{i}.{ours}.{part}"]
    return hf
