"""Scoring inside the database: a version's pipeline as one SQL query, proven to answer as it does.

orbital translates the fitted scikit-learn pipeline (through skl2onnx's ONNX graph, ibis and
sqlglot) into SQL for the DIALECTS below. Of scikit-learn it expresses the steps in SUPPORTED:
numeric SimpleImputer, the standard, min-max, max-abs and robust scalers, OneHotEncoder, PCA,
ColumnTransformer and Pipeline, then linear models (LinearRegression, Ridge, Lasso, ElasticNet,
LogisticRegression, SGD, LinearSVR), decision trees, random forests, gradient boosting and
multi-layer perceptrons. Any other step is refused, by name: the default preprocessing's date
transformer, text vectorisers, k-nearest neighbours, SVMs, histogram gradient boosting...

The query reads a table where it is. Its first CTE gives each contract column the type the model
takes (numbers, integers and booleans as double precision, true 1 and false 0; categories and text
as text, '' when missing; date/times as seconds since 1970), orbital's steps follow, and the last
SELECT keeps the pass-through columns (or those asked for) and answers as batch scoring does:
`prediction`, one `probability_<class>` column per class, `model_version`. Rows are not checked
against the contract: a value it forbids is scored as it is.

Packaging proves each version (`proof`): the query runs in DuckDB over the holdout and
compiled.RANGE_ROWS rows spread over the contract, and must give the pipeline's labels, with
probabilities (regression values, relative to max(1, |value|)) within TOLERANCE. The manifest's
`sql` entry records the proof, or why there is none; `sql` serves only a proven version.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from importlib.metadata import version as installed
from typing import Any

import numpy as np

from ..contract import MISSING_STRING, Boolean, Column, Contract, DateTime, Task
from .audit import Refused
from .bundle import Bundle

# Dialects whose SQL orbital writes; DuckDB is proven at packaging, PostgreSQL by lab2prod's tests.
DIALECTS = (
    "athena", "bigquery", "databricks", "datafusion", "duckdb", "flink", "materialize", "mssql",
    "mysql", "postgres", "risingwave", "snowflake", "sqlite", "trino",
)  # fmt: skip
PROVEN_IN = "duckdb"
PROVEN = (PROVEN_IN, "postgres")
# ONNX-ML's Imputer holds SimpleImputer's fill values as 32-bit floats, so a filled-in value
# differs from the pipeline's from the eighth significant digit on.
TOLERANCE = 1e-6
SUPPORTED = frozenset(
    {
        "SimpleImputer", "StandardScaler", "MinMaxScaler", "MaxAbsScaler", "RobustScaler",
        "OneHotEncoder", "PCA", "LinearRegression", "Ridge", "Lasso", "ElasticNet",
        "LogisticRegression", "SGDClassifier", "SGDRegressor", "LinearSVR",
        "DecisionTreeClassifier", "DecisionTreeRegressor", "RandomForestClassifier",
        "RandomForestRegressor", "GradientBoostingClassifier", "GradientBoostingRegressor",
        "MLPClassifier", "MLPRegressor",
    }
)  # fmt: skip
INPUTS = "model_inputs"  # the CTE of typed model inputs the translated steps read
ROW = "lab2prod_row"  # orders the proof's rows: SQL promises no order


class Inexpressible(Refused):
    """The pipeline has a step that SQL cannot express; the message names it."""


def leaves(step: Any, path: str = "") -> Iterator[tuple[str, Any]]:
    """Every step that computes something, with where it sits (preprocess/numbers/...)."""
    from sklearn.compose import ColumnTransformer
    from sklearn.pipeline import Pipeline

    if isinstance(step, Pipeline):
        for name, inner in step.steps:
            yield from leaves(inner, f"{path}/{name}" if path else name)
    elif isinstance(step, ColumnTransformer):
        for name, inner, _ in step.transformers_:
            if not isinstance(inner, str):  # "drop" and "passthrough" compute nothing
                yield from leaves(inner, f"{path}/{name}")
    else:
        yield path, step


def step_name(step: Any) -> str:
    function = getattr(step, "func", None)
    name = type(step).__name__
    return f"{name}({getattr(function, '__name__', function)})" if function else name


def check_steps(pipeline: Any) -> None:
    for path, step in leaves(pipeline):
        if type(step).__name__ not in SUPPORTED:
            raise Inexpressible(f"not expressible: {step_name(step)} (step {path})")


def model_input(column: Column) -> Any:
    """The column as the model takes it (see contract.Column.to_model), in SQL."""
    from sqlglot import exp

    value = exp.column(column.name, quoted=True)
    if column.string_input:
        return exp.func("COALESCE", exp.cast(value, "TEXT"), exp.Literal.string(MISSING_STRING))
    if isinstance(column, Boolean):
        value = (
            exp.Case()
            .when(value, exp.Literal.number(1))
            .when(exp.not_(value), exp.Literal.number(0))
        )  # NULL stays NULL, which the model's imputer fills
    elif isinstance(column, DateTime):
        value = exp.TimeToUnix(this=value)
    return exp.cast(value, "DOUBLE")


def literal(value: Any) -> Any:
    from sqlglot import exp

    return exp.Literal.string(value) if isinstance(value, str) else exp.Literal.number(value)


def answers(task: Task, classes: Sequence[Any], version: int | None) -> list[Any]:
    """prediction, probability_<class>..., model_version, from orbital's outputs."""
    from sqlglot import exp

    def output(name: str) -> Any:
        return exp.column(name, table="scored", quoted=True)

    columns = []
    if task is Task.REGRESSION:
        columns.append(output("variable").as_("prediction", quoted=True))
    else:
        probabilities = [output(f"output_probability.{label}") for label in classes]
        # The first most probable class, as tasks.predict's argmax picks it.
        prediction = exp.Case()
        for position, label in enumerate(classes[:-1]):
            first = probabilities[position]
            rest = [first >= other for other in probabilities[position + 1 :]]
            prediction = prediction.when(exp.and_(*rest), literal(label))
        prediction = prediction.else_(literal(classes[-1]))
        columns.append(prediction.as_("prediction", quoted=True))
        columns.extend(
            probability.as_(f"probability_{label}", quoted=True)
            for label, probability in zip(classes, probabilities, strict=True)
        )
    number = exp.null() if version is None else exp.Literal.number(version)
    columns.append(exp.cast(number, "INT").as_("model_version", quoted=True))
    return columns


def translated(pipeline: Any, contract: Contract, keep: Sequence[str], dialect: str) -> str:
    """orbital's SQL of the pipeline, reading the table INPUTS."""
    import orbital
    import orbital.types as types
    from skl2onnx import update_registered_converter
    from skl2onnx.operator_converters.imputer_op import convert_sklearn_imputer
    from skl2onnx.shape_calculators.imputer import calculate_sklearn_imputer_output_shapes
    from sklearn.impute import SimpleImputer

    # compiled.py swaps skl2onnx's imputer for one (IsNaN, Where) that orbital cannot read.
    update_registered_converter(
        SimpleImputer, "SklearnImputer", calculate_sklearn_imputer_output_shapes,
        convert_sklearn_imputer, overwrite=True,
    )  # fmt: skip
    features = {
        column.name: types.StringColumnType() if column.string_input else types.DoubleColumnType()
        for column in contract.features
    }
    features.update(
        {name: types.StringColumnType(passthrough=True) for name in keep if name not in features}
    )
    try:
        parsed = orbital.parse_pipeline(pipeline, features)
        return orbital.export_sql(
            INPUTS, parsed, dialect=dialect, projection=orbital.ResultsProjection(list(keep))
        )
    except Exception as error:  # a setting of a supported step that orbital cannot translate
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise Inexpressible(f"not expressible: {reason}") from None


def portable(node: Any) -> Any:
    """EXP(x) as EXP(GREATEST(x, -700)): PostgreSQL raises an error where EXP underflows (below
    e^-745), and a probability so small is 0 to double precision either way. A class name orbital
    writes as escaped bytes ('\\x62...' cast to a binary type, which PostgreSQL reads otherwise)
    as plain text."""
    from sqlglot import exp

    if isinstance(node, exp.Exp):
        return exp.Exp(this=exp.func("GREATEST", node.this, exp.Literal.number(-700)))
    binary = isinstance(node, exp.Cast) and node.to.is_type("varbinary", "binary", "blob")
    if binary and isinstance(node.this, exp.Literal) and node.this.is_string:
        return exp.Literal.string(bytes.fromhex(node.this.this.replace("\\x", "")).decode())
    return node


def query(
    pipeline: Any,
    contract: Contract,
    classes: Sequence[Any],
    version: int | None,
    *,
    table: str,
    dialect: str,
    keep: Sequence[str],
) -> str:
    """One SELECT that scores every row of `table`, keeping the columns `keep`."""
    import sqlglot
    from sqlglot import exp

    check_steps(pipeline)
    steps = sqlglot.parse_one(translated(pipeline, contract, keep, dialect), read=dialect)
    steps = steps.transform(portable)
    ctes = [(cte.alias, cte.this) for cte in steps.ctes]
    if steps.find(exp.With):
        steps.find(exp.With).pop()
    features = [column.name for column in contract.features]
    inputs = exp.select(
        *(model_input(column).as_(column.name, quoted=True) for column in contract.features),
        *(exp.column(name, quoted=True) for name in keep if name not in features),
    ).from_(exp.to_table(table, dialect=dialect))
    scored = exp.select(
        *(exp.column(name, table="scored", quoted=True) for name in keep),
        *answers(contract.target.task, classes, version),
    ).from_(steps.subquery("scored"))
    for name, body in [(INPUTS, inputs), *ctes]:
        scored = scored.with_(name, as_=body)
    return scored.sql(dialect=dialect, pretty=True)


def proof(pipeline: Any, contract: Contract, holdout: Any) -> dict[str, Any]:
    """The manifest's `sql` entry: whether the query answers as the pipeline does, in DuckDB,
    on the holdout (rows in contract types) and rows spread over the contract; or why not."""
    try:
        import duckdb
    except ImportError:
        return {"supported": False, "reason": "duckdb is not installed (the project's sql group)"}
    import pandas as pd
    import pyarrow as pa

    from .compiled import RANGE_ROWS, compare
    from .models import PipelineModel

    task = contract.target.task
    classes = getattr(pipeline, "classes_", np.array([])).tolist()
    try:
        text = query(pipeline, contract, classes, None, table="rows", dialect=PROVEN_IN, keep=[ROW])
    except Inexpressible as error:
        return {"supported": False, "reason": str(error)}
    except ImportError as error:
        return {"supported": False, "reason": f"{error.name} is not installed (the sql group)"}
    rows = pd.concat([holdout, contract.sample(RANGE_ROWS)], ignore_index=True)
    features = rows[[column.name for column in contract.features]]
    table = pa.Table.from_pandas(features.assign(**{ROW: np.arange(len(rows))}))
    with duckdb.connect() as connection:
        connection.register("rows", table)
        try:
            found = connection.sql(text).df().sort_values(ROW)
        except duckdb.Error as error:
            return {"supported": False, "reason": f"DuckDB could not run the SQL: {error}"}
    probabilities = (
        found[[f"probability_{label}" for label in classes]].to_numpy() if classes else None
    )
    got = (found["prediction"].to_numpy(), probabilities)
    expected = PipelineModel(pipeline, task).score(contract.model_inputs(rows))
    parity = {"rows": len(rows), **compare(expected, got, task), "tolerance": TOLERANCE}
    difference = parity.get("max_probability_difference", parity.get("max_relative_difference"))
    entry = {
        "translated_by": f"orbital {installed('orbital')}",
        "proven_in": [f"duckdb {duckdb.__version__}"],
        "parity": parity,
    }
    if parity.get("labels_equal", True) and difference <= TOLERANCE:  # False for NaN
        return {"supported": True, **entry}
    return {"supported": False, "reason": "the SQL did not answer as the pipeline does", **entry}


def start_proof(pipeline: Any, contract: Contract, holdout: Any) -> Future[dict[str, Any]]:
    """`proof` in a process of its own: importing ibis and sqlglot takes seconds, which the rest
    of packaging need not wait for."""
    pool = ProcessPoolExecutor(max_workers=1)
    started = pool.submit(proof, pipeline, contract, holdout)
    pool.shutdown(wait=False)  # the worker ends once its one proof is done
    return started


def finish_proof(started: Future[dict[str, Any]]) -> dict[str, Any]:
    try:
        return started.result()
    except Exception as error:  # a worker that died: the version simply has no SQL
        return {"supported": False, "reason": f"the SQL proof failed: {error!r}"}


def summary(entry: dict[str, Any] | None) -> str:
    """The `sql` entry in words, for `package`, the card and the dashboard."""
    from .compiled import agreement

    if entry is None:
        return "not checked (packaged before lab2prod proved SQL)"
    if not entry["supported"]:
        return f"no: {entry['reason']}"
    parity = entry["parity"]
    return (
        f"yes, proven in {', '.join(entry['proven_in'])} ({entry['translated_by']}): "
        f"{agreement(parity)} on {parity['rows']:,} rows"
    )


def export(
    bundle: Bundle,
    version: int | None,
    *,
    table: str,
    dialect: str,
    keep: Sequence[str] | None = None,
) -> str:
    """The query of a verified bundle's model, if packaging proved it; `keep` defaults to the
    contract's pass-through columns."""
    from .models import contract_of

    entry = bundle.manifest.get("sql")
    which = "this bundle" if version is None else f"version {version}"
    if entry is None or not entry["supported"]:
        raise Refused(f"{which} cannot score in SQL: {summary(entry).removeprefix('no: ')}")
    translator = f"orbital {installed('orbital')}"
    if entry["translated_by"] != translator:
        raise Refused(
            f"{which} was proven with {entry['translated_by']} but this environment has "
            f"{translator}: run `sql` in the project's locked environment, or package it again"
        )
    contract = contract_of(bundle)
    if keep is None:
        keep = [column.name for column in contract.columns if not column.feeds_model]
    classes = bundle.manifest["classes"]
    text = query(
        bundle.load_model(), contract, classes, version, table=table, dialect=dialect, keep=keep
    )
    return f"-- {bundle.manifest['model_name']} {which}: {summary(entry)}\n{text}\n"


def create_view(dsn: str, dialect: str, view: str, text: str) -> None:
    """Replace `view` in the database at `dsn` (postgresql://... or duckdb:PATH) by the query, in
    one transaction: readers see the old view or the new one."""
    from sqlglot import exp

    name = exp.to_table(view, dialect=dialect).sql(dialect=dialect)
    statements = [f"DROP VIEW IF EXISTS {name}", f"CREATE VIEW {name} AS {text}"]
    if dsn.startswith(("postgresql://", "postgres://")):
        if dialect != "postgres":
            raise Refused("--dsn postgresql://... needs --dialect postgres")
        import psycopg

        try:
            with psycopg.connect(dsn) as connection:  # commits at the end, or rolls back
                for statement in statements:
                    connection.execute(statement)
        except psycopg.Error as error:
            raise Refused(f"PostgreSQL refused the view {view}: {error}") from None
    elif dsn.startswith("duckdb:"):
        if dialect != "duckdb":
            raise Refused("--dsn duckdb:PATH needs --dialect duckdb")
        import duckdb

        try:
            with duckdb.connect(dsn.removeprefix("duckdb:")) as connection:
                connection.begin()
                for statement in statements:
                    connection.execute(statement)
                connection.commit()
        except duckdb.Error as error:
            raise Refused(f"DuckDB refused the view {view}: {error}") from None
    else:
        raise Refused("--dsn: give postgresql://USER@HOST:PORT/DATABASE or duckdb:PATH")
