"""benchmarks.step_profile end to end on the ML-100K shape, in a subprocess (it owns the flags)."""

import json
import os
import subprocess
import sys

from conftest import TEST_XLA_FLAGS


def _production_xla_env() -> dict:
  """The environment without conftest's test-only compiler settings: the profile attributes
  the ops of the program XLA:CPU compiles by default (optimised, with its fusion emitters)."""
  flags = os.environ.get("XLA_FLAGS", "").split()
  env = dict(os.environ, XLA_FLAGS=" ".join(f for f in flags if f not in TEST_XLA_FLAGS))
  env.pop("JAX_DISABLE_MOST_OPTIMIZATIONS", None)
  return env


def test_profile_attributes_the_step_to_its_gathers_scatters_and_reductions(tmp_path):
  out = tmp_path / "profile.json"
  done = subprocess.run(
      [sys.executable, "-m", "benchmarks.step_profile", "--shape=ml-100k", "--chunks=1",
       f"--out={out}"], capture_output=True, text=True, timeout=300, check=False,
      env=_production_xla_env())
  assert done.returncode == 0, done.stderr[-2000:]
  d = json.loads(out.read_text())
  assert d["shape"] == "ml-100k" and d["batches_profiled"] >= 1
  shares = d["share_by_kind"]
  assert abs(sum(shares.values()) - 1.0) < 1e-6
  # The row-sparse step is made of the gathers, the loss and the scatter-adds.
  assert shares.get("gather", 0) > 0 and shares.get("scatter", 0) > 0
  assert all(op["us_per_batch"] > 0 for op in d["ops"])
  assert any("scatter-add" in op["jax_op"] for op in d["ops"] if op["kind"] == "scatter")
  # The recorded command names the file it wrote: run as written, it rewrites that file.
  assert d["command"] == f"python -m benchmarks.step_profile --shape=ml-100k --chunks=1 --out={out}"
