r"""Accuracy on real MovieLens 100K: popularity, the lab's settings and the tuned flagfile.

  python -m benchmarks.accuracy_table --data_dir=/work/shared/data

For each split seed, trains the lab config (`ml1m_lab.cfg`'s model settings on ML-100K) and the
tuned config (`ml100k.cfg`) with `tripjax.train.train_and_evaluate` (each in a fresh temporary
workdir, evaluated once at the end) and reads popularity off the same split. Writes a markdown
table (mean AUC, precision/recall/NDCG@20 averaged over the seeds, AUC of every seed, median
train seconds) and the raw results as JSON, both naming the command that wrote them, to
runs/benchmarks/accuracy_ml100k.{md,json} unless `--out_md` and `--out_json` name other files.
The committed table (benchmarks/results/accuracy_ml100k.md, shown in benchmarks/RESULTS.md and
the README) was made, and is updated, with `TRIPJAX_DATA_DIR` set, by

  python -m benchmarks.accuracy_table --out_json=benchmarks/results/accuracy_ml100k.json \
      --out_md=benchmarks/results/accuracy_ml100k.md
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
import statistics
import tempfile

from absl import app
from absl import flags
from absl import logging
import jax

from benchmarks import ml100k_flags
from benchmarks import outputs
from experiments import run_cli
from tripjax import errors
from tripjax import files
from tripjax import model
from tripjax import train as train_lib
from tripjax import tuning
from tripjax.config import DRIVER_FLAGS, TrainConfig

COLUMNS = ("auc", "precision@20", "recall@20", "ndcg@20")
def on_split(config: TrainConfig, data_dir: str | None, split_seed: int) -> TrainConfig:
  """The config's model settings on the lab's ML-100K split `split_seed`, one final evaluation."""
  return dataclasses.replace(config, dataset="ml-100k", data_dir=data_dir, download=False,
                             split_seed=split_seed, eval_every=config.epochs)


def penalized_name(name: str, penalty: float) -> str:
  return f"{name} + popularity penalty {penalty:g}"


def cosine_only_name(name: str) -> str:
  return f"{name}, cosine only"


def uniform_negatives_name(name: str) -> str:
  return f"{name}, uniform negatives"


def liked_only_name(name: str) -> str:
  return f"{name}, liked ratings only"


def hardest_liked_name(name: str) -> str:
  return f"{name}, hardest of 2, liked ratings only"


def run_models(configs: dict[str, TrainConfig], data_dir: str | None, split_seeds: list[int],
               penalties: dict[str, float] | None = None) -> dict:
  """Trains every named config on every split; popularity comes from the same splits.

  Args:
    configs: name -> settings.
    data_dir: folder holding ml-100k/.
    split_seeds: the lab split seeds.
    penalties: name -> p > 0: the trained model `name` is also scored as
      `cos - p * z(log(1 + item count))` (`tripjax.tuning.popularity_offset`), a row of its own.

  A config that sets `popularity_penalty` also gets a row for the same trained model scored by
  the cosine alone (`cosine_only_name`), and one that sets `negative_exponent` a row for the
  same settings trained with uniform negatives (`uniform_negatives_name`), and one that sets
  `low_rating_weight` a row for the same settings trained on the liked ratings alone
  (`liked_only_name`), so that the share of each in the result stays visible. One that sets
  both `negative_temperature` and `low_rating_weight` also gets a row trained on the hardest
  of 2 candidates and the liked ratings alone, each triplet weighing 1 (`hardest_liked_name`:
  `ml100k.cfg`'s settings
  as issue 14 began), so that the later rounds' training time is measured against it in the
  same run.

  Returns:
    {"popularity"|name|penalized name|cosine-only name:
     {"seeds": {seed: metrics + train_seconds}}, ...}.
  """
  penalties = {k: v for k, v in (penalties or {}).items() if v}
  for name in penalties:
    if name not in configs:
      raise ValueError(f"popularity penalty for unknown model {name!r}; models: {list(configs)}")
    # Once TrainConfig carries the penalty, train_and_evaluate applies it: never twice.
    if getattr(configs[name], "popularity_penalty", 0.0):
      raise errors.InvalidInput(f"--popularity_penalty: the {name} flagfile already sets "
                       "--popularity_penalty; its scores include it.")
  names = list(configs) + [penalized_name(n, p) for n, p in penalties.items()]
  names += [cosine_only_name(n) for n, c in configs.items() if c.popularity_penalty]
  variants = {uniform_negatives_name(n): dataclasses.replace(c, negative_exponent=0.0)
              for n, c in configs.items() if c.negative_exponent}
  variants |= {liked_only_name(n): dataclasses.replace(c, low_rating_weight=0.0)
               for n, c in configs.items() if c.low_rating_weight}
  variants |= {hardest_liked_name(n): dataclasses.replace(
      c, num_negatives=2, negative_temperature=0.0, low_rating_weight=0.0,
      high_rating_weight=1.0, user_weight_exponent=0.0)
                for n, c in configs.items() if c.negative_temperature and c.low_rating_weight}
  names += list(variants)
  rows = {"popularity": {"seeds": {}}} | {name: {"seeds": {}} for name in names}
  for name, penalty in penalties.items():
    rows[penalized_name(name, penalty)]["popularity_penalty"] = penalty
  for seed in split_seeds:
    for name, config in (configs | variants).items():
      config = on_split(config, data_dir, seed)
      with tempfile.TemporaryDirectory() as workdir:
        results = train_lib.train_and_evaluate(config, workdir)
        if name in penalties:
          run = train_lib.restore_run(workdir)  # the parameters just trained and evaluated
          offset = tuning.popularity_offset(run.train, penalties[name])
          penalized = train_lib.evaluate(model.score_fn(run.params, offset), run.train,
                                         run.test, config.eval_block_size)
          rows[penalized_name(name, penalties[name])]["seeds"][seed] = dict(
              penalized, train_seconds=results["train_seconds"])
        if config.popularity_penalty:
          run = train_lib.restore_run(workdir)
          plain = train_lib.evaluate(model.score_fn(run.params), run.train, run.test,
                                     config.eval_block_size)
          rows[cosine_only_name(name)]["seeds"][seed] = dict(
              plain, train_seconds=results["train_seconds"])
      rows[name]["config"] = dataclasses.asdict(dataclasses.replace(config, split_seed=0))
      rows[name]["seeds"][seed] = dict(results["model"], train_seconds=results["train_seconds"])
      rows["popularity"]["seeds"][seed] = dict(results["popularity"], train_seconds=0.0)
      logging.info("split %d  %-10s AUC %.4f  (%.1fs)", seed, name, results["model"]["auc"],
                   results["train_seconds"])
  for row in rows.values():
    seeds = row["seeds"].values()
    row["mean"] = {k: statistics.fmean(s[k] for s in seeds) for k in COLUMNS}
    row["median_train_seconds"] = statistics.median(s["train_seconds"] for s in seeds)
  return rows


def markdown(rows: dict, split_seeds: list[int], command: str) -> str:
  """The README table."""
  head = (["model", "mean AUC"] + [f"AUC seed {s}" for s in split_seeds] +
          ["P@20", "R@20", "NDCG@20", "train s"])
  lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
  for name, row in rows.items():
    cells = [name, f"{row['mean']['auc']:.4f}"]
    cells += [f"{row['seeds'][s]['auc']:.4f}" for s in split_seeds]
    cells += [f"{row['mean'][k]:.4f}" for k in COLUMNS[1:]]
    cells.append(f"{row['median_train_seconds']:.1f}" if name != "popularity" else "-")
    lines.append("| " + " | ".join(cells) + " |")
  device = jax.devices()[0].device_kind
  note = ""
  if any("popularity_penalty" in row or name.endswith(", cosine only")
         for name, row in rows.items()):
    note = ("\n\nA popularity penalty p scores `cos(u, i) - p * z(log(1 + train count of i))` "
            "(z: standardised over the items; p chosen on the validation split by "
            "`experiments.tune --popularity_penalties`); `cosine only`: the same trained model "
            "scored by the cosine alone.")
  if any(name.endswith(", uniform negatives") for name in rows):
    note += ("\n\n`uniform negatives`: the same settings trained with negatives drawn "
             "uniformly instead of with probability ~ (1 + item's train positives) ** "
             "negative_exponent (`--negative_exponent`, chosen on validation by "
             "`experiments.tune`).")
  if any(name.endswith(", liked ratings only") and not name.endswith(hardest_liked_name(""))
         for name in rows):
    note += ("\n\n`liked ratings only`: the same settings trained without the ratings below "
             "the threshold (`--low_rating_weight=0`); the row above also trains on them, as "
             "positives of weight `--low_rating_weight`. Every row is evaluated alike: the "
             "test items are liked ones, ranked among every item not liked in train.")
  if any(name.endswith(hardest_liked_name("")) for name in rows):
    note += ("\n\n`hardest of 2, liked ratings only`: the same settings trained on the hardest "
             "of 2 candidate negatives (`--num_negatives=2 --negative_temperature=0`) and the "
             "liked ratings alone, each triplet weighing 1 (`--high_rating_weight=1 "
             "--user_weight_exponent=0`): `ml100k.cfg` as "
             "issue 14 began, whose training time that "
             "issue's budget (at most twice) is measured against.")
  return ("Real MovieLens 100K, lab pipeline (ratings >= 4, users with >= 20 positives, 10 test "
          f"positives per user), split seeds {', '.join(map(str, split_seeds))}; AUC over all "
          "items not in train, P/R/NDCG@20 averaged over the seeds; train seconds: median over "
          f"the seeds, compile excluded ({device}, JAX {jax.__version__}).\n\n" +
          "\n".join(lines) + note + f"\n\nProduced by `{command}`.\n")


_DATA_DIR = ml100k_flags.DATA_DIR
_LAB = flags.DEFINE_string("lab_flagfile", "experiments/configs/ml1m_lab.cfg",
                           "The lab's settings (its dataset is replaced by ml-100k).")
_TUNED = flags.DEFINE_string("tuned_flagfile", "experiments/configs/ml100k.cfg",
                             "The tuned settings.")
_PENALTY = flags.DEFINE_float(
    "popularity_penalty", 0.0, "When > 0, a row for the tuned model scored as "
    "`cos - p * z(log(1 + item count))` (p chosen on validation: experiments.tune "
    "--popularity_penalties).", lower_bound=0.0)
_OUT_JSON = flags.DEFINE_string("out_json", outputs.default_output("accuracy_ml100k.json"),
                                "Raw results.")
_OUT_MD = flags.DEFINE_string("out_md", outputs.default_output("accuracy_ml100k.md"),
                              "The markdown table.")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  logging.get_absl_handler().addFilter(lambda record: "/orbax/" not in record.pathname)
  files.check_outputs({"out_json": _OUT_JSON.value, "out_md": _OUT_MD.value})
  seeds = ml100k_flags.split_seeds()
  try:
    configs = {"lab config": TrainConfig.from_flagfile(_LAB.value, ignore=DRIVER_FLAGS),
               "tuned": TrainConfig.from_flagfile(_TUNED.value, ignore=DRIVER_FLAGS)}
  except ValueError as e:
    raise app.UsageError(str(e)) from e
  rows = run_models(configs, _DATA_DIR.value or None, seeds, {"tuned": _PENALTY.value})
  command = ("python -m benchmarks.accuracy_table" +
             (f" --tuned_flagfile={_TUNED.value}" if _TUNED.value != _TUNED.default else "") +
             (f" --popularity_penalty={_PENALTY.value:g}" if _PENALTY.value else "") +
             "".join(f" --{f.name}={f.value}" for f in (_OUT_JSON, _OUT_MD)
                     if f.value != f.default))
  flagfiles = {"lab config": {"path": _LAB.value, "text": pathlib.Path(_LAB.value).read_text()},
               "tuned": {"path": _TUNED.value, "text": pathlib.Path(_TUNED.value).read_text()}}
  files.write_atomic(_OUT_JSON.value, json.dumps(
      {"split_seeds": seeds, "rows": rows, "flagfiles": flagfiles, "jax_version": jax.__version__,
       "device_kind": jax.devices()[0].device_kind, "command": command}, indent=2) + "\n")
  table = markdown(rows, seeds, command)
  files.write_atomic(_OUT_MD.value, table)
  print(table)


if __name__ == "__main__":
  run_cli.run(main)  # bad flags and files: one line, as in experiments/
