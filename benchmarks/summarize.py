"""Writes a RESULTS.md from the committed benchmark results, the files in benchmarks/results/.

Every figure in RESULTS.md comes from one of those files; each section names the command that
writes its file there, so anyone can rerun it and then rerun this script. The page goes to
runs/benchmarks/RESULTS.md unless `--out` names another file; the committed page is updated by

  python -m benchmarks.summarize --out=benchmarks/RESULTS.md
"""

import json
import pathlib
import re

from absl import flags

from benchmarks import compare
from benchmarks import outputs
from benchmarks import time_to_auc
from experiments import run_cli
from tripjax import errors
from tripjax import files

_REPO = pathlib.Path(__file__).resolve().parents[1]

_RESULTS = flags.DEFINE_string("results_dir", str(pathlib.Path(__file__).parent / "results"),
                               "Folder holding the benchmark JSON files.")
_OUT = flags.DEFINE_string("out", outputs.default_output("RESULTS.md"), "Markdown file to write.")

# The commands behind the results files that record none (`writing_to` adds the output flag).
PARSE_COMMAND = "python -m benchmarks.parse_speed --lines=1000000 --repeats=5"
PIPELINE_COMMAND = "python -m benchmarks.pipeline_memory --preset=ml-20m --repeats=3"
EVAL_COMMAND = "python -m benchmarks.eval_speed --repeats=7"
TOPK_COMMAND = "python -m benchmarks.topk_speed"


def _load(results_dir, name):
  path = pathlib.Path(results_dir) / name
  return (_read(path), path) if path.exists() else (None, path)


def _read(path: pathlib.Path):
  try:
    return json.loads(path.read_text())
  except ValueError as e:
    raise errors.InvalidInput(f"{path}: not JSON ({e}); rerun the command that writes it.") \
        from e


def _section(section, d, path) -> list[str]:
  """`section(d, path)`, or a one-line error naming a file that is not that section's kind."""
  try:
    return section(d, path)
  except (KeyError, TypeError, IndexError, AttributeError, ValueError) as e:
    raise errors.InvalidInput(f"{path}: not the results this page expects there "
                              f"({type(e).__name__}: {e}); rerun the command that writes it.") \
        from e


def shown(path) -> str:
  """`path` as named from the repository root (absolute when outside the repository)."""
  path = pathlib.Path(path).resolve()
  try:
    return str(path.relative_to(_REPO))
  except ValueError:
    return str(path)


def writing_to(command: str, flag: str, path) -> str:
  """`command` with its `--flag` set to `path`: the command that writes the file `path`.

  A file's recorded command may name no output (made when the scripts wrote to
  benchmarks/results/ by default) or another one (copied there): shown as recorded, it would not
  update the file.

  Args:
    command: a benchmark script's command line.
    flag: the script's output flag, without dashes.
    path: the file the command is to write.

  Returns:
    `command` without any `--flag` it had, then ` --flag=<path>`.
  """
  command = re.sub(rf"\s--{re.escape(flag)}(?:=|\s+)\S+", "", command)
  return f"{command} --{flag}={shown(path)}"


def _rate(x):
  return f"{x / 1e6:.2f}M"


def parse_section(d, path):
  return [
      "## Parsing ML-1M's `::` format (issue 2)",
      f"`{writing_to(PARSE_COMMAND, 'out', path)}`",
      "",
      "| reader | median s | speed-up |",
      "|---|---|---|",
      f"| pandas python engine | {d['pandas_python_engine_s']['median']:.3f} | 1x |",
      f"| tripjax `read_ratings` | {d['tripjax_read_ratings_s']['median']:.3f} | "
      f"{d['speedup']:.1f}x |",
      f"\n{d['lines']:,} lines, medians of {d['repeats']} runs, both measured in the same run.",
  ]


def pipeline_section(d, path):
  stages = d["stages"]
  rows = [
      "## Pipeline memory at ML-20M size (issue 2)",
      f"`{writing_to(PIPELINE_COMMAND, 'output', path)}`",
      "",
      "| stage | median s | peak RSS MiB |",
      "|---|---|---|",
  ]
  for name in ("generate", "pipeline", "end_to_end"):
    s = stages[name]
    rows.append(f"| {name} | {s['median_total_s']:.1f} | {s['max_peak_rss_mib']:.0f} |")
  rows.append(f"\n{d['num_ratings']:,} synthetic ratings; limit {d['limit_mib']} MiB; "
              f"load average {d['environment']['load_average_before'][0]:.1f} at start.")
  return rows


def eval_section(d, path):
  m = d["ml1m"]
  rows = [
      "## Evaluation vs the lab's per-user sklearn loop (issue 3)",
      f"`{writing_to(EVAL_COMMAND, 'output', path)}`",
      "",
      f"ML-1M shape ({m['shape']['users']:,} users x {m['shape']['items']:,} items, "
      f"10 test items per user, D={m['shape']['dim']}), CPU ({d['versions']['cpu_count']} cores):",
      "",
      "| what | seconds |",
      "|---|---|",
      f"| lab loop, extrapolated from {m['lab_loop']['users_timed']} users | "
      f"{m['lab_loop']['extrapolated_s_all_users']:.2f} |",
  ]
  for block, r in m["evaluate"].items():
    rows.append(f"| `evaluate`, block {block} (AUC + all @20 metrics) | {r['median_s']:.3f} |")
  rows += [
      "",
      f"Speed-up: {m['speedup_vs_lab']:.0f}x from the medians (median of per-round ratios "
      f"{m['speedup_median_of_rounds']:.0f}x). Largest per-user AUC difference from sklearn on the "
      f"same scores: {m['max_abs_auc_diff_vs_sklearn_same_scores']:.1e}.",
  ]
  for r in d.get("ml20m", []):
    rows.append(f"ML-20M shape ({r['users']:,} x {r['items']:,}), block {r['block_size']}: peak RSS "
                f"{r['peak_rss_gib']:.2f} GiB, {r['evaluate_s_incl_compile']:.0f} s including compile.")
  return rows


def topk_section(d, path):
  rows = [
      "## Top-k recommendations for every user (issue 6)",
      f"`{writing_to(TOPK_COMMAND, 'out', path)}`",
      "",
      "| block | s per 1000 users |",
      "|---|---|",
  ]
  for r in d["runs"]:
    rows.append(f"| {r['batch_size']} | {r['median_s_per_1000_users']:.3f} |")
  s = d["shape"]
  rows.append(f"\n{s['users']:,} x {s['items']:,}, D={s['dim']}, k={s['k']}, seen items excluded.")
  return rows


def throughput_section(d, path):
  rows = [
      f"## Training throughput, {d['device_kind']} (issue 5): `{path.name}`",
      f"`{writing_to(d['command'], 'out', path)}`",
      "",
      "Target rows: dim 64, batch 4096, triplets/s of the jitted step (compile apart), beside "
      "implicit's BPR samples/s measured in the same run: `ratio` from the medians (BPR timed "
      "before and after the sweep), `per-round ratio` the median over rounds of (this round's "
      "step run / the BPR iteration timed just before it), with its range.",
      "",
      "| shape | step | optimizer | triplets/s | BPR samples/s | ratio "
      "| per-round ratio (min-max) |",
      "|---|---|---|---|---|---|---|",
  ]
  for t in d["target"]:
    bpr = d["bpr"].get(t["shape"], {}).get("samples_per_s")
    rounds = t.get("ratio_per_round")
    interleaved = (f"{t['ratio_vs_bpr_interleaved']:.2f} ({min(rounds):.2f}-{max(rounds):.2f})"
                   if rounds else "-")
    rows.append(f"| {t['shape']} | {t['step']} | {t['optimizer']} | {_rate(t['triplets_per_s'])} | "
                f"{_rate(bpr) if bpr else '-'} | {t['ratio_vs_bpr']:.2f} | {interleaved} |")
  if d.get("epochs"):
    rows += ["", "Whole epochs through `train.run_epoch` at batch 4096, dim 64: the share of "
             "the epoch spent drawing its triplets (shuffle, negatives, batching), and the whole "
             "epoch's triplets/s against BPR's samples/s (whose iterations include their own "
             "sampling).", "",
             "| shape | optimizer | negative_exponent | sampling s | steps s | sampling share "
             "| epoch triplets/s | vs BPR |",
             "|---|---|---|---|---|---|---|---|"]
    for e in d["epochs"]:
      optimizer = e["optimizer"] + (" (fused_cpu)" if e.get("fused_cpu") else "")
      bpr = d["bpr"].get(e["shape"], {}).get("samples_per_s")
      vs_bpr = f"{e['epoch_triplets_per_s'] / bpr:.2f}" if bpr else "-"
      rows.append(f"| {e['shape']} | {optimizer} | {e.get('negative_exponent', 0.0):g} | "
                  f"{e['sampling_s']:.3f} | {e['steps_s']:.3f} | {e['sampling_share']:.0%} | "
                  f"{_rate(e['epoch_triplets_per_s'])} | {vs_bpr} |")
  rows.append(f"\nLoad average {d['load_average_start'][0]:.1f} at start, "
              f"{d['load_average_end'][0]:.1f} at end (2 shared cores: read ratios, not absolutes).")
  return rows


def step_profile_section(d, path):
  rows = [f"## Where the training step's time goes, {d['device_kind']}: `{path.name}`",
          f"`{writing_to(d['command'], 'out', path)}`", "",
          f"`train.make_train_step` ({d['optimizer']}, batch {d['batch_size']}, dim {d['dim']}, "
          f"{d['shape']} shape) under `jax.profiler`: the XLA ops' share of the step "
          f"({d['ops_us_per_batch']:.0f} us per batch with the profiler on).", "",
          "| kind | share |", "|---|---|"]
  for kind, share in sorted(d["share_by_kind"].items(), key=lambda kv: -kv[1]):
    rows.append(f"| {kind} | {share:.0%} |")
  rows += ["", "| op | kind | us per batch | share | from |", "|---|---|---|---|---|"]
  for op in d["ops"][:8]:
    rows.append(f"| {op['op']} | {op['kind']} | {op['us_per_batch']:.1f} | {op['share']:.0%} | "
                f"`{op['jax_op'].split('/')[-1]}` |")
  return rows


def item_item_fit_section(d, path):
  s, base = d["shape"], d["baseline"]
  rows = [f"## Item-item fits at the ML-20M shape (issue 13): `{path.name}`",
          f"`{writing_to(d['command'], 'out_json', path)}`", "",
          f"Random bool CSR, {s['users']:,} users x {s['items']:,} items, {s['positives']:,} "
          f"positives (item counts: median {s['item_count_median']:g}, max "
          f"{s['item_count_max']:,}), {d['environment']['device_kind']} "
          f"({d['environment']['cpus']} cores). Each fit runs in a fresh process with the "
          f"model's ML-100K flagfile; peak RSS is that process's, and the fit's own memory is "
          f"the peak minus a process that only loaded the matrix "
          f"({base.get('peak_rss_mib', float('nan')):.0f} MiB).", "",
          "| model | settings | fit s | peak RSS GiB | fit's own GiB | note |",
          "|---|---|---|---|---|---|"]
  for m in d["models"]:
    fit_s = f"{m['fit_s']:.1f}" if m.get("fit_s") is not None else "-"
    peak = f"{m['peak_rss_mib'] / 1024:.2f}" if "peak_rss_mib" in m else "-"
    own = f"{m['fit_rss_mib'] / 1024:.2f}" if m.get("fit_s") is not None else "-"
    note = m.get("error", "")
    if "ease_needs_bytes" in m:
      note = (f"needs {m['ease_needs_bytes'] / 2**30:.1f} GiB (its check)"
              + (f", limit {m['ease_memory_limit_bytes'] / 2**30:.1f} GiB"
                 if "ease_memory_limit_bytes" in m else "") + (f"; {note}" if note else ""))
    rows.append(f"| {m['model']} | {m.get('settings', '')} | {fit_s} | {peak} | {own} | "
                f"{note.replace('|', '/')} |")
  rows.append(f"\nMedian of {d['repeats']} fit(s) per model, the first including compilation; "
              f"load average {d['environment']['load_average_before'][0]:.1f} at start.")
  return rows


def ials_speed_section(d, path):
  rows = [f"## iALS against implicit's ALS, seconds per iteration (issue 13): `{path.name}`",
          f"`{writing_to(d['command'], 'out_json', path)}`", "",
          f"MovieLens-shaped random positives, alpha {d['alpha']:g}, lambda {d['reg']:g}, "
          f"{d['machine']} with {d['cpus']} cores (load average "
          f"{d['load_average_before'][0]:.1f} at start); each library on every core; medians of "
          f"{d['iterations']} iterations after an untimed one. implicit's alpha is tripjax's "
          "1 + alpha (same confidence).", "",
          "| shape | factors | solver | tripjax s/iteration | implicit s/iteration | tripjax speed-up |",
          "|---|---|---|---|---|---|"]
  for r in d["results"]:
    imp = r.get("implicit")
    solver = r["solver"] + (f" ({r['cg_steps']} steps)" if r["cg_steps"] else "")
    theirs = (f"{imp['median_iteration_s']:.3f} | {r['speedup_vs_implicit']:.2f}x" if imp
              else "- | -")
    rows.append(f"| {r['shape']} | {r['factors']} | {solver} | "
                f"{r['tripjax']['median_iteration_s']:.3f} | {theirs} |")
  return rows


# Per kernel of benchmarks.kernel_ab: what the table shows, its row key column and what says
# both builds computed the same (heading, cell).
_KERNEL_AB = {
    "triplet_sgd": ("The fused step", "on the same epoch of uniform triplets (batch {batch_size}, "
                    "dim {dim}, sparse SGD at {learning_rate:g}); `active`: the share of triplets "
                    "with a nonzero gradient in the last epoch. The tables' difference after the "
                    "same epochs is float rounding, grown by training at a large step size.",
                    ("margin", "active"), lambda r: (f"{r['margin']:g}", f"{r['active']:.2f}"),
                    ("tables differ by", lambda r: f"{r['max_table_difference']:.1e}")),
    "missing_items": ("The negatives' search kernel", "on one epoch's searches (one negative "
                      "per positive, in row order, the same random words); `same items`: "
                      "whether both drew the same negatives.",
                      ("negative exponent", "searches"),
                      lambda r: (f"{r['exponent']:g}", str(r["searches"])),
                      ("same items", lambda r: str(r["same_items"]))),
    "shuffle": ("The shuffle kernel", "on one epoch's triplets (in row order, padded to whole "
                "batches, the same key); `same triplets`: whether both laid out the same batches.",
                ("negatives", "triplets"), lambda r: (str(r["negatives"]), str(r["triplets"])),
                ("same triplets", lambda r: str(r["same_triplets"]))),
}


def kernel_ab_section(d, path):
  baseline = d.get("baseline_rev") or f"`{d.get('baseline_source')}`"
  title, setting, keys, key_cells, (same, same_cell) = _KERNEL_AB[d.get("kernel", "triplet_sgd")]
  rows = [f"## {title} against its version at {baseline} (issue 15): `{path.name}`",
          f"`{writing_to(d['command'], 'out', path)}`", "",
          "Both kernels built and timed in one process, alternately, " + setting.format(**d), "",
          f"| shape | {' | '.join(keys)} | baseline s | candidate s | candidate / baseline "
          f"(min-max) | {same} |", "|---|---|---|---|---|---|---|"]
  rows += [f"| {r['shape']} | {' | '.join(key_cells(r))} | {r['baseline_s']:.4f} | "
           f"{r['candidate_s']:.4f} | {r['candidate_over_baseline']:.2f} "
           f"({r['ratio_min']:.2f}-{r['ratio_max']:.2f}) | {same_cell(r)} |"
           for r in d["results"]]
  load = d["load_average_start"][0], d["load_average_end"][0]
  return rows + ["", f"Load average {load[0]:.1f} at start, {load[1]:.1f} at end."]


def time_to_auc_section(d, path):
  body = time_to_auc.markdown(d, writing_to(d["command"], "tta_out_json", path))
  loads = [a for info in d["methods"].values() for a in info.get("load_average", [])]
  note = (f"Load average {min(loads):.1f} to {max(loads):.1f} during the runs on "
          f"{d['cpus']} cores: the seconds are those of a shared machine; compare methods "
          "within the table." if loads else "")
  return [f"## Time to AUC, synthetic {d['shape']} (issue 15): `{path.name}`", ""] + [
      body.strip().split("\n", 1)[1].strip(), "", note]


def end_to_end_section(d, path):
  data = d["dataset"]
  rows = [f"## A whole run at the {data['name']} shape (issue 15): `{path.name}`",
          f"`{writing_to(d['command'], 'e2e_out_json', path)}`", "",
          f"`python -m experiments.train {' '.join(d['command_line'][2:])}` in a child process: "
          f"{data['users']} users x {data['items']} items, {data['train_positives']} training "
          f"positives; {d['cpus']} cores, load average {d['load_average'][0]:.1f} at the end.", "",
          "| phase | seconds |", "|---|---|"]
  rows += [f"| {phase} | {seconds:.1f} |" for phase, seconds in d["phase_seconds"].items()]
  rows += [f"| whole process | {d['process_seconds']:.1f} |", "",
           f"Peak resident memory {d['peak_rss_gib']:.2f} GiB (limit {d['limit_gib']:g} GiB: "
           f"{'under' if d['under_limit'] else 'OVER'}); AUC {d['model']['auc']:.4f}, NDCG@20 "
           f"{d['model']['ndcg@20']:.4f} (popularity {d['popularity']['auc']:.4f} / "
           f"{d['popularity']['ndcg@20']:.4f}). `data` is generating the synthetic ratings, "
           "filtering and splitting; `evaluate` is the last of the run's evaluations (every "
           "user, all unseen items)."]
  return rows


def compare_section(d, path):
  return ["## Every model on real MovieLens 100K",
          f"`{writing_to(d['command'], 'compare_json', path)}`", "",
          compare.markdown(d).strip()]


def summarize(results_dir, command="python -m benchmarks.summarize --out=benchmarks/RESULTS.md"):
  """Returns RESULTS.md's text from the JSON files in `results_dir`.

  Args:
    results_dir: the folder of the benchmark results.
    command: the command that writes the page, named at its top.

  Returns:
    The markdown text; each section names the command that writes its file in `results_dir`.
  """
  lines = ["# Benchmark results",
           "",
           f"Made by `{command}` from `{shown(results_dir)}/*.json`; each section names the "
           "command that writes its file. Timings are medians; compare ratios measured in one run "
           "(these machines are shared and noisy).",
           ""]
  sections = [("parse_speed.json", parse_section), ("pipeline_memory.json", pipeline_section),
              ("eval_speed.json", eval_section), ("topk_speed.json", topk_section)]
  for name, section in sections:
    d, path = _load(results_dir, name)
    if d is not None:
      lines += _section(section, d, path) + [""]
  per_file = [("throughput_*.json", throughput_section),
              ("step_profile_*.json", step_profile_section),
              ("item_item_fit_*.json", item_item_fit_section),
              ("ials_speed*.json", ials_speed_section), ("end_to_end_*.json", end_to_end_section),
              ("time_to_auc_*.json", time_to_auc_section),
              ("kernel_ab_*.json", kernel_ab_section)]
  for pattern, section in per_file:
    for path in sorted(pathlib.Path(results_dir).glob(pattern)):
      lines += _section(section, _read(path), path) + [""]
  accuracy = pathlib.Path(results_dir) / "accuracy_ml100k.md"
  if accuracy.exists():
    lines += ["## Accuracy on real MovieLens 100K (issue 5)", "", accuracy.read_text().strip(), ""]
  d, path = _load(results_dir, "compare_ml100k.json")
  if d is not None:
    lines += _section(compare_section, d, path) + [""]
  for name, title in (("triplet_ablation_ml100k.md", "The triplet model's levers (issue 14)"),
                      ("triplet_warp_ml100k.md", "WARP-style negatives (issue 14)"),
                      ("triplet_adaptive_margin_ml100k.md", "An adaptive margin (issue 14)"),
                      ("score_blend_ml100k.md", "Blends with iALS and EASE (issue 14)"),
                      ("features_ml100k.md", "Side features and cold items (issue 14)")):
    page = pathlib.Path(results_dir) / name
    if page.exists():
      body = page.read_text().strip().split("\n", 1)[1].strip()  # its own title dropped
      lines += [f"## {title}", "", body, ""]
  return "\n".join(lines)


def main(argv):
  del argv
  if not pathlib.Path(_RESULTS.value).is_dir():
    raise errors.InvalidInput(f"--results_dir={_RESULTS.value} is not a folder; name the "
                              "folder of the benchmarks' JSON files (benchmarks/results).")
  command = "python -m benchmarks.summarize" + "".join(
      f" --{f.name}={shown(f.value)}" for f in (_RESULTS, _OUT)
      if pathlib.Path(f.value).resolve() != pathlib.Path(f.default).resolve())
  out = files.write_atomic(_OUT.value, summarize(_RESULTS.value, command))
  print(f"wrote {out}")


if __name__ == "__main__":
  run_cli.run(main)  # bad flags and files: one line, as in experiments/
