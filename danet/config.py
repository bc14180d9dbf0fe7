"""Typed run configuration: defaults in one flat place, YAML and `key=value` overrides checked.

Every key is a dotted path (`train.lr`, `model.variant`); unknown keys and values of the
wrong type are DanetErrors that name the key, the file it came from and the valid choices.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from danet import IGNORE_INDEX, placement
from danet.errors import DanetError, coerce, did_you_mean, one_line

EVAL_MODES = ("whole", "slide", "flip", "msflip")  # eval.modes: danet.engine.inference runs each


@dataclass
class DataConfig:
    name: str = "synthetic"  # the built-in procedural dataset, or a downloaded one (README)
    root: str = ""  # a downloaded dataset's folder; empty: data/<name>
    train_split: str = "train"  # voc: train | trainaug (with SBD) | trainval
    val_split: str = "val"  # the split evaluated at the end of training
    ignore_index: int = IGNORE_INDEX  # folder: the label value of unlabelled pixels (not a class)
    setting: str = "context"  # synthetic only. context: pairs told apart by distant cues; local
    image_size: int = 176  # synthetic: larger than the default backbone's receptive field
    train_size: int = 1600  # synthetic: images are generated on the fly from (seed, split, index)
    val_size: int = 200  # synthetic: validation images
    data_seed: int = 0  # synthetic: fixed across run seeds, so seeds vary only training
    # training rescale reference, x a random factor in scale_range: one side (which one:
    # scale_mode), or (long, short) as mmseg's keep-ratio scale. 0: the image's own size
    base_size: int | tuple[int, int] = 0
    # whose random rescale: danet-v0.5.0 (short side, the paper's code) | danet-master (long
    # side) | mmseg (keep-ratio) | auto: danet-master for a side, mmseg for (long, short)
    scale_mode: str = "auto"
    crop_size: int | tuple[int, int] = 176  # one side, or (height, width)
    scale_range: tuple[float, float] = (0.9, 1.1)  # random rescale before the crop
    flip: bool = True  # random horizontal flip in training
    num_workers: int = 0  # DataLoader worker processes (docs/speed.md: measured by danet bench)
    pin_memory: bool = True  # page-locked batches for the copy to a GPU (CUDA only)
    persistent_workers: bool = True  # keep workers (and their caches) between loader passes


@dataclass
class ModelConfig:
    backbone: str = "tiny"  # small and fast on a CPU; resnet50 etc. for real runs
    variant: str = "danet"  # name in the attention registry (variants.available())
    variant_opts: dict[str, Any] = field(default_factory=dict)  # passed to variants.create
    head: str = "auto"  # single | dual (DANet's two branches) | auto: dual for danet only
    head_channels: int = 0  # 0: the backbone's default (DANet's rule: its channels // 4)
    pretrained: str = ""  # local weights file for the backbone; empty: from scratch
    multi_grid: tuple[int, ...] = ()  # layer4 dilations per block, e.g. (4, 8, 16); (): 2, 4, 4
    # frozen-feature protocol: the backbone stays as loaded (eval mode, no gradients), its
    # features of every image are computed once and cached; only the head trains (README)
    freeze_backbone: bool = False
    # attention inside a ResNet backbone, e.g. {variant: gc, stages: [3, 4], where: block}:
    # block = in every residual block before the sum, stage = after the stage (docs/model.md)
    backbone_attention: dict[str, Any] = field(default_factory=dict)


@dataclass
class TrainConfig:
    iterations: int = 1200  # built-in dataset: every variant learns both cues (README)
    batch_size: int = 4  # total per optimizer step
    lr: float = 0.01  # backbone lr; the head gets lr * head_lr_mult (DANet: x10)
    head_lr_mult: float = 10.0  # DANet's official code: the head learns 10x faster
    momentum: float = 0.9  # SGD momentum (official code and mmseg)
    weight_decay: float = 1e-4  # official code 1e-4; mmseg's recipes 5e-4
    poly_power: float = 0.9  # lr = base * (1 - it / iterations) ** power, per iteration
    loss_weights: tuple[float, ...] = (1.0, 1.0, 1.0)  # main (fused), then per-branch outputs
    checkpoint_every: int = 100  # iterations between checkpoints (the newest two are kept)
    log_every: int = 10  # iterations between log.jsonl / TensorBoard records
    threads: int = 0  # torch intra-op threads; 0 leaves torch's default
    device: str = "auto"  # auto: cuda when available, else cpu
    sync_bn: bool = True  # SyncBatchNorm when training on more than one process (DANet: yes)
    tensorboard: bool = True  # event files in RUN_DIR/tb: `tensorboard --logdir runs/`
    # Speed options (docs/speed.md). Off by default, as each changes the numbers a little:
    channels_last: bool = False  # NHWC convolutions
    amp: str = "off"  # off | bf16 | fp16 (CUDA, with a grad scaler): mixed precision
    compile: bool = False  # torch.compile the model (minutes of compilation first)
    cudnn_benchmark: bool = True  # CUDA: time the conv algorithms on the first batch (mmseg: on)
    keep_freed_memory: bool = True  # glibc: reuse freed blocks, do not refault them (exact)


@dataclass
class EvalConfig:
    every: int = 0  # iterations between validations (first mode, to log.jsonl); 0: at the end only
    modes: tuple[str, ...] = ("whole",)  # whole | slide | flip | msflip; each in result.json
    resize: tuple[int, ...] = ()  # (long, short): mmseg's keep-ratio test scale; (): native
    crop_size: int | tuple[int, int] = 0  # sliding window; 0: data.crop_size
    stride_rate: float = 2 / 3  # window stride as a fraction of the crop (official: 2/3)
    scales: tuple[float, ...] = (0.5, 0.75, 1.0, 1.25, 1.5, 1.75, 2.0, 2.2)  # msflip (official)
    flip: bool = True  # msflip also averages the horizontally flipped image


@dataclass
class Config:
    seed: int = 0  # drives init, data order and augmentation
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    # your own attention modules: importable module names (my_pkg.attention) or .py files
    # (relative: to the grid/config file naming them) whose import calls variants.register
    plugins: tuple[str, ...] = ()


def to_dict(cfg: Config) -> dict[str, Any]:
    """Plain, YAML- and JSON-safe dict (tuples become lists)."""

    def plain(v: Any) -> Any:
        if isinstance(v, (list, tuple)):
            return [plain(x) for x in v]
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        return v

    return plain(dataclasses.asdict(cfg))


def flat_keys(obj: Any = None, prefix: str = "") -> dict[str, Any]:
    """{'train.lr': <field type>, ...} for every leaf key of the config."""
    obj = obj or Config
    hints = typing.get_type_hints(obj)
    out: dict[str, Any] = {}
    for f in dataclasses.fields(obj):
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            out.update(flat_keys(tp, f"{prefix}{f.name}."))
        else:
            out[f"{prefix}{f.name}"] = tp
    return out


def flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{'train': {'lr': 1}} -> {'train.lr': 1}; `variant_opts` stays one mapping-valued key."""
    keys = flat_keys()
    out: dict[str, Any] = {}
    for k, v in d.items():
        path = f"{prefix}{k}"
        if isinstance(v, dict) and path not in keys:
            out.update(flatten(v, path + "."))
        else:
            out[path] = v
    return out


def get(cfg: Config, key: str) -> Any:
    """The value of dotted key `key` ('train.lr') in cfg."""
    value: Any = cfg
    for part in key.split("."):
        value = getattr(value, part)
    return value


def apply(
    cfg: Config, overrides: dict[str, Any], source: str, base: Path | None = None
) -> Config:
    """Return a copy of cfg with dotted-key overrides applied, each checked against its type.
    Relative plugin files are made absolute against `base` (default: the current directory)."""
    keys = flat_keys()
    cfg = dataclasses.replace(
        cfg,
        **{
            f.name: dataclasses.replace(getattr(cfg, f.name))
            for f in dataclasses.fields(cfg)
            if dataclasses.is_dataclass(getattr(cfg, f.name))
        },
    )
    for key, value in overrides.items():
        if key not in keys:
            raise DanetError(
                f"{source}: unknown config key '{key}'{did_you_mean(key, keys)}; "
                f"valid keys: {', '.join(keys)}"
            )
        parent, _, leaf = key.rpartition(".")
        target = get(cfg, parent) if parent else cfg
        value = coerce(key, value, keys[key], source)
        if key == placement.KEY:
            value = placement.normalize(value, source)
        if key == "plugins":
            from danet.plugins import resolve

            value = resolve(value, base)
        setattr(target, leaf, value)
    return cfg


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """['train.lr=0.02', 'model.variant=pam'] -> {'train.lr': 0.02, 'model.variant': 'pam'}."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise DanetError(f"override '{item}' is not key=value (for example train.lr=0.02)")
        try:
            out[key.strip()] = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError as e:
            # columns of the whole key=value item, as the user typed it
            at = _yaml_at(getattr(e, "problem_mark", None), len(key) + 1)
            raise DanetError(
                f"override '{item}': value is not valid YAML{at and ' at ' + at} "
                f"({_yaml_problem(e, len(key) + 1)})"
            ) from None
    return out


def _yaml_at(mark: Any, shift: int | None = None) -> str:
    """Where a PyYAML mark points, 1-based: 'line:column' in a file (shift None), else
    'column N' of an override whose value starts `shift` characters in ('' without a mark)."""
    if mark is None:
        return ""
    if shift is None:
        return f"{mark.line + 1}:{mark.column + 1}"
    if mark.line == 0:
        return f"column {shift + mark.column + 1}"
    return f"line {mark.line + 1}, column {mark.column + 1} of the value"


def _yaml_problem(e: yaml.YAMLError, shift: int | None = None) -> str:
    """PyYAML's problem, and what it was reading with where that began."""
    problem = getattr(e, "problem", None) or str(e).splitlines()[0]
    context, start = getattr(e, "context", None), _yaml_at(getattr(e, "context_mark", None), shift)
    return f"{problem}, {context} started at {start}" if context and start else problem


def load_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise DanetError(f"{path}: file not found") from None
    except (OSError, UnicodeDecodeError) as e:  # a folder, no permission, binary bytes
        raise DanetError(f"{path}: unreadable ({one_line(e)})") from None
    except yaml.YAMLError as e:
        at = _yaml_at(getattr(e, "problem_mark", None))  # path:line:column, as editors take it
        raise DanetError(f"{path}{at and ':' + at}: not valid YAML ({_yaml_problem(e)})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise DanetError(f"{path}: expected a mapping at the top level, got {type(data).__name__}")
    return data


def build(file: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Defaults, then a YAML file's keys, then command-line `key=value` overrides."""
    cfg = Config()
    if file:
        cfg = apply(cfg, flatten(load_yaml(file)), str(file), Path(file).parent)
    return apply(cfg, parse_overrides(overrides or []), "command line")


def from_dict(d: dict[str, Any], source: str = "config") -> Config:
    return apply(Config(), flatten(d), source)


# Keys added after run ids were first handed out, with their defaults: left out of a run's id
# when at the default, so that the runs of an existing grid keep their folders.
ADDED_LATER: dict[str, Any] = {
    "plugins": [], "data.ignore_index": IGNORE_INDEX, "eval.every": 0,
    "model.freeze_backbone": False, "data.scale_mode": "auto", "model.backbone_attention": {},
}


def run_id(cfg: Config) -> str:
    """Deterministic id: readable prefix + hash of the whole resolved config."""
    import hashlib
    import json

    d = to_dict(cfg)
    for key, default in ADDED_LATER.items():  # at their default: the ids runs had before
        *parents, leaf = key.split(".")
        section = d
        for p in parents:
            section = section[p]
        if section[leaf] == default:
            del section[leaf]
    digest = hashlib.sha1(json.dumps(d, sort_keys=True).encode()).hexdigest()[:8]
    head = "" if cfg.model.head == "auto" else f"-{cfg.model.head}"  # none-dual: the control
    model = cfg.model.backbone + placement.slug(cfg.model.backbone_attention)  # resnet18+gc@block34
    return f"{cfg.model.variant}{head}-{model}-{cfg.data.name}-s{cfg.seed}-{digest}"


def write_or_check(path: Path, cfg: Config) -> None:
    """Write a run folder's config.yaml, or check that the one there is cfg. A config.yaml that is
    empty, not YAML or cut short is said to be so (not "a different config"), with the fix."""
    from danet.utils import atomic_write_bytes  # lazily: grids are read without torch

    run_dir = path.parent
    text = yaml.safe_dump(to_dict(cfg), sort_keys=False)
    if not path.exists():
        atomic_write_bytes(path, text.encode())
        return
    fix = f"delete the run folder {run_dir} to start over, or restore the file"
    try:
        saved = path.read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise DanetError(f"{path}: unreadable ({one_line(e)}); {fix}") from None
    if not saved.strip():
        raise DanetError(f"{path} is empty; {fix}")
    cut = "" if saved.endswith("\n") else "; it is truncated"  # safe_dump ends with a newline
    try:
        data = load_yaml(path)  # names the line and column of a YAML error
    except DanetError as e:
        raise DanetError(f"{e}{cut}; {fix}") from None
    try:
        if from_dict(data, str(path)) == cfg:
            return
        problem = ""
    except DanetError as e:  # e.g. a value cut short to another type
        problem = str(e)
    keys, order = list(flatten(data)), list(flat_keys())
    # safe_dump writes every key in field order: a file of only a leading run of them was
    # cut short (a file of an older version lacks keys in the middle, and may still match)
    if cut or (len(keys) < len(order) and keys == order[: len(keys)]):
        last = f"'{keys[-1]}'" if keys else "nothing"
        raise DanetError(f"{path} is truncated (it stops after {last}); {fix}")
    if problem:
        raise DanetError(f"{problem}; {fix}")
    raise DanetError(f"{path} holds a different config; resume with it or use another run dir")
