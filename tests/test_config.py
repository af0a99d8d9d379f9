"""Tests of tripjax.config: TrainConfig validation and its flagfile form."""

import pathlib

import pytest

from tripjax import config
from tripjax.config import TrainConfig


@pytest.mark.parametrize("field,value", [("dim", 0), ("min_user_positives", 0), ("margin", -0.1),
                                         ("optimizer", "adamw"), ("dataset", "ml-5"),
                                         ("popularity_penalty", -0.05),
                                         ("popularity_penalty", float("inf")),
                                         ("negative_exponent", -0.2),
                                         ("negative_exponent", float("nan"))])
def test_bad_settings_name_the_field(field, value):
  with pytest.raises(ValueError, match=f"TrainConfig: .*{field}"):
    TrainConfig(**{field: value})


def test_flagfile_round_trip(tmp_path):
  config = TrainConfig(dataset="synthetic-tiny", data_dir=None, download=False, margin=0.25,
                       min_user_positives=1, learning_rate=0.3, popularity_penalty=0.05)
  (tmp_path / "flags.txt").write_text(config.to_flagfile())
  assert "--popularity_penalty=0.05\n" in config.to_flagfile()
  assert TrainConfig.from_flagfile(tmp_path / "flags.txt") == config


def test_newer_fields_default_to_zero_for_older_flagfiles(tmp_path):
  (tmp_path / "old.txt").write_text("--dataset=synthetic-tiny\n--dim=12\n")
  old = TrainConfig.from_flagfile(tmp_path / "old.txt")
  assert old.popularity_penalty == 0.0 and old.negative_exponent == 0.0


def test_from_flagfile_ignores_the_driver_flags_when_told(tmp_path):
  path = tmp_path / "lab.cfg"
  path.write_text("# comment\n--dataset=synthetic-tiny\n--workdir=runs/x\n\n--dim=12\n"
                  "--overwrite=true\n")
  expected = TrainConfig(dataset="synthetic-tiny", dim=12)
  assert TrainConfig.from_flagfile(path, ignore=("workdir", "overwrite")) == expected
  assert TrainConfig.from_flagfile(path, ignore=config.DRIVER_FLAGS) == expected
  with pytest.raises(ValueError, match=r"lab.cfg:3: expected --<TrainConfig field>"):
    TrainConfig.from_flagfile(path)  # strict by default: --workdir is not a field


@pytest.mark.parametrize("text,message", [
    ("--dim=12\n--colour=red\n", r"bad.cfg:2: expected --<TrainConfig field>=<value>"),
    ("--dim=twelve\n", r"bad.cfg:1: --dim must be an integer, got 'twelve'"),
    ("--margin=wide\n", r"bad.cfg:1: --margin must be a number, got 'wide'"),
    ("--download=maybe\n", r"bad.cfg:1: --download must be true or false"),
    ("dim=12\n", r"bad.cfg:1: expected --<TrainConfig field>"),
])
def test_from_flagfile_names_the_file_and_line(tmp_path, text, message):
  (tmp_path / "bad.cfg").write_text(text)
  with pytest.raises(ValueError, match=message):
    TrainConfig.from_flagfile(tmp_path / "bad.cfg", ignore=config.DRIVER_FLAGS)


def test_from_flagfile_missing_file(tmp_path):
  with pytest.raises(ValueError, match="missing.cfg does not exist"):
    TrainConfig.from_flagfile(tmp_path / "missing.cfg")


def test_every_config_file_reads_with_the_driver_flags_ignored():
  folder = pathlib.Path(__file__).resolve().parents[1] / "experiments" / "configs"
  names = {path.stem: TrainConfig.from_flagfile(path, ignore=config.DRIVER_FLAGS)
           for path in folder.glob("*.cfg")}
  assert {"smoke", "ml100k", "ml1m_lab"} <= set(names)
  assert names["smoke"].dataset == "synthetic-tiny" and names["smoke"].epochs == 3


@pytest.mark.parametrize("name,value,problem", [
    ("dim", 0, "must be positive"), ("margin", -0.5, "must be >= 0"),
    ("learning_rate", float("inf"), "must be a finite number"),
    ("l2", float("nan"), "must be a finite number"),
    ("optimizer", "adamw", "must be one of"), ("dataset", "ml-5", "must be one of")])
def test_each_field_is_checked_once_by_the_config(name, value, problem):
  from tripjax import config as config_lib  # pylint: disable=g-import-not-at-top
  assert problem in config_lib.check_field(name, value)
  assert config_lib.check_field(name, getattr(TrainConfig(), name)) is None
  with pytest.raises(ValueError, match=f"TrainConfig: {name} {problem}"):
    TrainConfig(**{name: value})


def test_config_json_round_trip(tmp_path):
  config = TrainConfig(dataset="synthetic-tiny", data_dir="/data", margin=0.7, fused_cpu_step=True,
                       optimizer="sparse_sgd")
  (tmp_path / "config.json").write_text(config.to_json())
  assert TrainConfig.from_json(tmp_path / "config.json") == config
  (tmp_path / "config.json").write_text('{"dim": 8, "colour": "red"}')
  with pytest.raises(ValueError, match="unknown TrainConfig fields .'colour'."):
    TrainConfig.from_json(tmp_path / "config.json")


@pytest.mark.parametrize("text, message", [
    ('{"dim": "big"}', "dim must be of type int, got 'big'"),
    ('{"dim": true}', "dim must be of type int"),
    ('{"margin": "0.5"}', "margin must be of type float"),
    ('{"warp": 1}', "warp must be of type bool"),
    ("[1, 2]", "not a run's config"),
])
def test_config_json_of_the_wrong_types_names_the_field(tmp_path, text, message):
  (tmp_path / "config.json").write_text(text)
  with pytest.raises(ValueError, match=message):
    TrainConfig.from_json(tmp_path / "config.json")
  (tmp_path / "config.json").write_text('{"margin": 1, "dim": 8}')  # an int where a float goes
  assert TrainConfig.from_json(tmp_path / "config.json").margin == 1


@pytest.mark.parametrize("field", ["seed", "split_seed", "data_seed"])
@pytest.mark.parametrize("value, problem", [(-1, "must be >= 0"),
                                            (2**32, "must be < 4294967296")])
def test_seeds_lie_in_numpys_and_jaxs_range(field, value, problem):
  with pytest.raises(ValueError, match=f"{field} {problem}"):
    TrainConfig(**{field: value})
  assert getattr(TrainConfig(**{field: 2**32 - 1}), field) == 2**32 - 1


def test_a_flagfile_that_is_not_utf8_is_named(tmp_path):
  (tmp_path / "f.cfg").write_bytes(b"\xff\xfe--dim=8\n")
  with pytest.raises(ValueError, match="f.cfg cannot be read as UTF-8"):
    TrainConfig.from_flagfile(tmp_path / "f.cfg")
