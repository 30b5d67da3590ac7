import pytest

from dediffusion.config import Config, ConfigError, load_config, save_config


def test_defaults_follow_the_paper():
    config = Config()
    assert config.encoder.num_tokens == 75
    assert (config.tokens.temperature_start, config.tokens.temperature_end) == (2.0, 0.3)
    assert config.tokens.exclude_punctuation


def test_preset_file_then_overrides(tmp_path):
    preset = tmp_path / "p.yaml"
    preset.write_text("train:\n  steps: 7\n  batch_size: 4\nencoder:\n  backbone: conv\n")
    config = load_config(str(preset), ["train.steps=9", "tokens.deny=red,blue", "encoder.backbone_channels=[8,16]"])
    assert (config.train.steps, config.train.batch_size, config.encoder.backbone) == (9, 4, "conv")
    assert config.tokens.deny == ("red", "blue") and config.encoder.backbone_channels == (8, 16)


def test_words_that_yaml_reads_as_booleans_stay_words(tmp_path):
    assert load_config(None, ["train.mixed_precision=no"]).train.mixed_precision == "no"  # YAML: False
    preset = tmp_path / "p.yaml"
    preset.write_text("train:\n  mixed_precision: no\n  gradient_checkpointing: yes\n")
    config = load_config(str(preset))
    assert config.train.mixed_precision == "no" and config.train.gradient_checkpointing is True


def test_saved_config_loads_back_equal(tmp_path):
    config = load_config(None, ["train.steps=3", "tokens.allow=[a,b]"])
    save_config(config, tmp_path / "c.yaml")
    assert load_config(str(tmp_path / "c.yaml")) == config


@pytest.mark.parametrize(
    "override, message",
    [
        ("train.stepz=3", "unknown TrainConfig keys"),
        ("train.steps=many", "TrainConfig.steps must be int"),
        ("train.optimizer=sgd", "optimizer must be adamw or adafactor"),
        ("encoder.width=30", "divisible by num_heads"),
        ("steps=3", "section.key=value"),
        ("tokens.straight_through=maybe", "true or false"),
        ("train.timestep_bias=-1", "timestep_bias must be >= 0"),
        ("train.estimator=reinforce", "estimator must be gumbel or search"),
        ("train.search_proposal=beam", "search_proposal must be random or gradient"),
        ("train.search_accept=all", "search_accept must be best or improving"),
        ("sleep.draw_dtype=float16", "draw_dtype must be float32 or bfloat16"),
        ("sleep.timestep_spacing=uniform", "timestep_spacing must be"),
        ("sleep.density=0", "density must be in"),
    ],
)
def test_bad_values_are_refused_with_a_clear_message(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, [override])


def test_unknown_preset_lists_the_bundled_ones():
    with pytest.raises(ConfigError, match="not found"):
        load_config("no-such-preset")


def test_a_config_file_with_a_setting_this_version_lacks_is_named_in_the_error(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text("train:\n  steps: 5\n  repeat_penalty: 0.0\n")
    with pytest.raises(ConfigError, match=r"config\.yaml: unknown TrainConfig keys \['repeat_penalty'\]"):
        load_config(str(path))
    path.write_text("train:\n  steps: 5\n")
    assert load_config(str(path), ["train.batch_size=4"]).train.steps == 5
