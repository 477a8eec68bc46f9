"""Feature preprocessing: the first step of the trained pipeline, so serving applies exactly it.

The default is built from the contract (see preprocessing.py for what it does per kind of
column). Add your own steps here; a FunctionTransformer's function compiles to ONNX when it is
decorated with `preprocessing.onnx_translation`, otherwise its bundles serve the pipeline itself.
"""

from __future__ import annotations

from sklearn.base import TransformerMixin

from .preprocessing import default_preprocessing
from .schema import CONTRACT


def preprocessing() -> TransformerMixin:
    return default_preprocessing(CONTRACT)
