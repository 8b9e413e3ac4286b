import json

import pytest

from readapt.config import CONFIG_NAME, ConfigError, ReadConfig


def test_defaults_are_valid_and_every_field_has_help():
    import dataclasses

    config = ReadConfig()
    assert (config.rnn_type, config.rnn_dim, config.aggregation) == ("lstm", 128, "mean")
    assert all(f.metadata.get("help") for f in dataclasses.fields(ReadConfig))


@pytest.mark.parametrize("kwargs, fragment", [
    ({"rnn_type": "transformer"}, "rnn_type"),
    ({"task_type": "TOKEN_CLS"}, "task_type"),
    ({"aggregation": "max"}, "aggregation"),
    ({"rnn_dim": 0}, "rnn_dim"),
    ({"rnn_dim": "128"}, "expected int"),
    ({"rnn_dim": True}, "expected int"),
    ({"layers": []}, "layers"),
    ({"layers": [1, 1]}, "distinct"),
    ({"layers": [-1]}, "layers"),
    ({"input_scale": float("nan")}, "input_scale"),
    ({"output_scale": 0.0}, "output_scale"),
    ({"pooling": "max"}, "pooling"),
    ({"head_dropout": 1.0}, "head_dropout"),
    ({"num_labels": 0}, "num_labels"),
    ({"mixing": "conv"}, "mixing='conv': choose none or attention"),
    ({"mixing": "attention", "task_type": "CAUSAL_LM"}, "SEQ_CLS only"),
    ({"mixing": "attention", "rnn_dim": 30}, "multiple of 4"),
])
def test_invalid_values_are_refused_with_the_field_named(kwargs, fragment):
    with pytest.raises(ConfigError, match=fragment):
        ReadConfig(**kwargs)


def test_json_round_trip(tmp_path):
    config = ReadConfig(rnn_type="lstm", rnn_dim=64, layers=[3, 1, 2], aggregation="last", input_scale=2)
    config.save_pretrained(tmp_path)
    loaded = ReadConfig.from_pretrained(tmp_path)
    assert loaded == config and loaded.layers == [1, 2, 3] and isinstance(loaded.input_scale, float)


@pytest.mark.parametrize("mutate, fragment", [
    (lambda d: d.update(extra_key=1), "unknown config key"),
    (lambda d: d.pop("rnn_dim"), "missing key"),
    (lambda d: d.update(rnn_dim="big"), "expected int"),
    (lambda d: d.update(layers="1,2"), "layers"),
])
def test_saved_config_is_parsed_strictly(tmp_path, mutate, fragment):
    data = ReadConfig().to_dict()
    mutate(data)
    (tmp_path / CONFIG_NAME).write_text(json.dumps(data))
    with pytest.raises(ConfigError, match=fragment):
        ReadConfig.from_pretrained(tmp_path)


def test_corrupted_or_missing_config_file(tmp_path):
    with pytest.raises(ConfigError, match="no read_config.json"):
        ReadConfig.from_pretrained(tmp_path)
    (tmp_path / CONFIG_NAME).write_bytes(b"\x00\xff{not json")
    with pytest.raises(ConfigError, match="not valid JSON"):
        ReadConfig.from_pretrained(tmp_path)
    (tmp_path / CONFIG_NAME).write_text("[1, 2]")
    with pytest.raises(ConfigError, match="JSON object"):
        ReadConfig.from_pretrained(tmp_path)


def test_a_config_saved_before_token_mixing_existed_loads_as_plain_read(tmp_path):
    ReadConfig(pooling="pair", mixing="attention").save_pretrained(tmp_path)
    data = json.loads((tmp_path / CONFIG_NAME).read_text())
    assert ReadConfig.from_dict(data).mixing == "attention"
    del data["mixing"]
    assert ReadConfig.from_dict(data).mixing == "none"
