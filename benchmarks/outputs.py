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
