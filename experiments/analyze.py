"""Writes the lab's analysis of a trained run to W/report.md, with PNG figures in W/figures/.

  python -m experiments.analyze --workdir=W [--k=20]

A workdir without a finished checkpoint, or a bad --k, prints one line saying what is wrong and
exits 1.
"""

from absl import flags

from experiments import run_cli
from tripjax import report
from tripjax import train

_WORKDIR = flags.DEFINE_string("workdir", None, "A training run's folder.", required=True)
_K = flags.DEFINE_integer("k", 20, "Cut-off of the @k metrics and the top-k lists.")
_BLOCK_SIZE = flags.DEFINE_integer("block_size", 1024, "Users per evaluation block.",
                                   lower_bound=1)


def _write_report():
  run = train.restore_run(_WORKDIR.value)
  return report.write_report(run, _WORKDIR.value, k=_K.value, block_size=_BLOCK_SIZE.value)


def main(argv):
  del argv
  run_cli.quiet_checkpoint_logs()
  path = _write_report()
  print(f"wrote {path} and its figures in {path.parent / report.FIGURES_DIR}")


if __name__ == "__main__":
  run_cli.run(main)
