"""Where the benchmark scripts write: under runs/benchmarks/ unless a command names another file.

Nothing a benchmark script writes by default lands among the repository's committed files:
every default output is under `runs/benchmarks/` (relative to the working directory, the
repository root; git ignores `/runs/`). The committed figures, `benchmarks/results/*` and
`benchmarks/RESULTS.md`, change only when a command names them, e.g.

  python -m benchmarks.eval_speed --repeats=7 --output=benchmarks/results/eval_speed.json
  python -m benchmarks.summarize --out=benchmarks/RESULTS.md
"""

RUNS_DIR = "runs/benchmarks"
RESULTS_DIR = "benchmarks/results"


def default_output(name: str) -> str:
  """The default path of the output file `name`: `runs/benchmarks/<name>`."""
  return f"{RUNS_DIR}/{name}"


def base_config(flagfile: str):
  """A benchmark's base TrainConfig: `flagfile` (driver flags ignored), on the ML-100K
  benchmarks' `--data_dir` when one is given."""
  # Imported here: this module is read by every benchmark, most of which need no config.
  import dataclasses  # pylint: disable=g-import-not-at-top
  from benchmarks import ml100k_flags  # pylint: disable=g-import-not-at-top
  from tripjax.config import DRIVER_FLAGS, TrainConfig  # pylint: disable=g-import-not-at-top
  base = TrainConfig.from_flagfile(flagfile, ignore=DRIVER_FLAGS)
  if ml100k_flags.DATA_DIR.value:
    base = dataclasses.replace(base, data_dir=ml100k_flags.DATA_DIR.value, download=False)
  return base


def write_report(report: dict, render, module: str, json_path: str, md_path: str) -> None:
  """Records the command in `report`, writes it as JSON and `render(report, command)` as
  markdown (atomically), and prints the markdown. Both paths are checked first, so a bad
  markdown path does not leave the JSON replaced (`files.check_outputs`, which a script also
  calls before its run)."""
  import shlex  # pylint: disable=g-import-not-at-top
  import sys  # pylint: disable=g-import-not-at-top
  from tripjax import files  # pylint: disable=g-import-not-at-top
  files.check_outputs({"json": json_path, "markdown": md_path})
  command = f"python -m {module} " + " ".join(map(shlex.quote, sys.argv[1:]))
  report["command"] = command
  files.write_json_atomic(json_path, report)
  text = render(report, command)
  files.write_atomic(md_path, text)
  print(text)


VALIDATION_COLUMNS = ("auc", "precision@20", "recall@20", "ndcg@20")


def validation_table(report: dict, command: str, title: str, label: str, label_key: str,
                     note: str = "") -> str:
  """A markdown page of validation means (`triplet_ablation`, `score_blend`): one row per
  variant, each row's change against the first (the base) in brackets, and its fit seconds
  ("-" for none).

  Args:
    report: with `validation_seeds`, `validation_per_user` and `rows` (dicts holding
      `VALIDATION_COLUMNS`, `train_seconds` and the row's name under `label_key`).
    command: the command that wrote it.
    title: the page's heading.
    label: the first column's heading.
    label_key: the key of each row's name.
    note: a sentence after the description of the splits.
  """
  base = report["rows"][0]
  lines = [f"# {title}", "",
           f"Validation splits of the lab's training positives (seeds "
           f"{', '.join(map(str, report['validation_seeds']))}, "
           f"{report['validation_per_user']} positives per user); means over the splits; "
           f"the test positives are not used.{' ' + note if note else ''}", "",
           f"`{command}`", "",
           f"| {label} | AUC | P@20 | R@20 | NDCG@20 | fit s |",
           "| --- | --- | --- | --- | --- | --- |"]
  for row in report["rows"]:
    cells = [f"{row[k]:.4f}" if row is base else f"{row[k]:.4f} ({row[k] - base[k]:+.4f})"
             for k in VALIDATION_COLUMNS]
    fit = f"{row['train_seconds']:.1f}" if row["train_seconds"] else "-"
    lines.append(f"| {row[label_key]} | {' | '.join(cells)} | {fit} |")
  return "\n".join(lines) + "\n"
