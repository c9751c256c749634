"""scikit-learn's digits: a fixed, disjoint train / held-out split of all 1,797 images in [0, 1]."""

import torch

from modalities.common.digits import DigitsDataset


def test_digits_splits():
    train, heldout = DigitsDataset("train"), DigitsDataset("heldout")
    assert len(train) + len(heldout) == 1797 and len(heldout) == 359
    item = train[0]
    assert item["media"].shape == (1, 8, 8) and item["labels"]["digit"] in range(10)
    assert train.images.min() == 0 and train.images.max() == 1
    assert torch.equal(DigitsDataset("train").images, train.images)
    assert set(train.index).isdisjoint(heldout.index) and len({*train.index, *heldout.index}) == 1797
