"""The byte-level text stream: exact round trips for any UTF-8 string, captions from labels, files."""

import pytest
import torch

from modalities import build_adapter
from modalities.common.digits import DigitsDataset
from modalities.text.adapter import BOS, EOS, PAD, VOCAB, decode_text, encode_text

STRINGS = ["", "a handwritten 7", "naïve café — 東京 🎹", "tab\tnew\nline", "\x00 nul byte"]


@pytest.mark.parametrize("text", STRINGS)
def test_any_utf8_string_round_trips(text):
    ids = encode_text(text, 64)
    assert ids.shape == (64,) and ids[0] == BOS and ids.max() < VOCAB
    assert decode_text(ids) == text
    assert (ids == EOS).sum() == 1 and (ids[len(text.encode()) + 2 :] == PAD).all()


def test_too_long_text_is_an_error_naming_it():
    with pytest.raises(ValueError, match=r"'abcdef' is 6 UTF-8 bytes.*max_length >= 8"):
        encode_text("abcdef", 7)


def test_tokens_mask_padding_and_count_positions():
    adapter = build_adapter("text", max_length=10)
    ids = torch.stack([encode_text("hi", 10), encode_text("hello", 10)])
    tokens = adapter.encode(ids)
    assert tokens.discrete and tokens.mask.sum(1).tolist() == [4, 7]
    assert tokens.pos[1, :, 0].tolist() == list(range(10))
    assert torch.equal(adapter.decode(tokens), ids)
    start = adapter.layout(3)
    assert start.mask.sum().item() == 3 and (start.x[:, 0] == BOS).all()
    with pytest.raises(ValueError, match="integer ids"):
        adapter.encode(ids.float())


def test_captions_fill_templates_per_split():
    adapter = build_adapter(
        "text",
        max_length=40,
        templates={"train": ["a handwritten {digit}"], "heldout": ["the digit {digit_word}", "a {digit}"]},
        words={"digit": ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]},
    )
    heldout = adapter.captioned(DigitsDataset("heldout"), "heldout", "image", "text")
    first, second = heldout[0], heldout[1]
    assert first["media"]["image"].shape == (1, 8, 8)
    digit = first["labels"]["digit"]
    assert decode_text(first["media"]["text"]) == f"the digit {adapter.words['digit'][digit]}"
    assert decode_text(second["media"]["text"]) == f"a {second['labels']['digit']}"
    classes = DigitsDataset.classes
    assert adapter.named_classes("The digit SEVEN.", "digit", classes) == [7]
    assert adapter.named_classes("a 3 or a 5", "digit", classes) == [3, 5]
    with pytest.raises(KeyError, match="uses 'colour'"):
        adapter.fill("a {colour} one", {"digit": 1}, classes)


def test_text_files_round_trip(tmp_path):
    adapter = build_adapter("text", max_length=48)
    ids = encode_text("naïve café — 東京", 48)
    path = adapter.save(ids, tmp_path / "a" / "caption.txt")
    assert torch.equal(adapter.load(path), ids)
    (tmp_path / "bad.txt").write_bytes(b"\xff\xfe bad")
    with pytest.raises(ValueError, match="bad.txt is not UTF-8"):
        adapter.load(tmp_path / "bad.txt")


def test_template_alternatives_expand_to_every_choice():
    from modalities.text.adapter import expand_alternatives

    assert expand_alternatives("[a|the digit] {digit}[, by hand|]") == [
        "a {digit}, by hand",
        "a {digit}",
        "the digit {digit}, by hand",
        "the digit {digit}",
    ]
    adapter = build_adapter(
        "text", templates={"train": ["[a|one] {digit}"], "heldout": ["this is a {digit}"]}
    )
    assert adapter.templates == {"train": ["a {digit}", "one {digit}"], "heldout": ["this is a {digit}"]}
    with pytest.raises(ValueError, match="opens \\[ without closing"):
        expand_alternatives("[a|b {digit}")
