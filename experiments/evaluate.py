"""Evaluates the non-personalised baselines on a dataset and writes results.json.

  python -m experiments.evaluate --model=random --model=popularity --dataset=ml-100k \
      [--data_dir=...] [--threshold=4] [--min_user_positives=20] [--test_per_user=10] \
      [--split_seed=0] [--block_size=1024] [--k=10 --k=20] [--output_dir=...]

results.json goes to --output_dir (default runs/evaluate-<dataset>).
"""

import json
import pathlib

from absl import app
from absl import flags

from experiments import data_flags
from experiments import run_cli
from tripjax import baselines
from tripjax import data
from tripjax import files
from tripjax import metrics
from tripjax import workdir
from tripjax.config import SEED_LIMIT

MODELS = ("random", "popularity")

_MODEL = flags.DEFINE_multi_enum("model", list(MODELS), MODELS,
                                 "Baseline(s) to evaluate; repeat the flag for several.")
_RANDOM_SEED = flags.DEFINE_integer("random_seed", 0, "Seed of the random baseline.",
                                    lower_bound=0, upper_bound=SEED_LIMIT - 1)
_BLOCK_SIZE = flags.DEFINE_integer("block_size", 1024, "Users per evaluation block.",
                                   lower_bound=1)
_K = flags.DEFINE_multi_integer("k", [10, 20], "Cut-offs of the @k metrics.", lower_bound=1)
_OUTPUT_DIR = flags.DEFINE_string("output_dir", None, "Where results.json is written "
                                  "(default runs/evaluate-<dataset>).")


def _score_fn(name: str, train, num_items: int) -> metrics.ScoreFn:
  if name == "random":
    return baselines.random_scores(num_items, _RANDOM_SEED.value)
  return baselines.popularity_scores(train)


def _table(results: dict, names: tuple[str, ...]) -> str:
  header = f"{'model':<12}" + "".join(f"{n:>14}" for n in names) + f"{'users':>8}{'skipped':>9}"
  lines = [header]
  for model, res in results.items():
    cells = "".join(f"{res.means[n]:>14.4f}" for n in names)
    lines.append(f"{model:<12}{cells}{res.users_evaluated:>8}{res.users_skipped:>9}")
  return "\n".join(lines)


def main(argv):
  del argv
  given = data_flags.prepare_kwargs()
  output_dir = pathlib.Path(_OUTPUT_DIR.value or f"runs/evaluate-{given['name']}")
  if any((output_dir / name).exists() for name in (workdir.CONFIG_FILE, workdir.FLAGS_FILE,
                                                    workdir.CHECKPOINT_DIR)):
    raise app.UsageError(f"--output_dir={output_dir} holds a training run, whose results.json "
                         "this would replace; name another --output_dir.")
  files.check_writable(output_dir / "results.json")
  _, train, test = data.prepare(**given)
  num_users, num_items = train.shape
  ks = tuple(sorted(set(_K.value)))
  if ks[-1] > num_items:
    raise app.UsageError(f"--k={ks[-1]} is larger than the number of items ({num_items})")
  models = tuple(dict.fromkeys(_MODEL.value))
  results = {name: metrics.evaluate(_score_fn(name, train, num_items), train, test, ks=ks,
                                    block_size=_BLOCK_SIZE.value)
             for name in models}
  print(f"{given['name']}: {num_users} users x {num_items} items, {train.nnz} train / "
        f"{test.nnz} test positives")
  print(_table(results, metrics.metric_names(ks)))
  out = {"dataset": given["name"], "num_users": num_users, "num_items": num_items,
         "settings": {"threshold": given["threshold"],
                      "min_user_positives": given["min_user_positives"],
                      "test_per_user": given["test_per_user"], "split_seed": given["split_seed"],
                      "random_seed": _RANDOM_SEED.value, "seed": given["seed"],
                      "block_size": _BLOCK_SIZE.value, "ks": list(ks)},
         "models": {name: res.to_dict() for name, res in results.items()}}
  path = output_dir / "results.json"
  files.write_json_atomic(path, out)
  print(f"wrote {path}")


if __name__ == "__main__":
  run_cli.run(main)
