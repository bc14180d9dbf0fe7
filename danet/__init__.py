"""danet-bench: a reproducible benchmark and ablation harness for DANet and related attention."""

# The version is pyproject.toml's alone (importlib.metadata reads it: `danet --version`).
RESULT_SCHEMA = 1  # result.json's format (docs/result-schema.md); analysis reads only this one
IGNORE_INDEX = 255  # the label of unlabelled pixels (DANet's code, VOC, Cityscapes): not a class
