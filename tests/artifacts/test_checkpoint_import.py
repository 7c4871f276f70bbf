"""Importing published encoders: Phikon (Hugging Face ViT-B/16) and a torchvision ResNet become
checkpoints that load_encoder + encode embed like a trained one; what does not fit is refused
and nothing is published."""

import hashlib
import json

import pytest
import torch
from safetensors.torch import save_file

from sslray import storage
from sslray.artifacts.checkpoint import load_encoder, read_meta, save_checkpoint
from sslray.artifacts.checkpoint_import import IMAGENET_MEAN, IMAGENET_STD, ImportSpec, import_checkpoint
from sslray.artifacts.kinds import require_artifact
from sslray.infer.embed import encode
from sslray.models.backbones import BackboneConfig, create_backbone
from sslray.models.weights import WeightsError
from tests.models.hf_vit import timm_to_hf

CPU = torch.device("cpu")
TINY = {"img_size": 32, "patch_size": 8, "embed_dim": 32, "depth": 2, "num_heads": 2}


def _phikon_like(path):
    """A randomly initialised ViT-B/16 in Phikon's layout, and a function giving its CLS feature
    (Hugging Face's own ViTModel when transformers is installed, else None)."""
    torch.manual_seed(0)
    try:
        from transformers import ViTConfig, ViTModel
    except ImportError:
        state = timm_to_hf(create_backbone(BackboneConfig("vit_base_patch16_224"), 3).state_dict())
        reference = None
    else:
        hf = ViTModel(ViTConfig()).eval()
        state, reference = hf.state_dict(), lambda x: hf(pixel_values=x).last_hidden_state[:, 0]
    save_file({k: v.contiguous() for k, v in state.items()}, path)
    return reference


def _tiny_weights(path, **kwargs):
    torch.manual_seed(0)
    model = create_backbone(BackboneConfig("vit_tiny_patch16_224", TINY | kwargs), 3).eval()
    torch.save(model.state_dict(), path)
    return model


def test_phikon_imports_and_embeds_its_cls_feature(tmp_path):
    weights = tmp_path / "model.safetensors"
    reference = _phikon_like(weights)
    out = str(tmp_path / "phikon")
    import_checkpoint(ImportSpec(model="vit_base_patch16_224", weights=str(weights), out=out, mpp=0.5))
    encoder, meta = load_encoder(out)
    tiles = torch.randint(0, 256, (2, 3, 224, 224), dtype=torch.uint8)
    with torch.no_grad():
        features = encode(encoder, tiles, meta, CPU)
        if reference is not None:  # Phikon's feature: last_hidden_state[:, 0] of unit-scaled, ImageNet-normalised tiles
            x = (tiles / 255 - torch.tensor(IMAGENET_MEAN)[:, None, None]) / torch.tensor(IMAGENET_STD)[:, None, None]
            torch.testing.assert_close(features, reference(x), atol=1e-4, rtol=1e-4)
    assert features.shape == (2, 768) and meta.embed_dim == 768 and meta.image_size == 224
    assert meta.method == "imported" and meta.mpp == 0.5 and meta.model.kwargs == {"global_pool": "token"}
    assert meta.source == {"weights": str(weights), "sha256": hashlib.sha256(weights.read_bytes()).hexdigest(),
                           "layout": "hf_vit", "bytes": weights.stat().st_size}
    assert meta.layer_norm_eps == 1e-12 and encoder.blocks[0].norm1.eps == 1e-12
    require_artifact(out, ("checkpoint",))


def test_a_torchvision_resnet_imports_with_its_features(tmp_path):
    import torchvision

    torch.manual_seed(0)
    reference = torchvision.models.resnet18(weights=None).eval()
    torch.save(reference.state_dict(), tmp_path / "resnet18.pth")
    out = str(tmp_path / "rn18")
    meta = import_checkpoint(ImportSpec(model="resnet18", weights=str(tmp_path / "resnet18.pth"), out=out,
                                        layout="torchvision", image_size=64))
    encoder, meta = load_encoder(out)
    reference.fc = torch.nn.Identity()
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(encoder(x), reference(x))
    assert meta.embed_dim == 512 and meta.source["layout"] == "torchvision" and meta.layer_norm_eps is None


def test_weights_of_another_model_are_refused_naming_keys_and_shapes(tmp_path):
    _tiny_weights(tmp_path / "small.pth")
    out = tmp_path / "ckpt"
    spec = ImportSpec(model="vit_tiny_patch16_224", weights=str(tmp_path / "small.pth"), out=str(out),
                      kwargs=TINY | {"embed_dim": 48, "depth": 1})
    with pytest.raises(WeightsError, match=r"small.pth: weights do not fit the backbone \(cls_token: file \(1, 1, 32\) "
                                           r"vs model \(1, 1, 48\).*unexpected key\(s\).*blocks\.1\."):
        import_checkpoint(spec)
    assert not out.exists() and [p.name for p in tmp_path.iterdir()] == ["small.pth"]  # no staging left


def test_a_pickle_with_code_is_refused(tmp_path):
    torch.save({"model": torch.nn.Linear(2, 2)}, tmp_path / "evil.pth")
    with pytest.raises(WeightsError, match="evil.pth: refused for safety"):
        import_checkpoint(ImportSpec(model="resnet18", weights=str(tmp_path / "evil.pth"), out=str(tmp_path / "c")))
    assert not (tmp_path / "c").exists()


def test_an_out_that_is_not_an_imported_checkpoint_is_refused(tmp_path):
    _tiny_weights(tmp_path / "w.pth")
    spec = {"model": "vit_tiny_patch16_224", "weights": str(tmp_path / "w.pth"), "kwargs": TINY, "overwrite": True}
    (tmp_path / "folder").mkdir()
    (tmp_path / "folder" / "notes.txt").write_text("mine")
    with pytest.raises(storage.OutputError, match="not an sslray checkpoint .*notes.txt"):
        import_checkpoint(ImportSpec(out=str(tmp_path / "folder"), **spec))
    trained = tmp_path / "trained"
    save_checkpoint(trained, torch.nn.Linear(1, 1), {"model": "resnet18", "in_chans": 3, "image_size": 32,
                                                     "scale": 255, "mean": [0, 0, 0], "std": [1, 1, 1]})
    with pytest.raises(storage.OutputError, match="trained.* sslray wrote while training"):
        import_checkpoint(ImportSpec(out=str(trained), **spec))
    assert (tmp_path / "folder" / "notes.txt").read_text() == "mine" and read_meta(str(trained)).method == ""


def test_an_imported_checkpoint_is_replaced_only_with_overwrite(tmp_path):
    _tiny_weights(tmp_path / "w.pth")
    spec = {"model": "vit_tiny_patch16_224", "weights": str(tmp_path / "w.pth"), "kwargs": TINY,
            "out": str(tmp_path / "c")}
    import_checkpoint(ImportSpec(**spec))
    with pytest.raises(FileExistsError, match="already exists; pass overwrite"):
        import_checkpoint(ImportSpec(**spec, mpp=0.25))
    assert import_checkpoint(ImportSpec(**spec, mpp=0.25, overwrite=True)).mpp == 0.25


def test_one_channel_and_channel_agnostic_imports_record_how_to_feed_them(tmp_path):
    rgb = _tiny_weights(tmp_path / "w.pth")
    out = str(tmp_path / "grey")
    meta = import_checkpoint(ImportSpec(model="vit_tiny_patch16_224", weights=str(tmp_path / "w.pth"), out=out,
                                        kwargs=TINY, per_channel=True))
    encoder, meta = load_encoder(out)
    torch.testing.assert_close(encoder.patch_embed.proj.weight, rgb.patch_embed.proj.weight.sum(1, keepdim=True))
    assert (meta.in_chans, meta.per_channel, meta.image_size, len(meta.mean)) == (1, True, 32, 1)
    assert encode(encoder, torch.zeros(2, 4, 32, 32, dtype=torch.uint8), meta, CPU).shape == (2, 4 * 32)
    with pytest.raises(ValueError, match="4-channel encoder has no ImageNet mean/std"):
        ImportSpec(model="resnet18", weights="w", out="o", in_chans=4)
    with pytest.raises(ValueError, match=r"need 2 value\(s\) each .* got 3 and 3"):
        ImportSpec(model="resnet18", weights="w", out="o", in_chans=2, mean=[0, 0, 0], std=[1, 1, 1])
    with pytest.raises(ValueError, match="in_chans must be 1"):
        ImportSpec(model="resnet18", weights="w", out="o", in_chans=3, per_channel=True)


def test_weights_on_object_storage_import_to_object_storage(s3_server, tmp_path):
    _tiny_weights(tmp_path / "w.pth")
    storage.write_bytes(f"{s3_server}/published/w.pth", (tmp_path / "w.pth").read_bytes())
    out = f"{s3_server}/checkpoints/tiny"
    import_checkpoint(ImportSpec(model="vit_tiny_patch16_224", weights=f"{s3_server}/published/w.pth", out=out,
                                 kwargs=TINY))
    encoder, meta = load_encoder(out)
    assert meta.source["weights"] == f"{s3_server}/published/w.pth" and meta.embed_dim == 32
    assert json.loads(storage.read_bytes(f"{out}/_SUCCESS"))["kind"] == "checkpoint"
