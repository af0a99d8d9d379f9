"""Flags generated from `tripjax.config.TrainConfig`'s fields: type, default, help and checks.

`define(names)` declares one flag per field, with the field's default and help; each flag is
validated by `config.check_field` (the config's own check, so bounds live in one place) and
`--fused_cpu_step`/`--optimizer` by `config.check_together`. Adding a field to `TrainConfig`
adds its flag to every script that defines it.
"""

from __future__ import annotations

import dataclasses
import typing
from typing import Sequence

from absl import flags

from tripjax import config as config_lib

_FIELDS = {f.name: f for f in dataclasses.fields(config_lib.TrainConfig)}
_TYPES = typing.get_type_hints(config_lib.TrainConfig)


def _define(name: str) -> flags.FlagHolder:
  field = _FIELDS[name]
  meta, default, kind = field.metadata, field.default, _TYPES[name]
  help_text = meta["help"]
  if meta["choices"]:
    holder = flags.DEFINE_enum(name, default, list(meta["choices"]), help_text)
  elif kind is bool:
    holder = flags.DEFINE_bool(name, default, help_text)
  elif kind is int:
    holder = flags.DEFINE_integer(name, default, help_text)
  elif kind is float:
    holder = flags.DEFINE_float(name, default, help_text)
  else:  # str or str | None: empty means None
    holder = flags.DEFINE_string(name, default or "", help_text)
  flags.register_validator(name, lambda value: _valid(config_lib.check_field(name, value)))
  return holder


def _valid(problem: str | None) -> bool:
  """An absl checker's answer: True, or a ValidationError carrying the config's message."""
  if problem:
    raise flags.ValidationError(problem)
  return True


def define(names: Sequence[str]) -> dict[str, flags.FlagHolder]:
  """Declares the flags of `names` (TrainConfig fields) and returns their holders."""
  holders = {name: _define(name) for name in names}
  if {"fused_cpu_step", "optimizer"} <= set(holders):
    flags.register_multi_flags_validator(
        ["fused_cpu_step", "optimizer"],
        lambda values: _valid(config_lib.check_together(values)))
  return holders


def values(holders: dict[str, flags.FlagHolder]) -> dict[str, object]:
  """The flags' values, by field name."""
  return {name: holder.value for name, holder in holders.items()}
