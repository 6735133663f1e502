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
