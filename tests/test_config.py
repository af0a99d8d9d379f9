"""Tests of tripjax.config: TrainConfig validation and its flagfile form."""

import pytest

from tripjax.config import TrainConfig


@pytest.mark.parametrize("field,value", [("dim", 0), ("min_user_positives", 0), ("margin", -0.1),
                                         ("optimizer", "adamw"), ("dataset", "ml-5")])
def test_bad_settings_name_the_field(field, value):
  with pytest.raises(ValueError, match=f"TrainConfig: .*{field}"):
    TrainConfig(**{field: value})


def test_flagfile_round_trip(tmp_path):
  config = TrainConfig(dataset="synthetic-tiny", data_dir=None, download=False, margin=0.25,
                       min_user_positives=1, learning_rate=0.3)
  (tmp_path / "flags.txt").write_text(config.to_flagfile())
  assert TrainConfig.from_flagfile(tmp_path / "flags.txt") == config
