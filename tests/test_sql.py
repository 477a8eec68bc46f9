"""Scoring inside the database: `sql` in generated projects, its queries run in DuckDB and in a
real PostgreSQL server (Debian's, started here on 127.0.0.1), answering as the pipeline does.

Every example project trains the default linear model on numbers only, which SQL expresses as it
is: its own bundle is the parity case of its task. The other kinds of contract column (integer,
boolean, nullable category, date/time, text, id) go through one query built in-process, beside
what SQL cannot express: the default date transformer and k-nearest neighbours, refused by name.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import tempfile
import zipfile
from collections.abc import Iterator
from pathlib import Path

import duckdb
import psycopg
import pytest
from projects import Project, free_port, wait_for_port
from test_serving import in_project

POSTGRES_BIN = Path("/usr/lib/postgresql/15/bin")
TOLERANCE = 1e-6  # sql.TOLERANCE, what packaging proves
POSTGRES_TYPES = {
    "DOUBLE": "double precision", "BIGINT": "bigint", "BOOLEAN": "boolean", "VARCHAR": "text",
    "TIMESTAMP WITH TIME ZONE": "timestamptz",
}  # fmt: skip


@pytest.fixture(scope="session")
def postgres() -> Iterator[str]:
    """A throwaway PostgreSQL cluster on 127.0.0.1 (trust authentication); its DSN."""
    if not (POSTGRES_BIN / "postgres").is_file():
        pytest.skip(f"no PostgreSQL in {POSTGRES_BIN}: apt-get install postgresql")
    # initdb and postgres refuse to run as root: then they run as nobody, in a folder of its own
    # outside pytest's (which only root may enter).
    root = Path(tempfile.mkdtemp(prefix="lab2prod-postgres-"))
    as_user = ["runuser", "-u", "nobody", "--"] if os.geteuid() == 0 else []
    if as_user:
        shutil.chown(root, "nobody")
    subprocess.run(
        [*as_user, POSTGRES_BIN / "initdb", "-D", root / "data", "-U", "postgres",
         "--auth=trust", "--no-sync", "-E", "UTF8"],
        check=True, capture_output=True,
    )  # fmt: skip
    port = free_port()
    server = subprocess.Popen(
        [*as_user, POSTGRES_BIN / "postgres", "-D", root / "data", "-h", "127.0.0.1",
         "-p", str(port), "-k", root, "-F"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        wait_for_port(port, 30)
        yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
    finally:
        server.terminate()
        server.wait(timeout=30)
        shutil.rmtree(root, ignore_errors=True)


def load(parquet: Path, table: str, database: Path, dsn: str) -> None:
    """The rows of a Parquet file, each with its `row_id`, as a table in DuckDB and in
    PostgreSQL, typed as the file types them."""
    rows = database.with_suffix(f".{table}.csv")
    with duckdb.connect(str(database)) as connection:
        connection.execute(
            f"CREATE OR REPLACE TABLE {table} AS SELECT * EXCLUDE (file_row_number), "
            f"file_row_number AS row_id FROM read_parquet('{parquet}', file_row_number = true)"
        )
        columns = connection.execute(f"DESCRIBE {table}").fetchall()
        connection.execute(f"COPY {table} TO '{rows}' (HEADER false)")
    declared = ", ".join(f'"{name}" {POSTGRES_TYPES[kind]}' for name, kind, *_ in columns)
    with psycopg.connect(dsn) as connection:
        connection.execute(f"DROP TABLE IF EXISTS {table} CASCADE")
        connection.execute(f"CREATE TABLE {table} ({declared})")
        with connection.cursor().copy(f"COPY {table} FROM STDIN (FORMAT csv)") as copy:
            copy.write(rows.read_bytes())


def read(database: str, query: str, where: Path | str) -> list[dict]:
    """What the query answers in DuckDB (`where` is its file) or PostgreSQL (`where` is the DSN),
    in `row_id` order."""
    ordered = f"SELECT * FROM ({query}) AS scored ORDER BY row_id"
    connect = duckdb.connect if database == "duckdb" else psycopg.connect
    with connect(str(where)) as connection:
        cursor = connection.execute(ordered)
        names = [column[0] for column in cursor.description]
        return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


def assert_same_answers(found: list[dict], expected: list[dict], version: int | None) -> None:
    """A database's answers are the pipeline's: labels exactly, probabilities (or values,
    relative to their size) within what packaging proves."""
    assert [row["row_id"] for row in found] == list(range(len(expected)))
    assert {row["model_version"] for row in found} == {version}
    for row, wanted in zip(found, expected, strict=True):
        if "probabilities" not in wanted:
            assert row["prediction"] == pytest.approx(wanted["prediction"], rel=TOLERANCE)
            continue
        assert str(row["prediction"]) == str(wanted["prediction"])
        got = {label: row[f"probability_{label}"] for label in wanted["probabilities"]}
        assert got == pytest.approx(wanted["probabilities"], abs=TOLERANCE)


def holdout_answers(project: Project) -> list[dict]:
    """The pipeline's answers on the holdout, as the evaluate stage wrote them (6 decimals)."""
    with (project.path / "reports" / "predictions.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    if "probability" not in ",".join(rows[0]):
        return [{"prediction": float(row["predicted"])} for row in rows]
    return [
        {
            "prediction": row["predicted"],
            "probabilities": {
                name.removeprefix("probability_"): float(value)
                for name, value in row.items()
                if name.startswith("probability_")
            },
        }
        for row in rows
    ]


@pytest.mark.parametrize("task", ["default", "multiclass", "regression"])
def test_a_linear_model_scores_in_duckdb_and_postgres_as_the_pipeline(
    generated, tmp_path, postgres, task
):
    # `package` only adds a bundle under build/ (which git ignores): the shared project serves.
    path = generated(task)
    project = Project(path, {"PATH": f"{path / '.venv' / 'bin'}{os.pathsep}{os.environ['PATH']}"})
    result = project.ops("package")
    assert "package: scores in SQL: yes, proven in duckdb" in result.stdout
    bundle = result.stdout.strip().splitlines()[-1]
    proven = json.loads(zipfile.ZipFile(bundle).read("manifest.json"))["sql"]
    holdout = len(holdout_answers(project))
    assert proven["supported"] and proven["proven_in"][0].startswith("duckdb ")
    # Packaging ran the query in DuckDB on the holdout and 2,000 rows over the contract.
    assert proven["parity"]["rows"] == holdout + 2000
    assert proven["parity"].get("labels_equal", True)
    difference = proven["parity"].get("max_probability_difference")
    assert (difference or proven["parity"]["max_relative_difference"]) <= TOLERANCE

    database, table = tmp_path / "scores.duckdb", f"{task}_rows"
    load(path / "data" / "prepared" / "holdout.parquet", table, database, postgres)
    for dialect, dsn in (("postgres", postgres), ("duckdb", f"duckdb:{database}")):
        said = project.ops(
            "sql", "--bundle", bundle, "--dialect", dialect, "--table", table,
            "--keep", "row_id", "--dsn", dsn,
        ).stdout  # fmt: skip
        assert f"the view {table}_scores scores {table} with the bundle's model" in said
    for name, where in (("duckdb", database), ("postgres", postgres)):
        found = read(name, f"SELECT * FROM {table}_scores", where)
        assert_same_answers(found, holdout_answers(project), None)


@pytest.mark.parametrize("lived", ["local"], indirect=True)
def test_sql_speaks_for_the_version_a_stage_serves(lived):
    project, _ = lived
    production = project.serving()
    printed = project.ops("sql", "--dialect", "snowflake", "--table", "crm.patients")
    assert printed.stdout.startswith(
        f"-- {project.package} version {production}: yes, proven in duckdb"
    )
    assert "FROM crm.patients" in printed.stdout
    assert f'CAST({production} AS INT) AS "model_version"' in printed.stdout
    assert "not proven in snowflake" in printed.stderr
    missing = project.ops("sql", "--dialect", "duckdb", "--version", "99", check=False)
    assert missing.returncode == 2
    assert "version 99 is not in the registry" in missing.stderr
    wrong = project.ops("sql", "--dialect", "duckdb", "--dsn", "postgresql://h/db", check=False)
    assert (wrong.returncode, wrong.stderr.strip()) == (
        2, "sql: refused: --dsn postgresql://... needs --dialect postgres"
    )  # fmt: skip


# Rows of every kind of column (and one far outside the contract, whose scores would underflow
# EXP in PostgreSQL) to a Parquet file; a linear model's query for each database; the model's
# answers; and what `package` records for steps SQL cannot express.
EVERY_KIND = """
import json, sys
import numpy as np, pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler
from {package} import tasks
from {package}.contract import (
    Boolean, Categorical, Contract, DateTime, Integer, Numeric, PassThrough, Target, Task, Text
)
from {package}.preprocessing import default_preprocessing
from {package}.ops import sql
contract = Contract(
    columns=(
        Numeric("size", minimum=0, maximum=10, nullable=True),
        Integer("rooms", minimum=1, maximum=9, nullable=True), Boolean("garden", nullable=True),
        Categorical("town", values=("a", "b", "c"), nullable=True),
        DateTime("built", earliest="2000-01-01", latest="2020-01-01"),
        Text("notes", nullable=True), PassThrough("house"),
    ),
    target=Target(name="rating", task=Task.MULTICLASS, classes=(1, 2, 3)),
)
rows = contract.sample(400, seed=1)
frame = contract.model_frame(rows)
target = np.array([1, 2, 3])[((frame["rooms"].fillna(0) + 2 * (frame["size"] > 5)) % 3).astype(int)]
# The default preprocessing's date parts are beyond SQL: here the date/time counts as seconds.
numbers = make_pipeline(SimpleImputer(strategy="median"), StandardScaler())
towns = OneHotEncoder(categories=[["", "a", "b", "c"]], handle_unknown="ignore")
preprocess = ColumnTransformer(
    [("numbers", numbers, ["size", "rooms", "garden", "built"]), ("town", towns, ["town"])]
)
linear = Pipeline([("preprocess", preprocess), ("model", LogisticRegression())]).fit(frame, target)
rows.loc[0, "size"] = 1e9
answers = tasks.predict(linear, contract.model_frame(rows), Task.MULTICLASS)
rows.to_parquet(sys.argv[1])
found = {{
    dialect: sql.query(linear, contract, [1, 2, 3], 7, table="houses", dialect=dialect,
                       keep=["house", "row_id"])
    for dialect in ("duckdb", "postgres")
}}
found["pipeline"] = [
    {{"prediction": label, "probabilities": dict(zip("123", probabilities))}}
    for label, probabilities in zip(answers.predicted.tolist(), answers.probabilities.tolist())
]
found["houses"] = rows["house"].astype(object).where(rows["house"].notna(), None).tolist()
found["refused"] = []
for steps, model in ((default_preprocessing(contract), LogisticRegression()),
                     (preprocess, KNeighborsClassifier())):
    pipeline = Pipeline([("preprocess", steps), ("model", model)]).fit(frame, target)
    found["refused"].append(sql.proof(pipeline, contract, rows))
print(json.dumps(found))
"""

# A bundle whose manifest (what `sql` reads) describes k-nearest neighbours trained on the
# project's data; the project's own model file, and so the bundle's model member, stay as they are.
NEIGHBOURS_BUNDLE = """
import sys
from pathlib import Path
import pandas as pd
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import Pipeline
from {package}.features import preprocessing
from {package}.ops import bundle, science, settings, signing
config, contract = settings.load(), science.contract()
frame = pd.read_parquet(config.train_file)
pipeline = Pipeline([("preprocess", preprocessing()), ("model", KNeighborsClassifier())])
pipeline.fit(contract.model_frame(frame), contract.target.to_model(frame[contract.target.name]))
bundle.load_pipeline = lambda data: pipeline
data, _ = bundle.build(config, signing.private_key("publish", config.project_dir), allow_dirty=True)
Path(sys.argv[1]).write_bytes(data)
"""


def test_every_kind_of_column_scores_in_sql_and_other_steps_are_refused(
    generated, tmp_path, postgres
):
    project = Project(generated("multiclass"), {})
    rows = tmp_path / "houses.parquet"
    found = json.loads(in_project(project, EVERY_KIND.format(package=project.package), rows))
    database = tmp_path / "houses.duckdb"
    load(rows, "houses", database, postgres)
    for name, where in (("duckdb", database), ("postgres", postgres)):
        scored = read(name, found[name], where)
        assert [row["house"] for row in scored] == found["houses"]
        assert_same_answers(scored, found["pipeline"], 7)
    dates, neighbours = found["refused"]
    assert dates == {
        "supported": False,
        "reason": "not expressible: FunctionTransformer(date_parts) "
        "(step preprocess/dates/functiontransformer)",
    }
    assert neighbours["reason"] == "not expressible: KNeighborsClassifier (step model)"

    # Such a version packages all the same, and `sql` refuses it by name.
    bundle = tmp_path / "neighbours.zip"
    in_project(project, NEIGHBOURS_BUNDLE.format(package=project.package), bundle)
    refused = project.ops("sql", "--bundle", bundle, "--dialect", "duckdb", check=False)
    assert (refused.returncode, refused.stderr.strip()) == (
        2,
        "sql: refused: this bundle cannot score in SQL: "
        "not expressible: KNeighborsClassifier (step model)",
    )
