"""The blend benchmark (benchmarks.score_blend) on a smoke config."""

import dataclasses

import jax.numpy as jnp
import numpy as np
import pytest

from benchmarks import score_blend
from tripjax import errors
from tripjax.config import DRIVER_FLAGS, TrainConfig


def test_a_blend_standardises_each_models_row_then_weighs_them():
  base = lambda users: jnp.array([[1.0, 2.0, 3.0], [10.0, 10.0, 40.0]])[users]
  other = lambda users: jnp.array([[3.0, 1.0, 2.0], [0.0, 5.0, 1.0]])[users]
  users = jnp.array([0, 1])
  z = np.asarray(score_blend.standardized(other)(users))
  np.testing.assert_allclose(z.mean(axis=1), 0.0, atol=1e-6)
  np.testing.assert_allclose(z.std(axis=1), 1.0, rtol=1e-6)
  want = 0.75 * np.asarray(score_blend.standardized(base)(users)) + 0.25 * z
  np.testing.assert_allclose(score_blend.blended(base, other, 0.25)(users), want, rtol=1e-6)
  # A user whose scores are all equal gets zeros, not NaN.
  flat = score_blend.standardized(lambda users: jnp.ones((2, 3)))(users)
  assert np.all(np.asarray(flat) == 0.0)


def test_the_blend_runs_on_the_smoke_config():
  base = dataclasses.replace(
      TrainConfig.from_flagfile("experiments/configs/smoke.cfg", ignore=DRIVER_FLAGS), epochs=2)
  popularity = dataclasses.replace(base, model="popularity")
  report = score_blend.blend(base, [popularity], [0.5], [1])
  assert [r["variant"] for r in report["rows"]] == ["triplet", "popularity",
                                                    "triplet + 0.5 popularity"]
  for row in report["rows"]:
    assert 0.5 < row["auc"] <= 1.0
  triplet, pop, mixed = report["rows"]
  assert triplet["train_seconds"] > 0 and mixed["train_seconds"] == 0
  assert mixed["auc"] not in (triplet["auc"], pop["auc"])  # a blend of the two, not either
  table = score_blend.markdown(report, "python -m benchmarks.score_blend")
  assert f"| triplet + 0.5 popularity | {mixed['auc']:.4f} ({mixed['auc'] - triplet['auc']:+.4f})" \
      in table


@pytest.mark.parametrize("weights", [["0"], ["1.0"], ["x"], []])
def test_weights_outside_zero_one_are_one_line(weights):
  with pytest.raises(errors.InvalidInput, match="--blend_weights"):
    score_blend.check_weights(weights)


def test_models_must_differ():
  base = TrainConfig.from_flagfile("experiments/configs/smoke.cfg", ignore=DRIVER_FLAGS)
  with pytest.raises(errors.InvalidInput, match="--blend_with"):
    score_blend.blend(base, [base], [0.5], [1])
