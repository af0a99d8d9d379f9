"""The data flags every script shares, defined once from `TrainConfig`'s data fields.

`DATA[name].value` for each name of `tripjax.config.DATA_FIELDS` (`--dataset`, `--data_dir`,
`--download`, `--threshold`, `--min_user_positives`, `--test_per_user`, `--split_seed`,
`--data_seed`), with the config's defaults; `--flagfile` works for all of them.
"""

from experiments import config_flags
from tripjax import config as config_lib

DATA = config_flags.define(config_lib.DATA_FIELDS)


def prepare_kwargs() -> dict:
  """The flags as keyword arguments of `tripjax.data.prepare`."""
  values = config_flags.values(DATA)
  return {"name": values["dataset"], "data_dir": values["data_dir"] or None,
          "download": values["download"], "seed": values["data_seed"],
          "threshold": values["threshold"], "min_user_positives": values["min_user_positives"],
          "test_per_user": values["test_per_user"], "split_seed": values["split_seed"]}
