"""Run by tests/test_distributed.py: one process of a 2-process job (2 CPU devices each), or
the single-process reference (`--process_id=-1`). Trains an epoch on a data:4 mesh (the
reference on one device) and writes the AUC and the tables to a JSON file (process 0)."""

import json
import sys

import jax
import numpy as np
import scipy.sparse as sp

from tripjax import distributed


def main(process_id: int, port: int, out: str):
  if process_id >= 0:
    distributed.initialize(f"127.0.0.1:{port}", 2, process_id, timeout_s=60)
  from tripjax import loop  # pylint: disable=g-import-not-at-top
  from tripjax import metrics  # pylint: disable=g-import-not-at-top
  from tripjax import model  # pylint: disable=g-import-not-at-top
  from tripjax.config import TrainConfig  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(0)
  train = sp.csr_matrix(rng.random((64, 80)) < 0.15)
  test = sp.csr_matrix((rng.random((64, 80)) < 0.05) & ~train.toarray())
  config = TrainConfig(dataset="synthetic-tiny", dim=8, epochs=1, batch_size=64,
                       optimizer="adam", learning_rate=0.05, num_negatives=2,
                       steps_per_dispatch=4, seed=3, mesh="data:4" if process_id >= 0 else "")
  params = loop.fit(config, train).state.params
  host = {k: np.asarray(jax.device_get(v)) for k, v in params.items()}
  auc = metrics.evaluate(model.score_fn(host), train, test, block_size=16).means["auc"]
  if distributed.is_writer():
    with open(out, "w") as f:
      json.dump({"processes": jax.process_count(), "devices": jax.device_count(), "auc": auc,
                 "item": host["item"].tolist(), "user": host["user"].tolist()}, f)


if __name__ == "__main__":
  main(int(sys.argv[1]), int(sys.argv[2]), sys.argv[3])
