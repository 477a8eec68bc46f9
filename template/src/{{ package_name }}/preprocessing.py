"""Default preprocessing built from the contract, as one scikit-learn ColumnTransformer.

Per kind of column:
- numbers, whole numbers, booleans: missing values get the training median, then scaling;
- categories: one indicator per category the contract allows, plus one for "missing" when the
  column is nullable; a value the contract allows but training never saw sets no indicator;
- date/times: year, month, day, weekday and hour, then as numbers;
- free text: not read by the default model (stated by `nox -s schema`); add a vectorizer in
  features.py to use it, and the bundle serves that pipeline with scikit-learn unless it compiles;
- pass-through columns (ids): never given to the model.

Every step here compiles to ONNX, so bundles serve the compiled model (see ops/compiled.py). A
function of the team's own compiles when it carries its ONNX form: decorate it with
`@onnx_translation(form)`. This module belongs to the template: `copier update` brings changes.
"""

from __future__ import annotations

from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import numpy as np
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer, OneHotEncoder, StandardScaler

from .contract import MISSING_STRING, Boolean, Categorical, Contract, DateTime, Integer, Numeric

DATE_PARTS = ("year", "month", "day", "weekday", "hour")


def onnx_translation(form: Callable[[Any, int], Any]) -> Callable[[Callable], Callable]:
    """Mark a FunctionTransformer's function with its ONNX form: form(input, opset) builds the
    same computation from skl2onnx operators. Packaging checks that both answer alike."""

    def mark(function: Callable) -> Callable:
        function.onnx_translation = form
        return function

    return mark


def numpy_arithmetic() -> SimpleNamespace:
    """The operations of `civil_date_parts` on NumPy arrays."""
    return SimpleNamespace(
        add=np.add, sub=np.subtract, mul=np.multiply, div=np.divide, floor=np.floor,
        where=np.where, less=np.less, concat=np.hstack,
    )  # fmt: skip


def onnx_arithmetic(opset: int) -> SimpleNamespace:
    """The same operations as ONNX operators (double precision in, double out)."""
    from skl2onnx.algebra import onnx_ops as ops

    def operator(onnx_operator: Any) -> Callable[..., Any]:
        return lambda *inputs: onnx_operator(*inputs, op_version=opset)

    return SimpleNamespace(
        add=operator(ops.OnnxAdd), sub=operator(ops.OnnxSub), mul=operator(ops.OnnxMul),
        div=operator(ops.OnnxDiv), floor=operator(ops.OnnxFloor), where=operator(ops.OnnxWhere),
        less=operator(ops.OnnxLess),
        concat=lambda parts: ops.OnnxConcat(*parts, axis=1, op_version=opset),
    )  # fmt: skip


def civil_date_parts(seconds: Any, a: SimpleNamespace) -> Any:
    """Year, month, day, weekday (Monday 0) and hour of UTC seconds since 1970, by the
    days-to-civil-date algorithm: only floors, sums and products, so NumPy and ONNX agree."""

    def n(value: float) -> np.ndarray:
        return np.array([value], dtype=np.float64)

    def whole(x: Any, divisor: float) -> Any:
        return a.floor(a.div(x, n(divisor)))

    days = whole(seconds, 86400)
    hour = whole(a.sub(seconds, a.mul(days, n(86400))), 3600)
    shifted = a.add(days, n(3))  # 1970-01-01 was a Thursday
    weekday = a.sub(shifted, a.mul(whole(shifted, 7), n(7)))
    z = a.add(days, n(719468))
    era = whole(z, 146097)
    day_of_era = a.sub(z, a.mul(era, n(146097)))
    leap_days = a.sub(
        a.add(a.sub(day_of_era, whole(day_of_era, 1460)), whole(day_of_era, 36524)),
        whole(day_of_era, 146096),
    )
    year_of_era = whole(leap_days, 365)
    year_start = a.sub(
        a.add(a.mul(year_of_era, n(365)), whole(year_of_era, 4)), whole(year_of_era, 100)
    )
    day_of_year = a.sub(day_of_era, year_start)
    month_from_march = whole(a.add(a.mul(day_of_year, n(5)), n(2)), 153)
    month_start = whole(a.add(a.mul(month_from_march, n(153)), n(2)), 5)
    day = a.add(a.sub(day_of_year, month_start), n(1))
    before_january = a.less(month_from_march, n(10))
    month = a.where(before_january, a.add(month_from_march, n(3)), a.sub(month_from_march, n(9)))
    in_next_year = a.where(a.less(month, n(3)), n(1), n(0))
    year = a.add(a.add(year_of_era, a.mul(era, n(400))), in_next_year)
    return a.concat([year, month, day, weekday, hour])


def date_parts_onnx(seconds: Any, opset: int) -> Any:
    return civil_date_parts(seconds, onnx_arithmetic(opset))


@onnx_translation(date_parts_onnx)
def date_parts(seconds: Any) -> np.ndarray:
    """Columns of UTC seconds since 1970 -> their year, month, day, weekday and hour columns."""
    return civil_date_parts(np.asarray(seconds, dtype=np.float64), numpy_arithmetic())


def date_part_names(transformer: Any, names: Any) -> list[str]:
    return [f"{name}_{part}" for part in DATE_PARTS for name in names]


def default_preprocessing(contract: Contract) -> ColumnTransformer:
    """One branch per kind of column the contract has; the others are left out."""

    def numeric() -> Any:
        return make_pipeline(
            SimpleImputer(strategy="median", keep_empty_features=True), StandardScaler()
        )

    def names(*kinds: type) -> list[str]:
        return [column.name for column in contract.features if type(column) in kinds]

    branches = []
    if numbers := names(Numeric, Integer, Boolean):
        branches.append(("numbers", numeric(), numbers))
    for column in contract.features:
        if isinstance(column, Categorical):
            categories = [*([MISSING_STRING] if column.nullable else []), *column.values]
            encoder = OneHotEncoder(
                categories=[categories], handle_unknown="ignore", sparse_output=False
            )
            branches.append((f"category_{column.name}", encoder, [column.name]))
    if dates := names(DateTime):
        parts = FunctionTransformer(date_parts, feature_names_out=date_part_names)
        branches.append(("dates", make_pipeline(parts, numeric()), dates))
    return ColumnTransformer(branches, remainder="drop", sparse_threshold=0)
