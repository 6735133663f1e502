"""Pair encoding, the two-stage hand-off, per-sample seeds and the receptive field."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from diffusers import DDPMScheduler

from defectgen.models import UNetConfig, build_unet, receptive_field
from defectgen.pairs import decode_pairs, encode_pairs
from defectgen.pipeline import DefectGenPipeline
from defectgen.schedule import sample_seed, split_timesteps

C = 1 + 4  # grey image + 4 classes


def test_one_hot_round_trip() -> None:
    rng = np.random.default_rng(0)
    masks = rng.integers(0, 4, (3, 8, 8)).astype(np.uint8)
    grey = rng.integers(0, 256, (3, 8, 8)).astype(np.uint8)
    images = np.repeat(grey[..., None], 3, axis=3)
    x = encode_pairs(images, masks, num_classes=4, image_channels=1)
    assert x.shape == (3, C, 8, 8) and x.min() >= -1 and x.max() <= 1
    assert torch.all(x[:, 1:].sum(dim=1) == -2)  # exactly one channel at +1, three at -1
    imgs, back = decode_pairs(x, image_channels=1)
    assert np.array_equal(back, masks) and np.array_equal(imgs, images)


def test_ignore_pixels_encode_as_background() -> None:
    masks = np.full((1, 4, 4), 255, np.uint8)
    x = encode_pairs(np.zeros((1, 4, 4, 3), np.uint8), masks, num_classes=3, image_channels=3)
    assert torch.all(x[0, 3] == 1) and torch.all(x[0, 4:] == -1)


def _pipeline(switch: float = 0.4, large: bool = True, small: bool = True) -> DefectGenPipeline:
    torch.manual_seed(0)
    big = build_unet(UNetConfig(8, (1, 2), 1, (1,), 8, norm_num_groups=8), C, 8)
    little = build_unet(UNetConfig(8, (1,), 1, (), 8, False, norm_num_groups=8), C, 8)
    sched = DDPMScheduler(num_train_timesteps=20, beta_schedule="squaredcos_cap_v2", prediction_type="sample",
                          timestep_spacing="trailing")
    return DefectGenPipeline(big if large else None, little if small else None, sched, switch=switch,
                             image_channels=1)


def _record_timesteps(model: torch.nn.Module) -> list[int]:
    seen: list[int] = []
    model.register_forward_pre_hook(lambda _m, args: seen.append(int(args[1][0])))
    return seen


def _gens(n: int, seed: int = 0) -> list[torch.Generator]:
    return [torch.Generator().manual_seed(sample_seed(seed, i)) for i in range(n)]


def test_each_model_sees_its_side_of_the_switch() -> None:
    pipe = _pipeline(0.4)
    large_seen, small_seen = _record_timesteps(pipe.unet), _record_timesteps(pipe.unet_2)
    out = pipe(_gens(2), progress=False)
    assert large_seen == list(range(19, 7, -1)) and small_seen == list(range(7, -1, -1))
    assert out.timesteps == {"large": large_seen, "small": small_seen}


def test_ddim_hand_off_continues_the_same_schedule() -> None:
    pipe = _pipeline(0.5)
    large_seen, small_seen = _record_timesteps(pipe.unet), _record_timesteps(pipe.unet_2)
    pipe(_gens(1), sampler="ddim", num_inference_steps=5, progress=False)
    assert large_seen == [19, 15, 11] and small_seen == [7, 3]


@pytest.mark.parametrize("switch,only", [(1.0, "small"), (0.0, "large")])
def test_switch_at_the_ends_equals_single_model_sampling(switch: float, only: str) -> None:
    both = _pipeline(switch)(_gens(3), progress=False)
    single = _pipeline(switch, large=only == "large", small=only == "small")(_gens(3), progress=False)
    assert np.array_equal(both.images, single.images) and np.array_equal(both.masks, single.masks)
    assert both.timesteps[only] == list(range(19, -1, -1))


def test_missing_model_for_the_switch_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="needs the small"):
        _pipeline(0.4, small=False)(_gens(1), progress=False)
    with pytest.raises(ValueError, match="switch must be in"):
        split_timesteps([3, 2], 1.5, 10)


def test_samples_do_not_depend_on_batch_size() -> None:
    pipe = _pipeline(0.4)
    together = pipe(_gens(4), progress=False)
    alone = [pipe([g], progress=False) for g in _gens(4)]
    assert np.array_equal(together.images, np.concatenate([a.images for a in alone]))
    assert np.array_equal(together.masks, np.concatenate([a.masks for a in alone]))
    other_seed = pipe(_gens(4, seed=1), progress=False)
    assert not np.array_equal(together.images, other_seed.images)


def test_receptive_field_small_is_local_and_attention_is_global() -> None:
    local = build_unet(UNetConfig(8, (1,), 1, (), 8, False, norm_num_groups=8), C, 48)
    deeper = build_unet(UNetConfig(8, (1,), 2, (), 8, False, norm_num_groups=8), C, 48)
    attn = build_unet(UNetConfig(8, (1, 2), 1, (1,), 8, norm_num_groups=8), C, 48)
    # no downsampling, so RF = 1 + 2 * (number of 3x3 convs): conv_in, conv_out, 2 per res-block;
    # down has layers_per_block res-blocks, mid 2, up layers_per_block + 1 -> 12 convs (25 px), 16 (33 px)
    assert receptive_field(local, 48) == 25 and receptive_field(deeper, 48) == 33
    assert receptive_field(attn, 48) == 48


def test_dpmsolver_history_crosses_the_switch() -> None:
    """With the same network on both sides, a two-stage DPM-Solver++ run must equal a one-model run:
    the small model's first step still uses the large model's x0 estimate (2nd-order update)."""
    from diffusers import DPMSolverMultistepScheduler

    pipe = _pipeline(0.4)
    pipe.unet_2 = pipe.unet
    large_seen = _record_timesteps(pipe.unet)
    two_stage = pipe(_gens(2), sampler="dpmsolver++", num_inference_steps=6, progress=False)
    assert two_stage.timesteps == {"large": [19, 16, 12, 9], "small": [6, 2]}
    assert large_seen == [19, 16, 12, 9, 6, 2]  # the hook sees both stages: it is one network
    one_model = pipe(_gens(2), switch=0.0, sampler="dpmsolver++", num_inference_steps=6, progress=False)
    assert np.array_equal(two_stage.images, one_model.images) and np.array_equal(two_stage.masks, one_model.masks)

    # the check has teeth: restarting the solver at the switch (history dropped) changes the samples
    original = DPMSolverMultistepScheduler.step

    def restart_at_switch(self, model_output, timestep, sample, **kw):
        if int(timestep) == 6:
            self.model_outputs = [None] * self.config.solver_order
            self.lower_order_nums = 0
        return original(self, model_output, timestep, sample, **kw)

    DPMSolverMultistepScheduler.step = restart_at_switch
    try:
        restarted = pipe(_gens(2), sampler="dpmsolver++", num_inference_steps=6, progress=False)
    finally:
        DPMSolverMultistepScheduler.step = original
    assert not np.array_equal(restarted.images, two_stage.images)


def test_dpmsolver_refuses_resampling() -> None:
    from defectgen.pipeline import Known

    pipe = _pipeline(0.4)
    known = Known(torch.zeros(1, C, 8, 8), torch.zeros(1, C, 8, 8))
    with pytest.raises(ValueError, match="dpmsolver\\+\\+'s step history"):
        pipe(_gens(1), sampler="dpmsolver++", num_inference_steps=4, progress=False, known=known, resample=2)


def test_dpmsolver_keeps_known_pixels() -> None:
    from defectgen.pipeline import Known

    pipe = _pipeline(0.4)
    values = torch.rand(2, C, 8, 8) * 2 - 1
    weight = torch.zeros(2, C, 8, 8)
    weight[:, :1] = 1.0  # the image is known, the mask is generated
    out = pipe(_gens(2), sampler="dpmsolver++", num_inference_steps=5, progress=False, known=Known(values, weight))
    expected, _ = decode_pairs(values, image_channels=1)
    assert np.array_equal(out.images, expected)


def test_class_names_round_trip_in_the_pipeline_config(tmp_path) -> None:
    pipe = _pipeline()
    pipe.register_to_config(class_names=["background", "crack", "spot", "patch"])
    pipe.save_pretrained(tmp_path / "p")
    assert not (tmp_path / "p" / "class_map.json").exists()  # the names live in model_index.json
    back = DefectGenPipeline.from_pretrained(tmp_path / "p")
    assert back.class_map.names == ("background", "crack", "spot", "patch") and back.config.switch == 0.4
    assert np.array_equal(back(_gens(1), progress=False, num_inference_steps=3).masks,
                       pipe(_gens(1), progress=False, num_inference_steps=3).masks)


def test_a_pipeline_folder_of_an_older_defectgen_still_loads(tmp_path) -> None:
    """Older folders kept the class names in class_map.json beside a model_index.json without them."""
    import json

    from defectgen.data import ClassMap
    from defectgen.pipeline import load_pipeline

    _pipeline().save_pretrained(tmp_path / "old")
    index = json.loads((tmp_path / "old" / "model_index.json").read_text())
    for key in ("class_names", "ignore_index"):
        index.pop(key)
    (tmp_path / "old" / "model_index.json").write_text(json.dumps(index))
    ClassMap(("background", "a", "b", "c")).save(tmp_path / "old" / "class_map.json")
    assert load_pipeline(tmp_path / "old").class_map == ClassMap(("background", "a", "b", "c"))
    assert DefectGenPipeline.from_pretrained(tmp_path / "old").class_map is None


def test_unet_channels_must_be_image_channels_plus_classes() -> None:
    pipe = _pipeline()
    with pytest.raises(ValueError, match=r"5 channels in .* 1 image channels \+ 3 classes = 4"):
        DefectGenPipeline(pipe.unet, pipe.unet_2, pipe.scheduler, image_channels=1, class_names=["bg", "a", "b"])
    DefectGenPipeline(pipe.unet, pipe.unet_2, pipe.scheduler, image_channels=1, class_names=["bg", "a", "b", "c"])


def test_the_sampler_is_the_pipelines_scheduler_and_can_be_swapped() -> None:
    """diffusers' way: ``pipe.scheduler = OtherScheduler.from_config(pipe.scheduler.config)``."""
    from diffusers import DDIMScheduler, DPMSolverMultistepScheduler

    from defectgen.schedule import sampler_name

    pipe = _pipeline(0.5)
    by_name = pipe(_gens(2), sampler="ddim", num_inference_steps=5, progress=False)
    pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
    swapped = pipe(_gens(2), num_inference_steps=5, progress=False)
    assert np.array_equal(by_name.images, swapped.images) and np.array_equal(by_name.masks, swapped.masks)
    assert sampler_name(pipe.scheduler) == "ddim"
    pipe.scheduler = DPMSolverMultistepScheduler.from_config(pipe.scheduler.config)
    dpm = pipe(_gens(2), num_inference_steps=6, progress=False)
    assert dpm.timesteps == {"large": [19, 16, 12], "small": [9, 6, 2]} and sampler_name(pipe.scheduler) == "dpmsolver++"
    assert not np.array_equal(dpm.images, swapped.images)


def test_batch_size_or_a_generator_list_and_a_tuple_without_return_dict() -> None:
    pipe = _pipeline(0.4)
    one_generator = pipe(generator=torch.Generator().manual_seed(0), batch_size=3, num_inference_steps=4, progress=False)
    assert one_generator.images.shape == (3, 8, 8, 3) and one_generator.masks.shape == (3, 8, 8)
    images, masks, timesteps = pipe(_gens(2), num_inference_steps=4, progress=False, return_dict=False)
    as_dict = pipe(generator=_gens(2), num_inference_steps=4, progress=False)
    assert np.array_equal(images, as_dict.images) and np.array_equal(masks, as_dict.masks)
    assert timesteps == as_dict.timesteps
    assert pipe(batch_size=2, num_inference_steps=2, progress=False).images.shape[0] == 2  # the global RNG
    with pytest.raises(ValueError, match="batch_size 3 differs from the 2 generators"):
        pipe(_gens(2), batch_size=3, progress=False)
