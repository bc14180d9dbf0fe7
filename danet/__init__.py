"""danet-bench: a reproducible benchmark and ablation harness for DANet and related attention."""

__version__ = "0.1.0"
RESULT_SCHEMA = 1  # result.json's format (README: Run directory); analysis reads only this one
