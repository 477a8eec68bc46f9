"""The contract between the team's science and the lifecycle: the columns, the target, the task.

`schema.py` (the team's, written by `nox -s schema` from data and then reviewed) declares
`CONTRACT` with the kinds below. Every check and conversion of data derives from it, so each rule
gives one verdict everywhere: `prepare` and batch scoring find bad rows with `problems`, the
service builds its request model from `request_type`, and the model always receives the same
typed inputs (`model_inputs`): a float64 array for numbers, booleans (0/1) and date/times
(seconds since 1970 UTC), a string array for categories and text (missing is "").

This module belongs to the template: `copier update` brings its changes. The service imports it,
so pandas and pydantic are imported only inside the functions that use them.
"""

from __future__ import annotations

import math
from dataclasses import KW_ONLY, dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

if TYPE_CHECKING:
    import pandas as pd

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MICROSECOND = timedelta(microseconds=1)
MISSING_STRING = ""  # what a missing category or text is to the model: a category of its own
NULL_WORDS = ["", "NA", "N/A", "n/a", "NaN", "nan", "-nan", "null", "NULL", "None", "#N/A"]
TRUE_WORDS = {"true", "t", "yes", "y", "1", "1.0"}
FALSE_WORDS = {"false", "f", "no", "n", "0", "0.0"}


class ContractError(ValueError):
    """A contract that cannot work, or data that breaks it as a whole (a missing column)."""


class Task(StrEnum):
    BINARY = "binary"
    MULTICLASS = "multiclass"
    REGRESSION = "regression"

    @property
    def is_classification(self) -> bool:
        return self is not Task.REGRESSION


@dataclass(frozen=True)
class Column:
    """A column of the input. `nullable` columns may be empty; the model then sees NaN or ""."""

    name: str
    _: KW_ONLY
    nullable: bool = False
    kind: ClassVar[str] = "column"
    feeds_model: ClassVar[bool] = True
    string_input: ClassVar[bool] = False  # the model's input is text rather than a number

    def parse(self, raw: pd.Series) -> pd.Series:
        """The values as this kind holds them; NA where a present value is not of this kind."""
        raise NotImplementedError

    def what_it_is(self) -> str:
        """Completes 'not ...' for a value that does not parse."""
        raise NotImplementedError

    def value_checks(self, parsed: pd.Series) -> list[tuple[pd.Series, Any]]:
        """(values that fail, how to say why) for each rule beyond the kind itself."""
        return []

    def to_model(self, parsed: pd.Series) -> np.ndarray:
        return parsed.to_numpy(dtype="float64", na_value=np.nan)

    def json_to_model(self, values: list[Any]) -> np.ndarray:
        return np.array(values, dtype="float64")  # None becomes NaN

    def request_type(self) -> Any:
        """The pydantic type a JSON value must have (before nullability)."""
        raise NotImplementedError

    def example(self) -> Any:
        """A valid JSON value, for warming a model up and for documentation."""
        raise NotImplementedError

    def draw(self, rng: np.random.Generator, rows: int) -> pd.Series:
        """Valid values spread over everything the column allows, its ends included."""
        raise NotImplementedError


def _bounded(parsed: pd.Series, minimum: Any, maximum: Any) -> list[tuple[pd.Series, Any]]:
    checks = []
    if minimum is not None:
        checks.append((parsed < minimum, lambda value: f"{value} is below the minimum {minimum}"))
    if maximum is not None:
        checks.append((parsed > maximum, lambda value: f"{value} is above the maximum {maximum}"))
    return checks


def _json_bounds(minimum: Any, maximum: Any) -> dict[str, Any]:
    return {key: value for key, value in (("ge", minimum), ("le", maximum)) if value is not None}


def _spread(rng: np.random.Generator, rows: int, low: float, high: float) -> np.ndarray:
    values = rng.uniform(low, high, size=rows)
    values[: min(2, rows)] = [low, high][: min(2, rows)]
    return values


@dataclass(frozen=True, kw_only=True)
class Numeric(Column):
    """A real number within [minimum, maximum] (either end may be left open with None)."""

    minimum: float | None = None
    maximum: float | None = None
    kind: ClassVar[str] = "number"

    def parse(self, raw: pd.Series) -> pd.Series:
        import pandas as pd

        values = pd.to_numeric(raw, errors="coerce").astype("float64")
        return values.where(np.isfinite(values))

    def what_it_is(self) -> str:
        return "a finite number"

    def value_checks(self, parsed: pd.Series) -> list[tuple[pd.Series, Any]]:
        return _bounded(parsed, self.minimum, self.maximum)

    def request_type(self) -> Any:
        from typing import Annotated

        from pydantic import Field

        return Annotated[
            float,
            Field(strict=True, allow_inf_nan=False, **_json_bounds(self.minimum, self.maximum)),
        ]

    def example(self) -> Any:
        low, high = _finite_range(self.minimum, self.maximum)
        return (low + high) / 2

    def draw(self, rng: np.random.Generator, rows: int) -> pd.Series:
        import pandas as pd

        return pd.Series(_spread(rng, rows, *_finite_range(self.minimum, self.maximum)))


@dataclass(frozen=True, kw_only=True)
class Integer(Column):
    """A whole number within [minimum, maximum]: counts, years, codes that are quantities."""

    minimum: int | None = None
    maximum: int | None = None
    kind: ClassVar[str] = "integer"

    def parse(self, raw: pd.Series) -> pd.Series:
        values = Numeric.parse(self, raw)  # type: ignore[arg-type]
        return values.where(values == np.floor(values)).astype("Int64")

    def what_it_is(self) -> str:
        return "a whole number"

    def value_checks(self, parsed: pd.Series) -> list[tuple[pd.Series, Any]]:
        return _bounded(parsed, self.minimum, self.maximum)

    def request_type(self) -> Any:
        from typing import Annotated

        from pydantic import Field

        return Annotated[int, Field(strict=True, **_json_bounds(self.minimum, self.maximum))]

    def example(self) -> Any:
        low, high = _finite_range(self.minimum, self.maximum)
        return int((low + high) // 2)

    def draw(self, rng: np.random.Generator, rows: int) -> pd.Series:
        import pandas as pd

        low, high = _finite_range(self.minimum, self.maximum)
        values = np.floor(_spread(rng, rows, math.ceil(low), math.floor(high)))
        return pd.Series(values).astype("Int64")


@dataclass(frozen=True, kw_only=True)
class Boolean(Column):
    """true or false (in files also yes/no, 1/0, t/f, any case)."""

    kind: ClassVar[str] = "boolean"

    def parse(self, raw: pd.Series) -> pd.Series:
        import pandas as pd

        if pd.api.types.is_bool_dtype(raw.dtype):
            return raw.astype("boolean")
        words = raw.astype("string").str.strip().str.lower()
        values = pd.Series(pd.NA, index=raw.index, dtype="boolean")
        values[words.isin(TRUE_WORDS).fillna(False)] = True
        values[words.isin(FALSE_WORDS).fillna(False)] = False
        return values

    def what_it_is(self) -> str:
        return "true or false"

    def json_to_model(self, values: list[Any]) -> np.ndarray:
        return np.array([np.nan if value is None else float(value) for value in values])

    def request_type(self) -> Any:
        from pydantic import StrictBool

        return StrictBool

    def example(self) -> Any:
        return False

    def draw(self, rng: np.random.Generator, rows: int) -> pd.Series:
        import pandas as pd

        return pd.Series(np.arange(rows) % 2 == 1, dtype="boolean")


@dataclass(frozen=True)
class Textual(Column):
    """A column whose values are text; the model receives them as strings, "" when missing."""

    string_input: ClassVar[bool] = True

    def parse(self, raw: pd.Series) -> pd.Series:
        return _strings(raw)

    def what_it_is(self) -> str:
        return "text"

    def to_model(self, parsed: pd.Series) -> np.ndarray:
        return parsed.fillna(MISSING_STRING).to_numpy(dtype=object)

    def json_to_model(self, values: list[Any]) -> np.ndarray:
        return np.array([MISSING_STRING if v is None else v for v in values], dtype=object)


@dataclass(frozen=True, kw_only=True)
class Categorical(Textual):
    """One of a fixed set of values; any other value is refused. Categories are strings."""

    values: tuple[str, ...]
    kind: ClassVar[str] = "category"

    def value_checks(self, parsed: pd.Series) -> list[tuple[pd.Series, Any]]:
        allowed = ", ".join(self.values)
        unknown = parsed.notna() & ~parsed.isin(self.values).fillna(False)
        return [(unknown, lambda value: f"{value!r} is not one of {allowed}")]

    def request_type(self) -> Any:
        from typing import Literal

        return Literal[self.values]  # type: ignore[valid-type]

    def example(self) -> Any:
        return self.values[0]

    def draw(self, rng: np.random.Generator, rows: int) -> pd.Series:
        import pandas as pd

        return pd.Series([self.values[i % len(self.values)] for i in range(rows)], dtype="string")


@dataclass(frozen=True, kw_only=True)
class DateTime(Column):
    """A date or date and time in ISO 8601 ("2024-03-01", "2024-03-01T14:30:00+01:00") within
    [earliest, latest]. A time without an offset is taken as UTC."""

    earliest: str | None = None
    latest: str | None = None
    kind: ClassVar[str] = "datetime"

    def parse(self, raw: pd.Series) -> pd.Series:
        import pandas as pd

        if pd.api.types.is_datetime64_any_dtype(raw.dtype):
            stamps = raw.dt.tz_localize("UTC") if raw.dt.tz is None else raw.dt.tz_convert("UTC")
            return stamps.astype("datetime64[us, UTC]")
        text = raw.astype("string")
        stamps = pd.to_datetime(text, errors="coerce", utc=True, format="ISO8601")
        return stamps.astype("datetime64[us, UTC]")

    def what_it_is(self) -> str:
        return "an ISO 8601 date/time"

    def bounds(self) -> tuple[datetime | None, datetime | None]:
        return parse_instant(self.earliest), parse_instant(self.latest)

    def value_checks(self, parsed: pd.Series) -> list[tuple[pd.Series, Any]]:
        import pandas as pd

        earliest, latest = self.bounds()
        checks = []
        if earliest is not None:
            before = parsed < pd.Timestamp(earliest)
            checks.append((before, lambda value: f"{value} is before {self.earliest}"))
        if latest is not None:
            after = parsed > pd.Timestamp(latest)
            checks.append((after, lambda value: f"{value} is after {self.latest}"))
        return checks

    def to_model(self, parsed: pd.Series) -> np.ndarray:
        instants = parsed.dt.tz_convert(None).to_numpy(dtype="datetime64[us]")
        seconds = instants.astype("int64") / 1e6
        seconds[np.isnat(instants)] = np.nan
        return seconds

    def json_to_model(self, values: list[Any]) -> np.ndarray:
        # Whole microseconds divided once, exactly as `to_model` does, so both give equal bits.
        instants = [parse_instant(v) if isinstance(v, str) else v for v in values]
        return np.array(
            [
                np.nan if value is None else ((value - EPOCH) // MICROSECOND) / 1e6
                for value in instants
            ]
        )

    def request_type(self) -> Any:
        from typing import Annotated

        from pydantic import AfterValidator

        earliest, latest = self.bounds()

        def within(value: datetime) -> datetime:
            try:
                value = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
            except OverflowError:  # an offset that moves it past year 1 or 9999
                raise ValueError(f"{value.isoformat()} is out of range") from None
            if earliest is not None and value < earliest:
                raise ValueError(f"{value.isoformat()} is before {self.earliest}")
            if latest is not None and value > latest:
                raise ValueError(f"{value.isoformat()} is after {self.latest}")
            return value

        return Annotated[datetime, AfterValidator(within)]

    def example(self) -> Any:
        earliest, latest = self.bounds()
        return (earliest or latest or EPOCH).isoformat()

    def draw(self, rng: np.random.Generator, rows: int) -> pd.Series:
        import pandas as pd

        earliest, latest = self.bounds()
        low = (earliest or datetime(1970, 1, 1, tzinfo=UTC)).timestamp()
        high = (latest or datetime(2100, 1, 1, tzinfo=UTC)).timestamp()
        seconds = np.floor(_spread(rng, rows, math.ceil(low), math.floor(high)))
        return pd.Series(pd.to_datetime(seconds, unit="s", utc=True)).astype("datetime64[us, UTC]")


@dataclass(frozen=True, kw_only=True)
class Text(Textual):
    """Free text of at most `max_length` characters. The default model does not read it."""

    max_length: int | None = None
    kind: ClassVar[str] = "text"

    def value_checks(self, parsed: pd.Series) -> list[tuple[pd.Series, Any]]:
        if self.max_length is None:
            return []
        long = parsed.str.len() > self.max_length
        return [(long, lambda value: f"longer than {self.max_length} characters")]

    def request_type(self) -> Any:
        from typing import Annotated

        from pydantic import Field

        return Annotated[str, Field(strict=True, max_length=self.max_length)]

    def example(self) -> Any:
        return "some text"

    def draw(self, rng: np.random.Generator, rows: int) -> pd.Series:
        import pandas as pd

        words = np.array(["alpha", "beta", "gamma", "delta", "epsilon"])
        picked = [" ".join(rng.choice(words, size=1 + i % 4)) for i in range(rows)]
        if self.max_length is not None:
            picked = [text[: self.max_length] for text in picked]
        return pd.Series(picked, dtype="string")


@dataclass(frozen=True, kw_only=True)
class PassThrough(Textual):
    """A column kept in batch output but never given to the model, such as an id."""

    nullable: bool = True
    kind: ClassVar[str] = "pass-through"
    feeds_model: ClassVar[bool] = False

    def request_type(self) -> Any:
        return str | int | float

    def example(self) -> Any:
        return "id-1"

    def draw(self, rng: np.random.Generator, rows: int) -> pd.Series:
        import pandas as pd

        return pd.Series([f"id-{i}" for i in range(rows)], dtype="string")


@dataclass(frozen=True, kw_only=True)
class Target:
    """What the model predicts. Classification lists every class (`positive` is the one a
    binary model flags); regression may bound its values."""

    name: str
    task: Task
    classes: tuple[Any, ...] = ()
    positive: Any = None
    minimum: float | None = None
    maximum: float | None = None

    def column(self) -> Column:
        """The target checked as a column: a known class, or a number in range."""
        if self.task is Task.REGRESSION:
            return Numeric(self.name, minimum=self.minimum, maximum=self.maximum)
        if all(isinstance(value, int) and not isinstance(value, bool) for value in self.classes):
            return _IntegerClasses(self.name, values=tuple(map(str, self.classes)))
        return Categorical(self.name, values=tuple(map(str, self.classes)))

    def parse(self, raw: pd.Series) -> pd.Series:
        """The target's values in contract types: classes as declared (whole numbers or text),
        or floats for regression."""
        column = self.column()
        parsed = column.parse(raw)
        return parsed.astype("Int64") if isinstance(column, _IntegerClasses) else parsed

    def to_model(self, parsed: pd.Series) -> np.ndarray:
        """The values a model is trained and scored on: int64 or str classes, or float64."""
        if self.task is Task.REGRESSION:
            return parsed.to_numpy(dtype="float64")
        if isinstance(self.column(), _IntegerClasses):
            return parsed.to_numpy(dtype="int64")
        return parsed.to_numpy(dtype=object)


@dataclass(frozen=True, kw_only=True)
class _IntegerClasses(Categorical):
    """Classes that are integers (0/1, 1..5): compared as whole numbers, so 1.0 is class 1."""

    def parse(self, raw: pd.Series) -> pd.Series:
        return Integer.parse(self, raw)  # type: ignore[arg-type]

    def what_it_is(self) -> str:
        return "a whole number"

    def value_checks(self, parsed: pd.Series) -> list[tuple[pd.Series, Any]]:
        allowed = [int(value) for value in self.values]
        unknown = parsed.notna() & ~parsed.isin(allowed)
        names = ", ".join(self.values)
        return [(unknown, lambda value: f"{value} is not one of {names}")]


@dataclass(frozen=True)
class Contract:
    """The columns a record has, and the target that training data adds to them."""

    columns: tuple[Column, ...]
    target: Target
    by_name: dict[str, Column] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        names = [column.name for column in self.columns]
        repeated = sorted({name for name in names if names.count(name) > 1})
        problems = [f"column(s) declared twice: {', '.join(repeated)}"] if repeated else []
        if self.target.name in names:
            problems.append(f"the target {self.target.name!r} is also declared as a column")
        if not any(column.feeds_model for column in self.columns):
            problems.append("no column feeds the model")
        target = self.target
        if target.task.is_classification and len(target.classes) < 2:
            problems.append("a classification target needs at least two classes")
        if target.task is Task.BINARY and len(target.classes) != 2:
            problems.append(f"a binary target has two classes, not {len(target.classes)}")
        if target.task is Task.BINARY and target.positive not in target.classes:
            problems.append(f"the positive class {target.positive!r} is not one of the classes")
        if problems:
            raise ContractError("schema.py: " + "; ".join(problems))
        object.__setattr__(self, "by_name", dict(zip(names, self.columns, strict=True)))

    @property
    def features(self) -> tuple[Column, ...]:
        """The columns the model reads, in order: its inputs."""
        return tuple(column for column in self.columns if column.feeds_model)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(column.name for column in self.columns)

    def problems(
        self, frame: pd.DataFrame, *, with_target: bool = True, allow_extra: bool = False
    ) -> pd.DataFrame:
        """The first problem of every invalid row: columns `column` and `problem`, indexed by row
        position (0-based); empty when every row is valid. A missing column, or an unknown one
        unless `allow_extra`, concerns the whole frame and raises ContractError.
        """
        import pandas as pd

        self.check_columns(frame, with_target=with_target, allow_extra=allow_extra)
        columns = np.full(len(frame), None, dtype=object)
        problems = np.full(len(frame), None, dtype=object)
        unchecked = np.ones(len(frame), dtype=bool)  # rows with no problem found yet
        for column in self._checked(with_target):
            raw = frame[column.name]
            if isinstance(column, PassThrough):
                continue
            for failed, describe in self._rules(column, raw):
                new = failed.to_numpy(dtype=bool, na_value=False) & unchecked
                if new.any():
                    positions = np.flatnonzero(new)
                    columns[positions] = column.name
                    problems[positions] = [describe(value) for value in raw.iloc[positions]]
                    unchecked &= ~new
        bad = np.flatnonzero(~unchecked)
        return pd.DataFrame({"column": columns[bad], "problem": problems[bad]}, index=bad)

    def check_columns(self, frame: pd.DataFrame, *, with_target: bool, allow_extra: bool) -> None:
        expected = [column.name for column in self._checked(with_target)]
        # Pass-through columns are optional: a file without ids can still be scored.
        required = [column.name for column in self._checked(with_target) if column.feeds_model]
        missing = [name for name in required if name not in frame.columns]
        if missing:
            raise ContractError(f"missing column(s): {', '.join(missing)}")
        unknown = [str(name) for name in frame.columns if name not in expected]
        if unknown and not allow_extra:
            raise ContractError(
                f"unknown column(s): {', '.join(unknown)}; schema.py lists the columns"
            )

    def _checked(self, with_target: bool) -> list[Column]:
        return [*self.columns, self.target.column()] if with_target else list(self.columns)

    def _rules(self, column: Column, raw: pd.Series) -> list[tuple[pd.Series, Any]]:
        parsed = column.parse(raw)
        present = _present(raw)
        rules = [(parsed.isna() & present, lambda value: f"not {column.what_it_is()}: {value}")]
        if not column.nullable:
            rules.insert(0, (~present, lambda _: "missing"))
        return [*rules, *column.value_checks(parsed)]

    def typed(self, frame: pd.DataFrame, *, with_target: bool = True) -> pd.DataFrame:
        """Valid rows in the contract's order and types (call after `problems` found none)."""
        import pandas as pd

        columns = {
            column.name: column.parse(frame[column.name])
            for column in self.columns
            if column.name in frame.columns
        }
        if with_target:
            columns[self.target.name] = self.target.parse(frame[self.target.name])
        return pd.DataFrame(columns, index=frame.index)

    def csv_options(self) -> dict[str, Any]:
        """pandas.read_csv options that read a file for checking: text columns exactly as
        written ("NA" stays a category, "007" keeps its zeros, only an empty cell is missing),
        the others parsed by pandas' fast reader and checked afterwards."""
        textual = [c.name for c in self._checked(True) if isinstance(c, Textual)]
        missing = {name: [""] for name in textual}
        missing.update({c.name: NULL_WORDS for c in self._checked(True) if c.name not in missing})
        return {
            "dtype": dict.fromkeys(textual, str),
            "keep_default_na": False,
            "na_values": missing,
        }

    def model_inputs(self, typed: pd.DataFrame) -> dict[str, np.ndarray]:
        """The model's inputs, one array per feature column, from rows in contract types."""
        return {column.name: column.to_model(typed[column.name]) for column in self.features}

    def model_frame(self, typed: pd.DataFrame) -> pd.DataFrame:
        """The model's inputs as the DataFrame the scikit-learn pipeline is trained on."""
        import pandas as pd

        return pd.DataFrame(self.model_inputs(typed), index=typed.index)

    def sample(self, rows: int, *, seed: int = 0, with_target: bool = False) -> pd.DataFrame:
        """Valid rows spread over everything the contract allows (each range's ends, every
        category, empty values where allowed), in contract types."""
        import pandas as pd

        rng = np.random.default_rng(seed)
        columns = {}
        for column in self.columns:
            values = column.draw(rng, rows).reset_index(drop=True)
            if column.nullable and rows > 2:
                values = values.copy()
                values.iloc[2::7] = None
            columns[column.name] = values
        if with_target:
            target = self.target
            if target.task.is_classification:
                columns[target.name] = pd.Series(
                    [target.classes[i % len(target.classes)] for i in range(rows)]
                )
            else:
                low, high = _finite_range(target.minimum, target.maximum)
                columns[target.name] = pd.Series(_spread(rng, rows, low, high))
        return pd.DataFrame(columns)

    def to_json(self) -> dict[str, Any]:
        """The contract as JSON, for consumers that do not run Python (the bundle's schema.json)."""

        def described(item: Any) -> dict[str, Any]:
            values = {
                key: list(value) if isinstance(value, tuple) else value
                for key, value in item.__dict__.items()
                if key != "name"
            }
            return {"name": item.name, **values}

        columns = [{"kind": column.kind, **described(column)} for column in self.columns]
        return {"columns": columns, "target": described(self.target)}


KINDS: dict[str, type[Column]] = {
    kind.kind: kind
    for kind in (Numeric, Integer, Boolean, Categorical, DateTime, Text, PassThrough)
}


def from_json(document: dict[str, Any]) -> Contract:
    """The contract `Contract.to_json` wrote (a bundle's schema.json). Bundles made before
    contracts had kinds list numeric `features` and a 0/1 `target`: those read as such."""

    def fields(entry: dict[str, Any]) -> dict[str, Any]:
        return {
            key: tuple(value) if isinstance(value, list) else value
            for key, value in entry.items()
            if key != "kind"
        }

    if "features" in document:
        columns = tuple(
            Numeric(f["name"], minimum=f["minimum"], maximum=f["maximum"])
            for f in document["features"]
        )
        target = document["target"]
        values = tuple(target["values"])
        return Contract(
            columns, Target(name=target["name"], task=Task.BINARY, classes=values, positive=1)
        )
    columns = tuple(KINDS[entry["kind"]](**fields(entry)) for entry in document["columns"])
    target = fields(document["target"])
    target["task"] = Task(target["task"])
    return Contract(columns, Target(**target))


def parse_instant(text: str | None) -> datetime | None:
    if text is None:
        return None
    value = datetime.fromisoformat(text)
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _finite_range(minimum: float | None, maximum: float | None) -> tuple[float, float]:
    """A range to draw from when an end is open: one unit either side of the other end."""
    low = minimum if minimum is not None else (maximum - 1 if maximum is not None else 0.0)
    high = maximum if maximum is not None else low + 1
    return float(low), float(high)


def _present(raw: pd.Series) -> pd.Series:
    """Which values are there: not null and, for text, not blank."""
    import pandas as pd

    present = raw.notna()
    if pd.api.types.is_object_dtype(raw.dtype) or pd.api.types.is_string_dtype(raw.dtype):
        present &= raw.astype("string").str.strip().ne("").fillna(False)
    return present


def _strings(raw: pd.Series) -> pd.Series:
    """Text as written; numbers from a typed file become their plain text ("3", "2.5")."""
    import pandas as pd

    if pd.api.types.is_float_dtype(raw.dtype):
        raw = raw.map(_number_text, na_action="ignore")
    text = raw.astype("string")
    return text.where(text.str.strip() != "")


def _number_text(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))
