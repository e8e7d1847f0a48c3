"""ProcessorConfig: validation names the field and the allowed values; JSON round trip; presets; hash."""

import json

import pytest

from dlproc import ConfigError, ProcessorConfig
from dlproc.processor.config import PRESETS


@pytest.mark.parametrize("name", list(PRESETS))
def test_presets_round_trip_through_json(name, tmp_path):
    cfg = ProcessorConfig.preset(name)
    assert ProcessorConfig.from_json(cfg.to_json()) == cfg
    path = tmp_path / "cfg.json"
    cfg.save(path)
    assert ProcessorConfig.load(str(path)) == cfg
    assert ProcessorConfig.load(name) == cfg


@pytest.mark.parametrize("field,value,fragment", [
    ("dtype", "int4", "'int8' or 'fp32'"),
    ("conv_ic_lanes", 12, "power of two from 2 to 64"),
    ("conv_oc_lanes", 8, "from conv_ic_lanes (16)"),
    ("fc_threads", 32, "from 1 to conv_ic_lanes"),
    ("axi_data_width", 256, "at most conv_ic_lanes x element bits (128)"),
    ("clock_mhz", 5, "from 10 to 1000"),
    ("acc_buffer_entries", 1000, "power of two"),
    ("ddr_size", 12345, "multiple of 4096"),
])
def test_invalid_field_is_named_with_allowed_values(field, value, fragment):
    with pytest.raises(ConfigError) as info:
        ProcessorConfig.preset("zcu102_int8").replace(**{field: value})
    assert f"ProcessorConfig.{field}" in str(info.value)
    assert fragment in str(info.value)


def test_unknown_fields_are_rejected():
    with pytest.raises(ConfigError, match="unknown ProcessorConfig field"):
        ProcessorConfig.preset("tiny_int8").replace(lanes=4)
    with pytest.raises(ConfigError, match="unknown ProcessorConfig field"):
        ProcessorConfig.from_json(json.dumps({"dtype": "int8", "bogus": 1}))
    with pytest.raises(ConfigError, match="unknown preset"):
        ProcessorConfig.preset("zcu104")


def test_derived_sizes_follow_the_parameters():
    cfg = ProcessorConfig.preset("zcu102_int8")
    assert cfg.macs_per_cycle == 16 * 64
    assert cfg.input_entries == 256 * 1024 // 16
    assert cfg.weight_entries == 512 * 1024 // (16 * 64)
    assert cfg.subblocks_per_output == 4
    assert cfg.beat_bytes == 16
    fp = ProcessorConfig.preset("zcu102_fp32")
    assert fp.element_bytes == 4 and fp.input_entry_bytes == 8 * 4


def test_hash_identifies_hardware_not_runtime_base():
    cfg = ProcessorConfig.preset("zcu102_int8")
    assert cfg.replace(clock_mhz=300).hardware_hash != cfg.hardware_hash
    assert cfg.replace(ddr_base=0x6000_0000).hardware_hash == cfg.hardware_hash
    assert len(cfg.hardware_hash) == 8 and cfg.hardware_hash_int == int(cfg.hardware_hash, 16)
