"""Explanations per prediction: POST /explain on a real service and `score --explain`.

For the default linear model of every task, base value + contributions must give the pipeline's
own raw output (decision_function or predict) on the same rows; a random forest is explained by
SHAP once the project's `explain` group is installed; a family nothing explains gets a 501 that
names it. The preprocessing's columns are credited back to every kind of contract column.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
from pathlib import Path

import pytest
from projects import Project, run
from test_serving import holdout_records, in_project, serving

ROWS = 20

# The pipeline's raw output on the holdout's first rows: per class for multiclass, the positive
# class's log-odds for binary, the value for regression.
RAW_OUTPUT = """
import json, joblib, pandas as pd
from {package}.ops import science, settings
config, contract = settings.load(), science.contract()
model = joblib.load(config.model_file)
frame = contract.model_frame(pd.read_parquet(config.holdout_file).head({rows}))
task, classes = contract.target.task, [str(c) for c in getattr(model, "classes_", [])]
if task == "regression":
    print(json.dumps([[value] for value in model.predict(frame).tolist()]))
elif task == "binary":
    sign = 1 if classes[1] == str(contract.target.positive) else -1
    print(json.dumps([[sign * value] for value in model.decision_function(frame).tolist()]))
else:
    print(json.dumps(model.decision_function(frame).tolist()))
"""


def project_copy(generated, name: str, tmp_path: Path) -> Project:
    """A copy of the generated project (packaging and scoring write into it), its tools on PATH
    (dvc, for `package`)."""
    path = tmp_path / name
    shutil.copytree(generated(name), path, symlinks=True)
    return Project(path, {"PATH": f"{path / '.venv' / 'bin'}{os.pathsep}{os.environ['PATH']}"})


def packaged(project: Project) -> str:
    return project.ops("package").stdout.strip().splitlines()[-1]


def sums(prediction: dict) -> list[float]:
    """base + contributions of one answer, per output in the reply's order."""
    base, contributions = prediction["base_value"], prediction["contributions"]
    if not isinstance(base, dict):
        return [base + sum(contributions.values())]
    return [base[name] + sum(contributions[name].values()) for name in base]


@pytest.mark.parametrize("task", ["default", "multiclass", "regression"])
def test_a_linear_model_is_explained_exactly(generated, tmp_path, task):
    project = project_copy(generated, task, tmp_path)
    bundle = packaged(project)
    records = holdout_records(project)[:ROWS]
    expected = json.loads(
        in_project(project, RAW_OUTPUT.format(package=project.package, rows=ROWS))
    )

    with serving(project, "--bundle", bundle) as client:
        status, predicted = client.call("/predict", records)
        status_explained, explained = client.call("/explain", records)
        assert client.call("/explain", {**records[0], "nonsense": 1})[0] == 422
        assert client.call("/explain", {**records[0], "nonsense": 1}) == client.call(
            "/predict", {**records[0], "nonsense": 1}
        )
        paths = client.call("/openapi.json")[1]["paths"]
    assert status == status_explained == 200
    assert explained["scale"] == {"default": "log_odds", "multiclass": "logit"}.get(task, "value")
    assert "501" in paths["/explain"]["post"]["responses"]
    for answer, explanation, raw in zip(
        predicted["predictions"], explained["predictions"], expected, strict=True
    ):
        assert {k: explanation[k] for k in answer} == answer  # the same answer as /predict
        assert sums(explanation) == pytest.approx(raw, abs=1e-9)
        one = explanation["contributions"]
        assert sorted(next(iter(one.values())) if task != "regression" else one) == sorted(
            records[0]
        )

    scored = tmp_path / "scored.csv"
    source = tmp_path / "input.csv"
    with source.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(records[0]))
        writer.writeheader()
        writer.writerows(records)
    project.ops(
        "score", str(source), str(scored), "--bundle", bundle, "--explain", "--chunk-rows", "7"
    )
    with scored.open() as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == ROWS
    for row, explanation in zip(rows, explained["predictions"], strict=True):
        # Batch explains toward the predicted class (the positive one for binary).
        output = row["prediction"] if task == "multiclass" else None
        base = explanation["base_value"]
        contributions = explanation["contributions"]
        if isinstance(base, dict):
            output = output or next(iter(base))
            base, contributions = base[output], contributions[output]
        assert float(row["base_value"]) == pytest.approx(base, abs=1e-9)
        for feature, value in contributions.items():
            assert float(row[f"contribution.{feature}"]) == pytest.approx(value, abs=1e-9)


# Every kind of contract column through the default preprocessing, with a linear model and a
# forest: the transformed columns are credited back to the features they came from.
EVERY_KIND = """
import json
import numpy as np
import pandas as pd
from sklearn.ensemble import RandomForestRegressor
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from {package}.contract import (
    Boolean, Categorical, Contract, DateTime, Integer, Numeric, PassThrough, Target, Task, Text
)
from {package}.preprocessing import default_preprocessing
from {package}.ops.explain import Explainer
contract = Contract(
    columns=(
        Numeric("size", minimum=0, maximum=10, nullable=True),
        Integer("rooms", minimum=1, maximum=9),
        Boolean("garden"), Categorical("town", values=("a", "b", "c"), nullable=True),
        DateTime("built", earliest="2000-01-01", latest="2020-01-01"),
        Text("notes", nullable=True), PassThrough("id"),
    ),
    target=Target(name="good", task=Task.BINARY, classes=("no", "yes"), positive="yes"),
)
frame = contract.model_frame(contract.sample(300, seed=1))
target = np.where(np.arange(300) % 3 == 0, "yes", "no")
linear = Pipeline(
    [("preprocess", default_preprocessing(contract)), ("model", LogisticRegression())]
)
linear.fit(frame, target)
means = linear[:-1].transform(frame).mean(axis=0)
explainer = Explainer(linear, contract, means)
explanation = explainer.explain(dict(frame.head(5)))
# Which features' contributions move when one feature of a row changes.
moved = {{}}
for name in explanation.features:
    pair = pd.concat([frame.head(1)] * 2, ignore_index=True)
    pair.loc[1, name] = frame[name][frame[name].astype(str) != str(pair[name][0])].iloc[0]
    both = explainer.explain(dict(pair)).contributions[:, 0, :]
    moved[name] = [f for f, d in zip(explanation.features, abs(both[1] - both[0])) if d > 1e-12]
forest = Pipeline([("preprocess", default_preprocessing(contract)),
                   ("model", RandomForestRegressor(n_estimators=5, random_state=0))])
forest.fit(frame, np.arange(300.0))
print(json.dumps({{
    "features": explanation.features,
    "sums": (explanation.base + explanation.contributions.sum(axis=2))[:, 0].tolist(),
    "raw": linear.decision_function(frame.head(5)).tolist(),
    "moved": moved,
}}))
try:
    Explainer(forest, contract, None)
except Exception as error:
    print(json.dumps(str(error)))
"""


def test_every_kind_of_column_is_credited_to_its_feature(generated):
    project = Project(generated("default"), {})
    found, refusal = in_project(project, EVERY_KIND.format(package=project.package)).splitlines()
    found = json.loads(found)
    assert found["features"] == ["size", "rooms", "garden", "town", "built", "notes"]
    assert found["sums"] == pytest.approx(found["raw"], abs=1e-9)
    # One-hot indicators and date parts are credited to their own column only; free text is
    # not read by the default model.
    assert found["moved"] == {name: [name] for name in found["features"]} | {"notes": []}
    # This project has no `explain` group installed: the refusal says how to install SHAP.
    assert "uv sync --group explain" in json.loads(refusal)


# Replaces the project's trained model by another family and builds a bundle of it.
OTHER_FAMILY = """
import sys
from pathlib import Path
import joblib, pandas as pd
from sklearn.pipeline import Pipeline
from {package}.ops import bundle, science, settings, signing
from {package}.features import preprocessing
from {package} import train
config, contract = settings.load(), science.contract()
family = sys.argv[1]
if family == "forest":
    from sklearn.ensemble import RandomForestClassifier
    model = RandomForestClassifier(n_estimators=20, max_depth=4, random_state=0)
else:
    from sklearn.neighbors import KNeighborsClassifier
    model = KNeighborsClassifier()
frame = pd.read_parquet(config.holdout_file.with_name("train.parquet"))
pipeline = Pipeline([("preprocess", preprocessing()), ("model", model)])
pipeline.fit(contract.model_frame(frame), contract.target.to_model(frame[contract.target.name]))
joblib.dump(pipeline, config.model_file)
bundle.stale_stages = lambda settings: {{}}  # the model file is no longer dvc's output
data, _ = bundle.build(config, signing.private_key("publish", config.project_dir), allow_dirty=True)
Path(sys.argv[2]).write_bytes(data)
"""


def test_a_forest_is_explained_by_shap_and_other_families_get_501(generated, tmp_path):
    project = project_copy(generated, "default", tmp_path)
    run("uv", "sync", "--locked", "--group", "explain", cwd=project.path)
    records = holdout_records(project)[:ROWS]
    for family in ("forest", "neighbours"):
        bundle = tmp_path / f"{family}.zip"
        in_project(project, OTHER_FAMILY.format(package=project.package), family, str(bundle))
        with serving(project, "--bundle", str(bundle)) as client:
            predicted = client.call("/predict", records)
            explained = client.call("/explain", records)
        assert predicted[0] == 200
        if family == "neighbours":
            assert explained[0] == 501
            assert "KNeighborsClassifier models cannot be explained" in explained[1]["detail"]
            continue
        assert explained[0] == 200 and explained[1]["scale"] == "probability"
        for answer, explanation in zip(
            predicted[1]["predictions"], explained[1]["predictions"], strict=True
        ):
            (positive,) = explanation["base_value"]
            assert sums(explanation) == pytest.approx([answer["probabilities"][positive]], abs=1e-6)
