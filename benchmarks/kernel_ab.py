"""A CPU kernel against an earlier version of itself, both in one process.

  python -m benchmarks.kernel_ab --baseline_rev=1b4b8b0 [--shapes=ml-1m,ml-20m] [--reps=15]
  python -m benchmarks.kernel_ab --kernel=missing_items --baseline_rev=f7e6537
  python -m benchmarks.kernel_ab --kernel=shuffle --baseline_rev=f7e6537

Timings of separate runs on a shared machine differ by more than a kernel change is worth, so
this builds the kernel's source at a git revision (`--baseline_rev`, or a file,
`--baseline_source`) into a library of its own with the kernels' compiler and flags, registers
it as XLA targets of its own beside the working tree's kernels (the candidate: the library as
`tripjax.kernels` builds, caches and checks it), and times both on the same inputs,
alternately, round after round (who goes first alternates too).

`--kernel=triplet_sgd` (the default; `tripjax/kernels/triplet_sgd_cpu.cc`, the FFI signature
from 1b4b8b0 on, with or without `l2_cotangent`): each shape's random positives
(`step_inputs.random_positives`) give one epoch of uniform triplets (`sampling.EpochSampler`,
one negative), trained from the same tables (dim 64) with sparse SGD, one jitted epoch per
round; each `--margins` value leaves a different share of triplets with a nonzero gradient after
the first epochs (reported as `active`, that of the last epoch). Reported: each kernel's median
epoch seconds, the median over rounds of candidate / baseline, and the largest difference
between their tables after the same epochs (0 for identical arithmetic).

`--kernel=missing_items` (`tripjax/kernels/missing_items_cpu.cc`, the negatives' search): one
epoch's searches (one negative per positive, in row order, the sampler's arrays) for each
`--exponents` value (0: uniform; else popularity-weighted), the same random words for both
builds. Reported as above, with `same_items` (whether both drew the same negatives) in place of
the tables' difference.

`--kernel=shuffle` (`tripjax/kernels/shuffle_cpu.cc`, the epoch's bucket shuffle): one epoch's
triplets in row order, padded to whole batches, for each `--negatives` count, the same key for
both builds; `same_triplets` says whether both laid out the same batches.

Writes runs/benchmarks/kernel_ab.json unless `--out` names another file.
"""

import ctypes
import functools
import os
import pathlib
import subprocess
import tempfile
import time

from absl import app
from absl import flags
import jax
import jax.numpy as jnp
import numpy as np

from benchmarks import outputs
from benchmarks.step_inputs import SHAPES, TARGET_BATCH, TARGET_DIM, random_positives
from experiments import run_cli
from tripjax import files
from tripjax import kernels
from tripjax import sampling
from tripjax.kernels import compiler
from tripjax.kernels import library

_REPO = pathlib.Path(__file__).resolve().parents[1]
_SOURCES = {"triplet_sgd": "tripjax/kernels/triplet_sgd_cpu.cc",
            "missing_items": "tripjax/kernels/missing_items_cpu.cc",
            "shuffle": "tripjax/kernels/shuffle_cpu.cc"}
_HANDLERS = {"missing_items": ("MissingItems", "WeightedMissingItems"), "shuffle": ("Shuffle",)}
_HEADER = "tripjax/kernels/common.h"

_KERNEL = flags.DEFINE_enum("kernel", "triplet_sgd", list(_SOURCES), "The kernel to compare: "
                            "the fused step, the negatives' search or the epoch's shuffle.")
_BASELINE_REV = flags.DEFINE_string("baseline_rev", None,
                                    "Git revision whose kernel source (and common.h) is the "
                                    "baseline.")
_BASELINE_SOURCE = flags.DEFINE_string(
    "baseline_source", None, "A .cc file to use as the baseline instead (next to its own "
    "common.h if it has one, else the working tree's).")
_SHAPES = flags.DEFINE_list("shapes", ["ml-1m", "ml-20m"], "Table shapes (benchmarks.step_inputs).")
_MARGINS = flags.DEFINE_list("margins", ["0.5", "0.1"], "triplet_sgd: triplet margins to time.")
_EXPONENTS = flags.DEFINE_list("exponents", ["0", "0.2"], "missing_items: negative exponents to "
                               "time (0: uniform negatives).")
_NEGATIVES = flags.DEFINE_list("negatives", ["1", "2"], "shuffle: negatives per triplet to time.")
_REPS = flags.DEFINE_integer("reps", 15, "Timed epochs per kernel and margin.", lower_bound=1)
_BATCH = flags.DEFINE_integer("batch_size", TARGET_BATCH, "Triplets per batch.", lower_bound=1)
_LEARNING_RATE = flags.DEFINE_float(
    "learning_rate", 200.0, "Sparse SGD's step size on the batch's mean loss (tuned configs use "
    "hundreds to thousands; a small one leaves nearly every triplet active).")
_OUT = flags.DEFINE_string("out", outputs.default_output("kernel_ab.json"), "Output JSON.")


def baseline_files(folder: pathlib.Path) -> pathlib.Path:
  """Writes the baseline's source (and header) into `folder`; returns the source's path."""
  path = _SOURCES[_KERNEL.value]
  source = folder / "baseline" / pathlib.Path(path).name
  source.parent.mkdir()
  if _BASELINE_SOURCE.value:
    given = pathlib.Path(_BASELINE_SOURCE.value)
    try:
      source.write_bytes(given.read_bytes())
    except OSError as e:
      raise app.UsageError(f"--baseline_source={given}: cannot read it ({e.strerror}).") from e
    header = given.parent / "common.h"
    header = header if header.exists() else _REPO / _HEADER
    (source.parent / "common.h").write_bytes(header.read_bytes())
    return source
  for path, target in ((path, source), (_HEADER, source.parent / "common.h")):
    shown = subprocess.run(["git", "show", f"{_BASELINE_REV.value}:{path}"], cwd=_REPO,
                           capture_output=True, check=False)
    if shown.returncode != 0:
      why = shown.stderr.decode(errors="replace").strip().splitlines()
      raise app.UsageError(f"--baseline_rev={_BASELINE_REV.value}: no {path} there "
                           f"({why[-1] if why else 'git failed'}).")
    target.write_bytes(shown.stdout)
  return source


def _call(target: str, with_l2_cotangent: bool, tables, users, pos, neg, cotangent,
          learning_rate, margin: float):
  """One fused step through `target`; the kernel's arguments gained `l2_cotangent` after
  1b4b8b0 (WARP's scale weighs the hinge, not the l2 term), so both signatures are called."""
  user_table, item_table = tables
  call = jax.ffi.ffi_call(
      target, (jax.ShapeDtypeStruct(user_table.shape, jnp.float32),
               jax.ShapeDtypeStruct(item_table.shape, jnp.float32),
               jax.ShapeDtypeStruct(users.shape, jnp.float32),
               jax.ShapeDtypeStruct((3, *users.shape, user_table.shape[1]), jnp.float32)),
      input_output_aliases={0: 0, 1: 1})
  extra = (cotangent,) if with_l2_cotangent else ()
  return call(user_table, item_table, users, pos, neg, cotangent, *extra,
              jnp.float32(learning_rate), margin=np.float32(margin), l2=np.float32(0.0))


def register(libraries: dict[str, pathlib.Path]) -> dict[str, tuple[str, bool]]:
  """Registers each library's TripletSgdUpdate (`register_handlers`) and finds which of the
  kernel's signatures it has; returns {name: (target, with_l2_cotangent)}.

  Raises:
    app.UsageError: a library without the handler, or whose handler takes neither signature.
  """
  targets = {}
  tables = (jnp.ones((2, 8), jnp.float32), jnp.ones((2, 8), jnp.float32))
  batch = (jnp.zeros(1, jnp.int32), jnp.zeros(1, jnp.int32), jnp.ones(1, jnp.int32),
           jnp.ones(1, jnp.float32))
  for name, (target,) in register_handlers(libraries, ("TripletSgdUpdate",)).items():
    for with_l2_cotangent in (True, False):
      try:
        smoke = functools.partial(_call, target, with_l2_cotangent, learning_rate=0.1,
                                  margin=0.5)
        jax.block_until_ready(jax.jit(smoke)(tuple(jnp.copy(t) for t in tables), *batch))
      except jax.errors.JaxRuntimeError:
        continue
      targets[name] = (target, with_l2_cotangent)
      break
    else:
      raise app.UsageError(f"the {name} kernel's TripletSgdUpdate takes neither of the fused "
                           "step's signatures (with or without l2_cotangent).")
  return targets


def register_handlers(libraries: dict[str, pathlib.Path],
                      handlers: tuple[str, ...]) -> dict[str, tuple[str, ...]]:
  """Registers each library's `handlers` (their symbols) under names of their own; returns
  {name: (one target per handler)}.

  Raises:
    app.UsageError: a library without one of them.
  """
  targets = {}
  for name, path in libraries.items():
    built = ctypes.CDLL(str(path))
    names = []
    for handler in handlers:
      if not hasattr(built, handler):
        raise app.UsageError(f"the {name} kernel defines no {handler} handler.")
      names.append(f"tripjax_ab_{handler}_{name}_{path.parent.name}")  # fresh for every build
      jax.ffi.register_ffi_target(names[-1], jax.ffi.pycapsule(getattr(built, handler)),
                                  platform="cpu")
    targets[name] = tuple(names)
  return targets


def _alternate(calls: dict, reps: int) -> tuple[dict, dict]:
  """Runs each of {name: call} reps + 1 times, alternating who goes first (the first round
  compiles and is not timed); returns ({name: seconds per round}, {name: last result})."""
  seconds, results = {name: [] for name in calls}, {}
  for rep in range(reps + 1):
    for name in (list(calls) if rep % 2 else list(calls)[::-1]):
      started = time.perf_counter()
      results[name] = jax.block_until_ready(calls[name]())
      if rep:
        seconds[name].append(time.perf_counter() - started)
  return seconds, results


def _timing(seconds: dict) -> dict:
  """The medians and the per-round candidate / baseline ratios of `_alternate`'s seconds."""
  ratios = np.array(seconds["candidate"]) / np.array(seconds["baseline"])
  return {"baseline_s": float(np.median(seconds["baseline"])),
          "candidate_s": float(np.median(seconds["candidate"])),
          "candidate_over_baseline": float(np.median(ratios)),
          "ratio_min": float(ratios.min()), "ratio_max": float(ratios.max()),
          "seconds": seconds}


def _progress(head: str, row: dict, outcome: str) -> None:
  """Prints one timed row: `head`, both kernels' medians, the per-round ratio and `outcome`."""
  print(f"{head} baseline {row['baseline_s']:.4f} s, candidate {row['candidate_s']:.4f} s, "
        f"candidate / baseline {row['candidate_over_baseline']:.3f} ({row['ratio_min']:.3f}-"
        f"{row['ratio_max']:.3f}), {outcome}", flush=True)


def time_search(shape: str, targets: dict[str, tuple[str, str]]) -> list[dict]:
  """Both search kernels on one shape's epoch, every exponent, alternating call by call."""
  matrix = random_positives(*SHAPES[shape])
  rows = []
  for exponent in map(float, _EXPONENTS.value):
    sampler = sampling.EpochSampler(matrix, _BATCH.value, negative_exponent=exponent,
                                    search_kernel=False)
    v, indptr, num_missing, weighted, users = sampler.search_arrays()
    shape_of_words = (users.shape[0], 1) if weighted is None else (2, users.shape[0], 1)
    words = jnp.asarray(np.random.default_rng(0).integers(0, 2**32, shape_of_words, np.uint32))
    searches = {name: jax.jit(functools.partial(
        kernels.missing_items_from_words, v, indptr, num_missing, weighted, users,
        targets=target)) for name, target in targets.items()}
    seconds, drawn = _alternate({name: functools.partial(search, words)
                                 for name, search in searches.items()}, _REPS.value)
    same = bool(jnp.array_equal(drawn["candidate"], drawn["baseline"]))
    row = {"shape": shape, "exponent": exponent, "searches": int(users.shape[0]),
           **_timing(seconds), "same_items": same}
    _progress(f"[{shape}] exponent {exponent}:", row, f"same items: {same}")
    rows.append(row)
  return rows


def time_shuffle(shape: str, targets: dict[str, tuple[str]]) -> list[dict]:
  """Both shuffle kernels on one shape's epoch of triplets (in row order, padded to whole
  batches, no order returned, as the sampler calls it), every `--negatives`, alternating."""
  matrix = random_positives(*SHAPES[shape])
  rng = np.random.default_rng(0)
  users = jnp.asarray(np.repeat(np.arange(matrix.shape[0], dtype=np.int32),
                                np.diff(matrix.indptr)))
  items = jnp.asarray(matrix.indices.astype(np.int32))
  padded = -(-matrix.nnz // _BATCH.value) * _BATCH.value
  rows = []
  for negatives in map(int, _NEGATIVES.value):
    neg = jnp.asarray(rng.integers(0, matrix.shape[1], (matrix.nnz, negatives), np.int32))
    scratch = {name: jnp.zeros(kernels.scratch_size(matrix.nnz, negatives), jnp.int32)
               for name in targets}
    shuffles = {name: jax.jit(functools.partial(
        kernels.shuffle, padded_size=padded, batch_size=_BATCH.value, with_order=False,
        target=target[0]), donate_argnums=4) for name, target in targets.items()}
    key = jnp.asarray(rng.integers(0, 2**32, 2, np.uint32))

    def run(name):
      _, *triplets, scratch[name] = shuffles[name](key, users, items, neg, scratch[name])
      return triplets

    seconds, shuffled = _alternate({name: functools.partial(run, name) for name in shuffles},
                                   _REPS.value)
    same = all(bool(jnp.array_equal(a, b))
               for a, b in zip(shuffled["candidate"], shuffled["baseline"]))
    row = {"shape": shape, "negatives": negatives, "triplets": int(matrix.nnz),
           **_timing(seconds), "same_triplets": same}
    _progress(f"[{shape}] {negatives} negatives:", row, f"same triplets: {same}")
    rows.append(row)
  return rows


def make_epoch(target: tuple[str, bool], margin: float, learning_rate: float):
  """A jitted epoch of `target`'s fused step: (tables, batches) -> (tables, active share)."""
  def one_batch(tables, batch):
    users, pos, neg, cotangent = batch
    *tables, loss, _ = _call(*target, tables, users, pos, neg, cotangent, learning_rate, margin)
    return tuple(tables), jnp.sum((loss > 0) & (cotangent > 0))

  def epoch(tables, batches):
    tables, active = jax.lax.scan(one_batch, tables, batches)
    return tables, jnp.sum(active) / jnp.maximum(jnp.sum(batches[3] > 0), 1)

  return jax.jit(epoch, donate_argnums=0)


def time_shape(shape: str, targets: dict[str, tuple[str, bool]]) -> list[dict]:
  """Both kernels on one shape, every margin, alternating epoch by epoch."""
  num_users, num_items, positives = SHAPES[shape]
  matrix = random_positives(num_users, num_items, positives)
  sampler = sampling.EpochSampler(matrix, _BATCH.value, -(-matrix.nnz // _BATCH.value))
  drawn = sampler.epoch(0)
  weights = drawn.weights[0]
  batches = (drawn.users[0], drawn.pos[0], drawn.neg[0][..., 0],
             weights / jnp.maximum(jnp.sum(weights > 0, axis=-1, keepdims=True), 1))
  key_user, key_item = jax.random.split(jax.random.key(0))
  rows = []
  for margin in map(float, _MARGINS.value):
    epochs = {name: make_epoch(target, margin, _LEARNING_RATE.value)
              for name, target in targets.items()}
    tables = {name: (0.1 * jax.random.normal(key_user, (num_users, TARGET_DIM)),
                     0.1 * jax.random.normal(key_item, (num_items, TARGET_DIM)))
              for name in targets}
    def run(name):
      tables[name], active = epochs[name](tables[name], batches)
      return active

    seconds, active = _alternate({name: functools.partial(run, name) for name in epochs},
                                 _REPS.value)
    difference = max(float(jnp.max(jnp.abs(a - b)))
                     for a, b in zip(tables["candidate"], tables["baseline"]))
    row = {"shape": shape, "margin": margin, "active": float(active["candidate"]),
           "epoch_triplets": int(sampler.num_positives), **_timing(seconds),
           "max_table_difference": difference}
    _progress(f"[{shape}] margin {margin}: active {row['active']:.2f},", row,
              f"tables differ by {difference:.2e}")
    rows.append(row)
  return rows


def main(argv):
  del argv
  if bool(_BASELINE_REV.value) == bool(_BASELINE_SOURCE.value):
    raise app.UsageError("name the baseline kernel with one of --baseline_rev (a git revision) "
                         "or --baseline_source (a .cc file).")
  unknown = sorted(set(_SHAPES.value) - set(SHAPES))
  if unknown or not _SHAPES.value:
    raise app.UsageError(f"--shapes: {'unknown ' + ', '.join(unknown) if unknown else 'empty'}; "
                         f"choose from {', '.join(SHAPES)}.")
  kernel = _KERNEL.value
  step = kernel == "triplet_sgd"
  values = {"triplet_sgd": _MARGINS, "missing_items": _EXPONENTS, "shuffle": _NEGATIVES}[kernel]
  own = (values, _LEARNING_RATE) if step else (values,)
  for other in (_MARGINS, _LEARNING_RATE, _EXPONENTS, _NEGATIVES):
    if other.present and all(other is not flag for flag in own):
      raise app.UsageError(f"--{other.name} is not used with --kernel={kernel}; drop it.")
  number = int if kernel == "shuffle" else float
  try:
    numbers = [number(m) for m in values.value]
  except ValueError as e:
    raise app.UsageError(f"--{values.name}={','.join(values.value)}: {e}.") from e
  if not numbers:
    raise app.UsageError(f"--{values.name} is empty; name at least one value.")
  if kernel == "shuffle" and min(numbers) < 1:
    raise app.UsageError(f"--negatives={','.join(values.value)}: each must be at least 1.")
  if jax.default_backend() != "cpu":
    raise app.UsageError("the kernels are CPU kernels; run with JAX_PLATFORMS=cpu.")
  with tempfile.TemporaryDirectory() as folder:
    folder = pathlib.Path(folder)
    libraries = compiler.build_each({"baseline": baseline_files(folder)}, folder)
    targets = register(libraries) if step else register_handlers(libraries, _HANDLERS[kernel])
    # The candidate: the working tree's kernels as the library builds, caches and checks them.
    library.register()
    targets["candidate"] = {
        "triplet_sgd": (library.TRIPLET_SGD_UPDATE, True),
        "missing_items": (library.MISSING_ITEMS, library.WEIGHTED_MISSING_ITEMS),
        "shuffle": (library.SHUFFLE,)}[kernel]
    load = os.getloadavg()
    timed = {"triplet_sgd": time_shape, "missing_items": time_search,
             "shuffle": time_shuffle}[kernel]
    rows = [row for shape in _SHAPES.value for row in timed(shape, targets)]
  payload = {"command": "python -m benchmarks.kernel_ab " + " ".join(
                 f"--{name}={value}" for name, value in (
                     ("kernel", None if step else kernel),
                     ("baseline_rev", _BASELINE_REV.value),
                     ("baseline_source", _BASELINE_SOURCE.value),
                     ("shapes", ",".join(_SHAPES.value)), (values.name, ",".join(values.value)),
                     ("reps", _REPS.value), ("out", _OUT.value)) if value),
             "kernel": kernel,
             "baseline_rev": _BASELINE_REV.value, "baseline_source": _BASELINE_SOURCE.value,
             "batch_size": _BATCH.value,
             **({"dim": TARGET_DIM, "learning_rate": _LEARNING_RATE.value, "margins": numbers}
                if step else {values.name: numbers}),
             "cpu_count": os.cpu_count(), "load_average_start": list(load),
             "load_average_end": list(os.getloadavg()), "results": rows}
  print(f"wrote {files.write_json_atomic(_OUT.value, payload)}")


if __name__ == "__main__":
  run_cli.run(main)  # bad flags and files: one line, as in experiments/
