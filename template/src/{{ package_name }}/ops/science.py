"""The one door from `ops/` to the team's science: the contract that `schema.py` declares.

Everything else `ops/` knows of the science comes from the trained pipeline file.
"""

from __future__ import annotations

import importlib

from ..contract import Contract


class NoContract(Exception):
    """schema.py is missing or declares no CONTRACT; the message says how to make one."""


def contract() -> Contract:
    package = __package__.rsplit(".", 1)[0]
    try:
        schema = importlib.import_module(f"{package}.schema")
    except ModuleNotFoundError as error:
        if error.name != f"{package}.schema":
            raise
        schema = None
    declared = getattr(schema, "CONTRACT", None)
    if not isinstance(declared, Contract):
        raise NoContract(
            f"src/{package}/schema.py declares no CONTRACT: make it from your data with "
            "`nox -s schema -- DATA_FILE --target COLUMN`"
        )
    return declared
