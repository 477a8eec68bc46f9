"""Lifecycle machinery owned by the lab2prod template: bundle, registry, audit log, gate, CLI.

Do not edit it in a project: `copier update` brings its changes. It reaches the team's science
only through `schema.py` and the trained pipeline file named in dvc.yaml.
"""
