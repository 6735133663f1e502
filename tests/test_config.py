from pathlib import Path

import pytest

from defectgen.config import ConfigError, load_config, save_config
from defectgen.generator_config import GeneratorConfig


def test_yaml_and_overrides_apply_in_order(tiny_config: Path) -> None:
    cfg = load_config(GeneratorConfig, tiny_config, ["train.lr=0.003", "small.channel_mult=[1,2]", "sample.steps=10"])
    assert cfg.size == 16 and cfg.train.lr == 0.003
    assert cfg.small.channel_mult == (1, 2) and cfg.sample.steps == 10
    assert cfg.large.attention_levels == (1,)


def test_saved_config_round_trips(tmp_path: Path, tiny_config: Path) -> None:
    cfg = load_config(GeneratorConfig, tiny_config)
    save_config(cfg, tmp_path / "config.yaml")
    assert load_config(GeneratorConfig, tmp_path / "config.yaml") == cfg


@pytest.mark.parametrize("override,match", [
    ("train.lrr=1", "unknown config key 'train.lrr'"),
    ("nope=1", "unknown config key 'nope'"),
    ("train.batch_size=abc", "train.batch_size.*expected an integer"),
    ("sample.switch=high", "sample.switch.*expected a number"),
    ("train.flip=maybe", "train.flip.*expected true/false"),
])
def test_bad_keys_and_types_name_the_key(override: str, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        load_config(GeneratorConfig, None, [override])


def test_unknown_key_in_file_names_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("train:\n  stepz: 3\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: unknown config key 'train.stepz'"):
        load_config(GeneratorConfig, bad)


def test_mapping_fields_replace_from_files_and_merge_from_set(tmp_path: Path) -> None:
    from defectgen.compare import CompareConfig

    path = tmp_path / "c.yaml"
    path.write_text("small_variants:\n  a: [small.layers_per_block=1]\n  b: [small.layers_per_block=3]\n")
    cfg = load_config(CompareConfig, path, ["small_variants.b=[small.base_channels=16]", "eval.ratio=2"])
    assert cfg.small_variants == {"a": ["small.layers_per_block=1"], "b": ["small.base_channels=16"]}
    assert cfg.eval.ratio == 2.0 and cfg.eval.seeds == [0, 1, 2]  # nested configs keep their other defaults


def test_bare_yaml_no_reads_as_the_choice_no(tmp_path: Path) -> None:
    """YAML 1.1 turns a bare `no` into False; a choice that spells 'no' must still take it, from files and --set."""
    f = tmp_path / "g.yaml"
    f.write_text("train:\n  mixed_precision: no\n")
    assert load_config(GeneratorConfig, f).train.mixed_precision == "no"
    assert load_config(GeneratorConfig, None, ["train.mixed_precision=bf16", "train.mixed_precision=no"]).train.mixed_precision == "no"
    with pytest.raises(ConfigError, match="train.mixed_precision.*not one of"):
        load_config(GeneratorConfig, None, ["train.mixed_precision=yes"])


def _config_classes() -> list[type]:
    from defectgen.compare import CompareConfig
    from defectgen.demo import DemoConfig
    from defectgen.quality.compute import MetricsConfig
    from defectgen.seg.ablate import AblateConfig
    from defectgen.seg.evaluate import EvalConfig

    return [GeneratorConfig, EvalConfig, AblateConfig, CompareConfig, MetricsConfig, DemoConfig]


@pytest.mark.parametrize("text", [".inf", "-.inf", ".nan", "inf", "nan", "1e999"])
def test_no_config_takes_a_non_finite_number(tmp_path: Path, text: str) -> None:
    """Every float key of every config, from a YAML file and from --set: ``lr: .inf`` once trained a UNet of NaNs."""
    import dataclasses
    import typing

    from defectgen.config import to_dict

    def float_keys(cls: type, prefix: str = "") -> list[str]:
        hints = typing.get_type_hints(cls)
        out = []
        for f in dataclasses.fields(cls):
            hint = hints[f.name]
            if dataclasses.is_dataclass(hint):
                out += float_keys(hint, f"{prefix}{f.name}.")
            elif float in (hint, *typing.get_args(hint)) or typing.get_args(hint)[:1] == (float,):
                out.append(prefix + f.name)
        return out

    checked = 0
    for cls in _config_classes():
        keys = float_keys(cls)
        assert keys or cls is GeneratorConfig, cls
        for key in keys:
            value = f"[{text}]" if isinstance(eval_key(to_dict(cls()), key), list) else text
            with pytest.raises(ConfigError, match=rf"'{key}(\[0\])?': must be a finite number"):
                load_config(cls, None, [f"{key}={value}"])
            checked += 1
    assert checked >= 20
    path = tmp_path / "lr.yaml"
    path.write_text(f"train:\n  lr: {text}\n")
    with pytest.raises(ConfigError, match="'train.lr': must be a finite number"):
        load_config(GeneratorConfig, path)


def eval_key(d: dict, key: str):
    for part in key.split("."):
        d = d[part]
    return d


@pytest.mark.parametrize("cls_key", ["GeneratorConfig:train.seed", "EvalConfig:seeds", "AblateConfig:selection_seed",
                                     "AblateConfig:seeds", "CompareConfig:sample_seed", "MetricsConfig:seed"])
def test_no_config_takes_a_negative_seed(cls_key: str) -> None:
    """One rule for seeds everywhere (numpy's SeedSequence refuses negative ones): refused where read, naming the key."""
    name, key = cls_key.split(":")
    cls = next(c for c in _config_classes() if c.__name__ == name)
    value = "[0,-1]" if key == "seeds" else "-1"
    with pytest.raises(ConfigError, match=rf"'{key}(\[1\])?': a seed must not be negative, got -1"):
        load_config(cls, None, [f"{key}={value}"])
