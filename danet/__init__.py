"""danet-bench: a reproducible benchmark and ablation harness for DANet and related attention."""

__version__ = "0.1.0"
