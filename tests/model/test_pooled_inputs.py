"""Pooled clean inputs in the adaLN vector (`MMDiT(pool=...)`): off computes the model without them exactly,
padding changes nothing, a generated stream never reaches the pooled vector, and pooling does condition."""

import pytest
import torch

from mmdit.contract import StreamSpec
from mmdit.model.backbone import MMDiT
from mmdit.model.masks import role_structure
from mmdit.model.tokens import Tokens
from mmdit.objectives.guidance import guided_prediction
from modalities.common.grids import grid_positions

DRAW = {"text": "condition", "image": "generate"}
DESCRIBE = {"image": "understand", "text": "generate"}


def _model(pool: str = "none", seed: int = 0) -> MMDiT:
    torch.manual_seed(seed)
    specs = [StreamSpec("image", 4, positions="rope", axes=2), StreamSpec("text", 1, vocab=20, axes=1)]
    model = MMDiT(
        specs, width=32, heads=2, joint_depth=1, single_depth=1, pool=pool, poolable=["image", "text"]
    )
    for p in model.parameters():  # adaLN-Zero starts as the identity: give every weight a value
        torch.nn.init.normal_(p, std=0.3)
    return model.eval()


def _streams(image: torch.Tensor, ids: torch.Tensor, real: int | None = None) -> dict[str, Tokens]:
    """The image [B, 6, 4] and text ids [B, N]; the text's ids from `real` on are padding."""
    pos = torch.arange(ids.shape[1], dtype=torch.float32).expand(ids.shape[0], -1)[..., None]
    mask = torch.ones(ids.shape, dtype=torch.bool)
    if real is not None:
        mask[:, real:] = False
    grid = grid_positions(2, 3, image.shape[0])
    image_tokens = Tokens(image, grid, torch.ones(image.shape[:2], dtype=torch.bool))
    return {"image": image_tokens, "text": Tokens(ids, pos.clone(), mask)}


def _run(model, image, ids, roles, real=None, clean=None):
    streams = _streams(image, ids, real)
    t = {s: torch.full((len(ids),), 0.5 if r == "generate" else 0.0) for s, r in roles.items()}
    clean = [s for s, r in roles.items() if r != "generate"] if clean is None else clean
    with torch.no_grad():
        return model(streams, t, structure=role_structure(streams, roles), clean=clean)


@pytest.fixture
def inputs():
    generator = torch.Generator().manual_seed(1)
    return torch.randn(2, 6, 4, generator=generator), torch.randint(0, 20, (2, 7), generator=generator)


def test_off_is_the_model_without_pooling_exactly(inputs):
    image, ids = inputs
    plain = MMDiT(
        [StreamSpec("image", 4, positions="rope", axes=2), StreamSpec("text", 1, vocab=20, axes=1)],
        width=32,
        heads=2,
        joint_depth=1,
        single_depth=1,
    )
    off = _model("none")
    assert off.state_dict().keys() == plain.state_dict().keys()  # no pooling weights at all
    plain.load_state_dict(off.state_dict())
    streams = _streams(image, ids)
    t = {"image": torch.full((2,), 0.5), "text": torch.zeros(2)}
    with torch.no_grad():
        expected = plain(streams, t, structure=role_structure(streams, DRAW))
    got = _run(off, image, ids, DRAW)
    for s in expected:
        assert torch.equal(got[s], expected[s])


@pytest.mark.parametrize("pool", ["embedded", "joint"])
def test_pooling_with_zero_mlps_computes_the_model_without_pooling(inputs, pool):
    image, ids = inputs
    model, off = _model(pool), _model("none")
    off.load_state_dict(model.state_dict(), strict=False)
    for mlp in model.input_pools.values():
        torch.nn.init.zeros_(mlp.mlp[2].weight)
        torch.nn.init.zeros_(mlp.mlp[2].bias)
    got, expected = _run(model, image, ids, DRAW), _run(off, image, ids, DRAW)
    for s in expected:
        assert torch.equal(got[s], expected[s])


@pytest.mark.parametrize("pool", ["embedded", "joint"])
def test_padding_bytes_change_nothing(inputs, pool):
    image, ids = inputs
    model = _model(pool)
    other = ids.clone()
    other[:, 4:] = (ids[:, 4:] + 7) % 20
    base, moved = _run(model, image, ids, DRAW, real=4), _run(model, image, other, DRAW, real=4)
    assert torch.equal(base["image"], moved["image"])
    streams, moved_streams = _streams(image, ids, 4), _streams(image, other, 4)
    xs = {s: model.inputs[s](streams[s].x) for s in streams}
    moved_xs = {s: model.inputs[s](moved_streams[s].x) for s in moved_streams}
    conds = {"image": torch.zeros(2, 32)}
    pooled = model.add_pooled(conds, xs, streams, ["text"])["image"]
    assert torch.equal(pooled, model.add_pooled(conds, moved_xs, moved_streams, ["text"])["image"])
    # The mean is over the 4 real bytes: the vector of 4 real bytes with no padding at all.
    short = _streams(image, ids[:, :4])
    short_xs = {s: model.inputs[s](short[s].x) for s in short}
    torch.testing.assert_close(pooled, model.add_pooled(conds, short_xs, short, ["text"])["image"])


@pytest.mark.parametrize("pool", ["embedded", "joint"])
@pytest.mark.parametrize("roles", [DRAW, DESCRIBE], ids=["draw", "describe"])
def test_a_generated_stream_does_not_reach_the_pooled_vector(inputs, pool, roles):
    """The clean stream's output depends on its own tokens and its adaLN vector only (attention hides the
    generated stream from it): if the generated stream leaked into the pooled vector, it would change."""
    image, ids = inputs
    model = _model(pool)
    clean = next(s for s, r in roles.items() if r != "generate")
    generated = next(s for s, r in roles.items() if r == "generate")
    base = _run(model, image, ids, roles)
    if generated == "image":
        moved = _run(model, image + 1.0, ids, roles)
    else:
        moved = _run(model, image, (ids + 3) % 20, roles)
    assert torch.equal(base[clean], moved[clean])


@pytest.mark.parametrize("pool", ["embedded", "joint"])
def test_pooling_conditions_the_generated_stream(inputs, pool):
    """With attention between the streams cut, the caption still changes the image through the pooled
    vector, and only when the caption is passed as clean."""
    image, ids = inputs
    model = _model(pool)
    streams, other = _streams(image, ids), _streams(image, (ids + 5) % 20)
    apart = torch.zeros(2, 13, 13, dtype=torch.bool)
    apart[:, :6, :6] = True
    apart[:, 6:, 6:] = True
    t = {"image": torch.full((2,), 0.5), "text": torch.zeros(2)}
    with torch.no_grad():
        for clean, changes in ((["text"], True), ([], False)):
            a = model(streams, t, structure=apart, clean=clean)["image"]
            b = model(other, t, structure=apart, clean=clean)["image"]
            assert (not torch.equal(a, b)) == changes


def test_errors_name_what_is_wrong(inputs):
    image, ids = inputs
    streams = _streams(image, ids)
    t = {"image": torch.full((2,), 0.5), "text": torch.zeros(2)}
    with pytest.raises(ValueError, match="needs the attention structure"):
        _model("joint")(streams, t, clean=["text"])
    with pytest.raises(KeyError, match="not among this call's streams"):
        _model("embedded")({"image": streams["image"]}, t["image"], clean=["text"])
    torch.manual_seed(0)
    specs = [StreamSpec("image", 4, positions="rope", axes=2), StreamSpec("text", 1, vocab=20, axes=1)]
    only_text = MMDiT(specs, width=32, heads=2, single_depth=1, pool="embedded", poolable=["text"])
    with pytest.raises(KeyError, match="no pooling MLP"):
        only_text(streams, t, clean=["image"])
    with pytest.raises(ValueError, match="pool must be one of"):
        MMDiT(specs, width=32, heads=2, single_depth=1, pool="mean")
    with pytest.raises(KeyError, match="not streams of this model"):
        MMDiT(specs, width=32, heads=2, single_depth=1, pool="embedded", poolable=["audio"])


@pytest.mark.parametrize("pool", ["embedded", "joint"])
def test_guidance_pools_the_empty_prompt_in_its_unconditional_branch(inputs, pool):
    """At scale 0 guidance is its unconditional branch: the model on the empty prompt, pooled (both branches
    run as one batch of 2B, so equal to float32 rounding)."""
    image, ids = inputs
    model = _model(pool)
    empty = torch.zeros_like(ids)
    streams = _streams(image, ids)
    predict = guided_prediction(
        model,
        {"image": streams["image"]},
        {},
        scale=0.0,
        conditions={"text": streams["text"]},
        unconditional={"text": _streams(image, empty)["text"]},
        roles=DRAW,
    )
    t = torch.full((2,), 0.5)
    expected = _run(model, image, empty, DRAW)["image"]
    torch.testing.assert_close(predict({"image": image}, t)["image"], expected, rtol=1e-4, atol=1e-4)
    unpooled = _run(model, image, empty, DRAW, clean=[])["image"]
    assert (expected - unpooled).abs().max() > 1e-2 * expected.abs().max()
