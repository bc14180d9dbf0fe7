"""danet-bench: a reproducible benchmark and ablation harness for DANet and related attention."""

__version__ = "0.1.0"
RESULT_SCHEMA = 1  # result.json's format (docs/result-schema.md); analysis reads only this one
