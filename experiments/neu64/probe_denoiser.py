"""Is a trained stage's fit good, and where does its sampling trajectory go?

Reproduces the README's ε-prediction diagnosis:

    python experiments/neu64/probe_denoiser.py --compare-config experiments/neu64/compare_neu64_cpu_eps.yaml \\
        --model runs/compare_neu64_cpu_eps/generator/small/final

1. Fit: noise four training pairs to timestep t; compare the model's x0 estimate with the noisy input.
2. Trajectory: a 50-step DDIM run from pure noise; the std of the state and of the x0 estimate, and
   the share of x0 clipped to ±1 (real pairs have a std of about 0.8; a collapse toward the mean
   shows as a small std).
"""
from __future__ import annotations

import argparse

import torch
from diffusers import UNet2DModel

from defectgen.compare import CompareConfig
from defectgen.config import load_config
from defectgen.data import load_pairs
from defectgen.pairs import encode_pairs
from defectgen.schedule import sampler_scheduler


def x0_estimate(sched, model_out, xt, t):
    a = sched.alphas_cumprod[t]
    kind = sched.config.prediction_type
    if kind == "sample":
        return model_out
    if kind == "epsilon":
        return (xt - (1 - a).sqrt() * model_out) / a.sqrt()
    return a.sqrt() * xt - (1 - a).sqrt() * model_out  # v prediction


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--compare-config", required=True)
    ap.add_argument("--model", required=True, help="a stage's final/ folder")
    args = ap.parse_args()
    cfg = load_config(CompareConfig, args.compare_config)
    gen = cfg.generator()
    ds, recs = cfg.selection.select(log=False)
    images, masks = load_pairs(recs[:4], ds.class_map, gen.size)
    x0 = encode_pairs(images, masks, ds.class_map.num_classes, gen.image_channels)
    model = UNet2DModel.from_pretrained(args.model).eval()
    sched = gen.diffusion.make_scheduler()
    print(f"prediction {sched.config.prediction_type}; alpha_bar(t=999) {float(sched.alphas_cumprod[-1]):.2e}; "
          f"real pair std {float(x0.std()):.3f}")
    g = torch.Generator().manual_seed(0)
    for t in (20, 100, 300, 600):
        noise, tt = torch.randn(x0.shape, generator=g), torch.full((len(x0),), t)
        xt = sched.add_noise(x0, noise, tt)
        with torch.no_grad():
            est = x0_estimate(sched, model(xt, tt).sample, xt, t)
        print(f"fit t={t}: x0 estimate error {float((est - x0).pow(2).mean()):.4f}, "
              f"noisy input error {float((xt - x0).pow(2).mean()):.4f}")
    ddim = sampler_scheduler(sched, "ddim")
    ddim.set_timesteps(50)
    x = torch.randn((2, *x0.shape[1:]), generator=g)
    for i, t in enumerate(ddim.timesteps):
        with torch.no_grad():
            r = ddim.step(model(x, torch.full((2,), int(t))).sample, t, x)
        x = r.prev_sample
        if i % 10 == 0 or i == len(ddim.timesteps) - 1:
            p = r.pred_original_sample
            print(f"trajectory t={int(t)}: state std {float(x.std()):.3f}, x0 std {float(p.std()):.3f}, "
                  f"x0 clipped {float((p.abs() > 0.999).float().mean()):.3f}")


if __name__ == "__main__":
    main()
