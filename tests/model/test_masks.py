"""Role masks: a token cannot see what its mask forbids (changing a forbidden token changes nothing), and
sees what it may (changing an allowed token changes something)."""

import pytest
import torch

from mmdit.contract import StreamSpec
from mmdit.model.backbone import MMDiT
from mmdit.model.masks import role_structure
from mmdit.model.tokens import Tokens
from modalities.common.grids import grid_positions


def _model() -> MMDiT:
    torch.manual_seed(0)
    model = MMDiT(
        [StreamSpec("image", 4, positions="rope", axes=2), StreamSpec("text", 1, vocab=20, axes=1)],
        width=32,
        heads=2,
        joint_depth=1,
        single_depth=1,
    )
    for p in model.parameters():  # adaLN-Zero starts as the identity: give every weight a value
        torch.nn.init.normal_(p, std=0.3)
    return model.eval()


def _streams(image: torch.Tensor, ids: torch.Tensor) -> dict[str, Tokens]:
    pos = torch.arange(ids.shape[1], dtype=torch.float32).expand(ids.shape[0], -1)[..., None]
    return {
        "image": Tokens(
            image, grid_positions(2, 3, image.shape[0]), torch.ones(image.shape[:2], dtype=torch.bool)
        ),
        "text": Tokens(ids, pos.clone(), torch.ones(ids.shape, dtype=torch.bool)),
    }


def _run(model, image, ids, roles):
    streams = _streams(image, ids)
    t = {"image": torch.full((1,), 0.5 if roles["image"] == "generate" else 0.0), "text": torch.zeros(1)}
    with torch.no_grad():
        return model(streams, t, structure=role_structure(streams, roles))


def _changed(a, b):
    return (a - b).abs().max().item() > 1e-6


@pytest.fixture
def inputs():
    generator = torch.Generator().manual_seed(1)
    return torch.randn(1, 6, 4, generator=generator), torch.randint(0, 20, (1, 5), generator=generator)


def test_draw_task_text_never_sees_the_noised_image(inputs):
    model, (image, ids) = _model(), inputs
    roles = {"text": "condition", "image": "generate"}
    base = _run(model, image, ids, roles)
    moved = _run(model, image + 1.0, ids, roles)
    assert not _changed(base["text"], moved["text"])  # forbidden: clean text -> noised image
    other = ids.clone()
    other[0, 4] = (ids[0, 4] + 1) % 20
    changed = _run(model, image, other, roles)
    assert _changed(base["image"], changed["image"])  # allowed: the image reads the prompt
    assert not _changed(base["text"][:, :4], changed["text"][:, :4])  # causal: no peeking at token 4


def test_describe_task_image_never_sees_the_text_being_written(inputs):
    model, (image, ids) = _model(), inputs
    roles = {"image": "understand", "text": "generate"}
    base = _run(model, image, ids, roles)
    other = ids.clone()
    other[0, 2] = (ids[0, 2] + 3) % 20
    changed = _run(model, image, other, roles)
    assert not _changed(base["image"], changed["image"])
    assert not _changed(base["text"][:, :2], changed["text"][:, :2])
    assert _changed(base["text"][:, 2:], changed["text"][:, 2:])
    moved = _run(model, image + 1.0, ids, roles)
    assert _changed(base["text"], moved["text"])  # the description reads the image


def test_padding_is_never_seen_and_no_row_is_empty(inputs):
    model, (image, ids) = _model(), inputs
    streams = _streams(image, ids)
    streams["text"].mask[0, 3:] = False
    roles = {"text": "condition", "image": "generate"}
    structure = role_structure(streams, roles)
    t = {"image": torch.full((1,), 0.5), "text": torch.zeros(1)}
    with torch.no_grad():
        base = model(streams, t, structure=structure)
        streams["text"].x[0, 4] = (ids[0, 4] + 5) % 20
        padded = model(streams, t, structure=structure)
    assert torch.isfinite(base["text"]).all()
    assert not _changed(base["image"], padded["image"]) and not _changed(
        base["text"][:, :4], padded["text"][:, :4]
    )


def test_unknown_role_is_named():
    streams = _streams(torch.zeros(1, 6, 4), torch.zeros(1, 3, dtype=torch.long))
    with pytest.raises(ValueError, match="unknown stream role 'decode'"):
        role_structure(streams, {"image": "decode", "text": "condition"})
