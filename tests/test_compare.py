"""benchmarks.compare on synthetic-tiny: its numbers, its paired differences, its table, summarize."""

import dataclasses
import json

import numpy as np
import pytest

from benchmarks import compare
from benchmarks import outputs
from benchmarks import summarize
from tripjax import metrics
from tripjax import model
from tripjax import models
from tripjax import tuning
from tripjax.config import TrainConfig
from tripjax.data import registry

SEEDS = (0, 1)


@pytest.fixture(scope="module")
def configs():
  base = TrainConfig(dataset="synthetic-tiny", min_user_positives=5, test_per_user=3)
  return {"popularity": dataclasses.replace(base, model="popularity"),
          "ease": dataclasses.replace(base, model="ease", ease_lambda=10.0)}


@pytest.fixture(scope="module")
def results(configs):
  return compare.run_compare(configs, SEEDS, reference="ease")


def test_numbers_equal_a_direct_evaluation_of_the_same_fit(configs, results):
  for seed in SEEDS:
    for name, config in configs.items():
      config = dataclasses.replace(config, split_seed=seed)
      _, train, test = registry.load_split(config)
      params, _ = tuning.fit(config, train)
      offset = model.popularity_offset(train, config.popularity_penalty)
      direct = metrics.evaluate(models.get(config.model).score_fn(params, offset), train, test,
                                ks=(10, 20))
      row = results["rows"][name]
      for k in compare.COLUMNS:
        assert row["seeds"][seed][k] == pytest.approx(float(direct.means[k]), abs=0, rel=1e-12)
      if name == "popularity":  # paired against the reference, recomputed by hand
        _, ref_train, ref_test = registry.load_split(
            dataclasses.replace(configs["ease"], split_seed=seed))
        ref_params, _ = tuning.fit(dataclasses.replace(configs["ease"], split_seed=seed),
                                   ref_train)
        ref = metrics.evaluate(models.get("ease").score_fn(ref_params, None), ref_train, ref_test,
                               ks=(10, 20))
        keep = ~np.isnan(direct.per_user["auc"]) & ~np.isnan(ref.per_user["auc"])
        diff = (direct.per_user["auc"][keep].astype(np.float64) -
                ref.per_user["auc"][keep].astype(np.float64))
        paired = row["paired"]["auc"]["seeds"][seed]
        assert paired["users"] == keep.sum()
        assert paired["mean"] == pytest.approx(diff.mean(), rel=1e-12)
        assert paired["se"] == pytest.approx(diff.std(ddof=1) / np.sqrt(keep.sum()), rel=1e-12)
  for name, row in results["rows"].items():
    assert row["mean"]["auc"] == pytest.approx(np.mean([row["seeds"][s]["auc"] for s in SEEDS]))


def test_the_reference_against_itself_is_exactly_zero(results):
  paired = results["rows"]["ease"]["paired"]
  for metric in compare.PAIRED:
    for d in [*paired[metric]["seeds"].values(), paired[metric]["pooled"]]:
      assert d["mean"] == 0.0 and d["se"] == 0.0 and d["users"] > 1
  other = results["rows"]["popularity"]["paired"]["auc"]
  assert other["pooled"]["mean"] != 0.0
  assert other["pooled"]["users"] == sum(d["users"] for d in other["seeds"].values())


def test_markdown_has_one_row_per_model_and_survives_json(results, tmp_path):
  table = compare.markdown(dict(results, command="python -m benchmarks.compare --x=1"))
  rows = [line for line in table.splitlines() if line.startswith("| ")]
  assert len(rows) == 1 + len(results["rows"])  # the header, then one per model
  assert {r.split(" | ")[0][2:] for r in rows[1:]} == {"popularity", "ease"}
  assert "ΔAUC vs ease (mean ± SE)" in rows[0] and "AUC seed 1" in rows[0]
  assert "| +0.0000 ± 0.0000 | +0.0000 ± 0.0000 |" in table
  assert "Hyperparameters come from the flagfiles" in table
  # A fresh run says its later seeds reused the first seed's compiled step; an older JSON,
  # fitted when every seed compiled its own, keeps saying compilation is included.
  assert "the later seeds reuse its compiled step" in table
  older = {k: v for k, v in results.items() if k != "seeds_reuse_compiled_step"}
  assert "the fit, compilation included" in compare.markdown(older)
  assert table.endswith("Produced by `python -m benchmarks.compare --x=1`.\n")
  # summarize renders the JSON (string seed keys) the same way, naming the command to update it.
  written = json.loads(json.dumps(dict(results, command="python -m benchmarks.compare "
                                       "--compare_json=elsewhere.json", jax_version="x",
                                       device_kind="cpu")))
  (tmp_path / "compare_ml100k.json").write_text(json.dumps(written))
  page = summarize.summarize(tmp_path)
  assert compare.markdown(written).strip() in page
  assert f"--compare_json={tmp_path}/compare_ml100k.json`" in page
  assert "Every model" not in summarize.summarize(tmp_path / "empty")


def test_errors_and_defaults(configs):
  with pytest.raises(ValueError, match="reference"):
    compare.run_compare(configs, SEEDS, reference="triplet")
  with pytest.raises(ValueError, match="other data"):
    compare.run_compare(configs | {"x": dataclasses.replace(configs["ease"], test_per_user=2)},
                        SEEDS, reference="ease")
  paths = compare.default_configs()
  assert paths[0] == "experiments/configs/ml100k.cfg"
  assert all(p.removeprefix("experiments/configs/ml100k_").removesuffix(".cfg").split("_")[0]
             in models.NAMES for p in paths[1:])
  assert compare._OUT_JSON.default == outputs.default_output("compare_ml100k.json")
  assert compare._OUT_MD.default.startswith("runs/benchmarks/")


def test_a_models_variants_are_found_and_named_by_file(tmp_path):
  for name, body in (("ml100k.cfg", "--dim=8\n"), ("ml100k_ials.cfg", "--model=ials\n"),
                     ("ml100k_ials_low.cfg", "--model=ials\n--low_rating_weight=0.5\n"),
                     ("ml100k_notes.cfg", "--dim=8\n"), ("other.cfg", "--model=ials\n")):
    (tmp_path / name).write_text(body)
  paths = compare.default_configs(tmp_path)
  assert [p.rsplit("/", 1)[-1] for p in paths] == [
      "ml100k.cfg", "ml100k_ials.cfg", "ml100k_ials_low.cfg"]
  # The model's own file keeps the bare name; another file of the same model is named by file.
  assert set(compare.read_configs(paths)) == {"triplet", "ials", "ials (ml100k_ials_low.cfg)"}
  both_other = [str(tmp_path / "ml100k_ials_low.cfg"), str(tmp_path / "other.cfg")]
  assert set(compare.read_configs(both_other)) == {"ials (ml100k_ials_low.cfg)",
                                                   "ials (other.cfg)"}
