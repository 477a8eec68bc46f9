"""Tables that are not the template's examples, for putting a team's own data through a project.

Each is made here, seeded, so nothing is downloaded; each has what real tables have and the
examples lack. The tests run it with a generated project's Python (the template's own
environment has no pandas): `python datasets.py NAME FILE ROWS SEED`.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd


def penguins(rows: int = 600, seed: int = 7) -> pd.DataFrame:
    """Multiclass: three species from body measurements, the island (text categories, one of
    them "NA", which must stay a category) and the sex (missing for some birds); some
    measurements are missing too."""
    rng = np.random.default_rng(seed)
    species = rng.choice(["Adelie", "Chinstrap", "Gentoo"], size=rows, p=[0.45, 0.2, 0.35])
    centre = {"Adelie": (38.8, 18.3, 190.0), "Chinstrap": (48.8, 18.4, 196.0),
              "Gentoo": (47.5, 15.0, 217.0)}  # fmt: skip
    bill, depth, flipper = np.array([centre[name] for name in species]).T
    islands = {"Adelie": ["Biscoe", "Dream", "Torgersen"], "Chinstrap": ["Dream", "NA"],
               "Gentoo": ["Biscoe"]}  # fmt: skip
    frame = pd.DataFrame(
        {
            "bill_length_mm": (bill + rng.normal(0, 2.5, rows)).round(1),
            "bill_depth_mm": (depth + rng.normal(0, 1.0, rows)).round(1),
            "flipper_length_mm": (flipper + rng.normal(0, 6, rows)).round(0),
            "body_mass_g": rng.normal(4200, 600, rows).round(-1),
            "island": [rng.choice(islands[name]) for name in species],
            "sex": rng.choice(["female", "male"], size=rows),
            "species": species,
        }
    )
    for column, share in (("bill_length_mm", 0.03), ("body_mass_g", 0.05), ("sex", 0.08)):
        frame.loc[rng.random(rows) < share, column] = None
    return frame


def visits(rows: int = 20_000, seed: int = 11) -> pd.DataFrame:
    """Regression: what a shop visit spends, with an id, a date and time, free-text notes, a
    boolean, a whole-number count and a category; the weekday and hour matter."""
    rng = np.random.default_rng(seed)
    start = pd.Timestamp("2024-01-01")
    when = start + pd.to_timedelta(rng.integers(0, 2 * 365 * 24 * 60, rows), unit="min")
    channel = rng.choice(["web", "store", "phone"], size=rows)
    member = rng.random(rows) < 0.4
    items = rng.integers(1, 12, rows)
    weekend = when.day_of_week >= 5
    words = np.array(["delivery", "late", "gift", "wrap", "return", "asked", "about", "sizes"])
    notes = [" ".join(rng.choice(words, size=rng.integers(3, 9))) for _ in range(rows)]
    spend = (
        12.5 * items + 20 * member + 15 * weekend + 0.8 * when.hour
        + np.where(channel == "store", 10, 0) + rng.normal(0, 8, rows)
    )  # fmt: skip
    frame = pd.DataFrame(
        {
            "visit_id": [f"V{index:07d}" for index in range(rows)],
            "visited_at": when.strftime("%Y-%m-%dT%H:%M:%S"),
            "channel": channel,
            "member": np.where(member, "yes", "no"),
            "items": items,
            "note": notes,
            "spend": spend.round(2),
        }
    )
    frame.loc[rng.random(rows) < 0.02, "note"] = None
    return frame


def loans(rows: int = 3_000, seed: int = 5) -> pd.DataFrame:
    """Binary with text labels: whether a loan was repaid or defaulted (the rarer class, which
    `schema` picks as the one to flag). An application id, a signing date, a purpose category
    with some missing, an income that is sometimes missing and a yes/no flag."""
    rng = np.random.default_rng(seed)
    signed = pd.Timestamp("2022-06-01") + pd.to_timedelta(rng.integers(0, 900, rows), unit="D")
    income = rng.lognormal(10.5, 0.5, rows).round(-2)
    amount = rng.uniform(1_000, 40_000, rows).round(-1)
    purpose = rng.choice(["car", "home", "study", "business"], size=rows)
    guarantor = rng.random(rows) < 0.3
    risk = amount / income * 4 - 1.5 * guarantor + np.where(purpose == "business", 0.8, 0)
    defaulted = rng.random(rows) < 1 / (1 + np.exp(-(risk - 2.2) * 2))
    frame = pd.DataFrame(
        {
            "application": [f"A-{index:06d}" for index in range(rows)],
            "signed_on": signed.strftime("%Y-%m-%d"),
            "purpose": purpose,
            "income": income,
            "amount": amount,
            "guarantor": np.where(guarantor, "true", "false"),
            "outcome": np.where(defaulted, "defaulted", "repaid"),
        }
    )
    frame.loc[rng.random(rows) < 0.04, "income"] = None
    frame.loc[rng.random(rows) < 0.03, "purpose"] = None
    return frame


TABLES = {"penguins": penguins, "visits": visits, "loans": loans}

if __name__ == "__main__":
    name, path, rows, seed = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    path.parent.mkdir(parents=True, exist_ok=True)
    TABLES[name](rows=rows, seed=seed).to_csv(path, index=False)
