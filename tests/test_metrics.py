import math

import torch

from danet.metrics import ConfusionMatrix


def test_confusion_matrix_against_hand_computed():
    target = torch.tensor([[0, 0, 1, 1], [2, 2, 255, 1]])
    pred = torch.tensor([[0, 1, 1, 1], [2, 0, 2, 0]])
    cm = ConfusionMatrix(3, ignore_index=255)
    cm.update(pred, target)
    # rows = ground truth, columns = prediction; the pixel labelled 255 is not counted
    assert cm.mat.tolist() == [[1, 1, 0], [1, 2, 0], [1, 0, 1]]
    # IoU_c = TP / (TP + FP + FN): class 0: 1/(1+2+1), class 1: 2/(2+1+1), class 2: 1/(1+0+1)
    assert torch.allclose(cm.iou(), torch.tensor([1 / 4, 2 / 4, 1 / 2], dtype=torch.float64))
    assert math.isclose(cm.miou(), (0.25 + 0.5 + 0.5) / 3)
    assert math.isclose(cm.pixel_accuracy(), 4 / 7)


def test_absent_class_is_left_out_and_matrices_merge():
    a, b = ConfusionMatrix(3), ConfusionMatrix(3)
    a.update(torch.tensor([0, 0]), torch.tensor([0, 1]))
    b.update(torch.tensor([1, 1]), torch.tensor([1, 255]))
    merged = ConfusionMatrix(3).merge(a).merge(b)
    assert merged.mat.tolist() == [[1, 0, 0], [1, 1, 0], [0, 0, 0]]
    assert math.isnan(merged.iou()[2].item())  # absent from ground truth and prediction
    assert math.isclose(merged.miou(), (1 / 2 + 1 / 2) / 2)
