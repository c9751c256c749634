"""Text: a discrete stream of UTF-8 bytes between BOS and EOS, padded with PAD (no vocabulary to download),
UTF-8 .txt files, and captions written from another stream's labels with templates, so that any labelled
dataset becomes a captioned one."""

from modalities.text.adapter import (
    BOS,
    EOS,
    PAD,
    VOCAB,
    CaptionedDataset,
    TextAdapter,
    decode_text,
    encode_text,
)

__all__ = ["BOS", "EOS", "PAD", "VOCAB", "CaptionedDataset", "TextAdapter", "decode_text", "encode_text"]
