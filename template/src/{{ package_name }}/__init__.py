"""The team's science: data contract, preparation, features, training and evaluation.

`ops/` (when present) is the template's lifecycle machinery and reaches this package only through
`schema.py` and the trained pipeline file.
"""
