"""The config key `model.backbone_attention`: which attention module goes where in a ResNet
backbone, checked and written in one normal form, and named for run ids and tables.

Free of torch (config and analysis read it); danet.models.backbone_attention inserts the
modules. Normal form: {} (none), else {"variant", "stages" (sorted), "where", "opts"}.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from danet.errors import DanetError, did_you_mean

KEY = "model.backbone_attention"
WHERE = ("block", "stage")
# Where the modules' papers put them in a ResNet: these inside every residual block, after its
# last conv + BN and before the residual sum (SE, CBAM, GCNet, ECA-Net, coordinate and triplet
# attention, SimAM); every other module (Non-local and its kin) after a stage's blocks.
PER_BLOCK = frozenset({"se", "cbam", "gc", "eca", "coord", "triplet", "simam"})
EXAMPLE = "e.g. {variant: gc, stages: [3, 4], where: block}"


def normalize(value: Any, source: str) -> dict[str, Any]:
    """`value` of the key checked for its form and completed with the defaults (`where`: the
    paper's place, `opts`: {}); the variant's name and the stages' existence are checked
    against the registries in danet.checks."""
    if value is None or value == {}:
        return {}
    if not isinstance(value, Mapping):
        raise DanetError(f"{source}: '{KEY}' must be a mapping, {EXAMPLE}; got {value!r}")
    fields = ("variant", "stages", "where", "opts")
    for key in value:
        if key not in fields:
            raise DanetError(
                f"{source}: unknown key '{key}' in '{KEY}'{did_you_mean(key, fields)}; "
                f"valid: {', '.join(fields)}"
            )
    variant = value.get("variant")
    if not isinstance(variant, str) or not variant:
        raise DanetError(f"{source}: '{KEY}' needs a variant name, {EXAMPLE}")
    stages = value.get("stages")
    stages = [stages] if isinstance(stages, int) and not isinstance(stages, bool) else stages
    if (
        not isinstance(stages, (list, tuple))
        or not stages
        or not all(isinstance(s, int) and not isinstance(s, bool) for s in stages)
        or len(set(stages)) != len(stages)
    ):
        raise DanetError(
            f"{source}: '{KEY}.stages' must be a list of distinct stage numbers (1-4 in a "
            f"ResNet), e.g. [3, 4]; got {stages!r}"
        )
    where = value.get("where", "block" if variant in PER_BLOCK else "stage")
    if where not in WHERE:
        raise DanetError(
            f"{source}: '{KEY}.where' must be block (in every residual block, before the sum) "
            f"or stage (after the stage's blocks), got {where!r}"
        )
    opts = value.get("opts", {})
    if not isinstance(opts, Mapping):
        raise DanetError(f"{source}: '{KEY}.opts' must be a mapping of {variant}'s options")
    return {"variant": variant, "stages": sorted(stages), "where": where, "opts": dict(opts)}


def label(spec: Mapping[str, Any] | None) -> str:
    """'gc@block[3,4]' (options: 'gc(rd_ratio=0.0625)@block[3,4]'); '' for none."""
    if not spec:
        return ""
    opts = ",".join(f"{k}={v}" for k, v in sorted(spec.get("opts", {}).items()))
    stages = ",".join(map(str, spec["stages"]))
    return f"{spec['variant']}{f'({opts})' if opts else ''}@{spec['where']}[{stages}]"


def slug(spec: Mapping[str, Any] | None) -> str:
    """The placement in a run id, safe in a folder name: '+gc@block34' ('' for none); the
    options are in the id's hash."""
    if not spec:
        return ""
    return f"+{spec['variant']}@{spec['where']}{''.join(map(str, spec['stages']))}"
