import numpy as np
import torch

from danet.data import build_dataset, synthetic
from danet.data.sampler import ResumableSampler


def test_generator_is_deterministic_and_splits_differ():
    a_img, a_lab = synthetic.generate(3, "train", "context", 176, data_seed=5)
    b_img, b_lab = synthetic.generate(3, "train", "context", 176, data_seed=5)
    assert np.array_equal(a_img, b_img) and np.array_equal(a_lab, b_lab)
    v_img, _ = synthetic.generate(3, "val", "context", 176, data_seed=5)
    s_img, _ = synthetic.generate(3, "train", "context", 176, data_seed=6)
    assert not np.array_equal(a_img, v_img) and not np.array_equal(a_img, s_img)
    assert a_img.dtype == np.uint8 and a_img.shape == (176, 176, 3) and a_lab.shape == (176, 176)


def test_every_class_and_ignore_occur():
    seen = set()
    for i in range(20):
        seen |= set(np.unique(synthetic.generate(i, "val")[1]).tolist())
    assert seen == set(range(len(synthetic.CLASSES))) | {synthetic.IGNORE}


def _pair_pixels(img, lab, cls):
    return img[(lab == cls)].astype(float)


def test_ambiguous_pairs_look_alike_only_in_context_setting():
    """In `context`, class 1 vs 2 squares (and 3 vs 4 discs) have the same colour statistics;
    in `local` the second of each pair carries stripes, a local difference."""
    for setting, alike in (("context", True), ("local", False)):
        stats = {c: [] for c in (1, 2)}
        for i in range(30):
            img, lab = synthetic.generate(i, "val", setting)
            for c in stats:
                px = _pair_pixels(img, lab, c)
                if len(px):
                    stats[c].append(px)
        m1, m2 = (np.concatenate(stats[c]).mean() for c in (1, 2))
        assert (abs(m1 - m2) < 3) == alike, (setting, m1, m2)


def test_objects_are_beyond_the_receptive_field_of_the_cue():
    """Every object pixel lies more than the baseline's half receptive field (51 px, see
    test_model) plus a one-feature-cell margin from every band pixel."""
    for i in range(30):
        _, lab = synthetic.generate(i, "val")
        band_rows = np.nonzero(np.isin(lab, (5, 6, 7)).any(1))[0]
        obj_rows = np.nonzero(np.isin(lab, (1, 2, 3, 4)).any(1))[0]
        gap = min(abs(int(r) - int(b)) for r in obj_rows[[0, -1]] for b in band_rows[[0, -1]])
        assert gap > 51


def test_train_samples_depend_on_seed_and_draw_only(tiny_cfg):
    cfg = tiny_cfg()
    ds = build_dataset(cfg.data, "train", seed=1)
    a, b = ds[(3, 17)], ds[(3, 17)]
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])  # exact: same draw, same process
    c = build_dataset(cfg.data, "train", seed=2)[(3, 17)]
    assert not torch.equal(a[0], c[0]) or not torch.equal(a[1], c[1])
    assert a[0].shape == (3, 64, 64) and a[1].dtype == torch.int64


def test_sampler_resumes_mid_stream():
    full = ResumableSampler(10, seed=3)
    stream = [x for _, x in zip(range(25), full)]
    resumed = [x for _, x in zip(range(12), ResumableSampler(10, seed=3, start=13))]
    assert resumed == stream[13:]
    assert sorted(i for i, _ in stream[:10]) == list(range(10))  # each epoch a permutation


def test_local_bound_is_one_third_per_ambiguous_pair():
    from danet.metrics import ConfusionMatrix

    rng = np.random.default_rng(0)
    cm = ConfusionMatrix(len(synthetic.CLASSES))
    for i in range(40):
        _, lab = synthetic.generate(i, "val")
        cm.update(
            torch.from_numpy(synthetic.local_bound_labels(lab, rng)).long(),
            torch.from_numpy(lab).long(),
        )
    iou = cm.iou()
    assert torch.allclose(iou[[0, 5, 6, 7]], torch.ones(4, dtype=torch.float64))
    for a, b in synthetic.AMBIGUOUS_PAIRS:  # a fair coin: about 1/3 each (unequal counts shift it)
        assert abs((iou[a] + iou[b]) / 2 - 1 / 3) < 0.03
    # mIoU: 4 classes at 1 and 4 at about 1/3, i.e. about 2/3; 1 where every label is local
    assert abs(synthetic.local_bound_miou("context", n=40) - 2 / 3) < 0.02
    assert synthetic.local_bound_miou("local", n=10) == 1.0
