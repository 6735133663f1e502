"""The segmentation trainer: same number of steps for any data size, paired augmentation, model registry."""
import numpy as np
import pytest
import torch

from defectgen.config import ConfigError
from defectgen.seg.models import MODELS, build_model
from defectgen.seg.train import SegConfig, augment_batch, batch_indices, fit_segmenter, lr_factor, predict


@pytest.mark.parametrize("n", [3, 16, 50])
def test_every_data_size_gets_the_same_steps_and_batch(n):
    batches = list(batch_indices(n, 16, 25, torch.Generator().manual_seed(0)))
    assert len(batches) == 25 and all(len(b) == 16 for b in batches)
    seen = torch.cat(batches)[: (16 * 25 // n) * n]
    assert torch.bincount(seen, minlength=n).min() >= 1  # every pair is visited


def test_schedule_warms_up_then_decays_to_zero():
    f = [lr_factor(s, 100, 10) for s in range(100)]
    assert f[0] == pytest.approx(0.1) and f[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(f[10:], f[11:])) and lr_factor(100, 100, 10) == pytest.approx(0.0)


def test_augmentation_moves_image_and_mask_together():
    y = torch.randint(0, 4, (32, 8, 8))
    x = torch.stack([y.float(), torch.zeros_like(y, dtype=torch.float), torch.ones_like(y, dtype=torch.float)], 1)
    ax, ay = augment_batch(x, y, torch.Generator().manual_seed(0))
    assert torch.equal(ax[:, 0].long(), ay)
    assert not torch.equal(ay, y)  # some sample was actually transformed


@pytest.mark.parametrize("name", sorted(MODELS))
def test_registry_models_give_full_resolution_logits(name):
    model = build_model(name, 5).eval()
    with torch.no_grad():
        assert model(torch.rand(2, 3, 64, 64)).shape == (2, 5, 64, 64)


def test_bad_model_settings_name_the_problem(tmp_path):
    with pytest.raises(ConfigError, match="unknown segmentation model"):
        build_model("unet-huge", 3)
    with pytest.raises(FileNotFoundError, match="never downloaded"):
        build_model("unet-tiny", 3, tmp_path / "resnet18.pth")
    images = np.zeros((4, 36, 36, 3), np.uint8)
    with pytest.raises(ConfigError, match="divisible by 8"):
        fit_segmenter(images, np.zeros((4, 36, 36), np.uint8), SegConfig(model="unet-tiny", steps=1), 3, seed=0)


def test_encoder_weights_load_from_a_local_file(tmp_path):
    source = build_model("unet-tiny", 3)
    path = tmp_path / "encoder.pth"
    torch.save(source.net.encoder.state_dict(), path)
    model = build_model("unet-tiny", 3, path)
    assert torch.equal(model.net.encoder.conv1.weight, source.net.encoder.conv1.weight)


def test_fit_and_predict_learn_an_easy_task():
    rng = np.random.default_rng(0)
    images = np.full((8, 32, 32, 3), 60, np.uint8)
    masks = np.zeros((8, 32, 32), np.uint8)
    for i in range(8):
        r, c = rng.integers(0, 20, 2)
        images[i, r : r + 12, c : c + 12] = 220
        masks[i, r : r + 12, c : c + 12] = 1
    cfg = SegConfig(model="unet-tiny", size=32, steps=60, batch_size=4, lr=3e-3, warmup_steps=5, threads=1)
    pred = predict(fit_segmenter(images, masks, cfg, num_classes=2, seed=0), images)
    assert pred.dtype == np.uint8 and pred.shape == masks.shape
    assert (pred == masks).mean() > 0.9
