"""Whole words on a real CLIP BPE vocabulary (49,408 tokens): the encoder writes words, and its text
re-tokenizes to exactly the ids it wrote."""

import pytest
import torch
from clip_vocab import clip_tokenizer
from conftest import tiny_config

from dediffusion.models.dediffusion import DeDiffusion
from dediffusion.models.micro import build_micro_decoder
from dediffusion.models.vocabulary import round_trip_ids, strip_markers


@pytest.fixture(scope="module")
def clip_decoder(tmp_path_factory):
    tokenizer = clip_tokenizer(tmp_path_factory.mktemp("clip"), max_length=16)
    return build_micro_decoder([], resolution=8, latent=False, max_length=16, text_width=16, tokenizer=tokenizer)


def test_the_tokenizer_is_clips(clip_decoder):
    tokenizer = clip_decoder.tokenizer
    assert len(tokenizer) == 49408
    assert tokenizer("a photo of a cat").input_ids == [49406, 320, 1125, 539, 320, 2368, 49407]


def test_whole_words_are_tokens_that_read_back_as_themselves(clip_decoder):
    strings = clip_decoder.token_strings()
    whole = clip_decoder.vocabulary_mask(whole_words=True)
    plain = clip_decoder.vocabulary_mask()
    vocab = clip_decoder.tokenizer.get_vocab()
    assert whole[vocab["toppers</w>"]] and whole[vocab["cat</w>"]]
    assert plain[vocab["sch"]] and not whole[vocab["sch"]]  # a word's first piece: never whole
    assert all(strings[i].endswith("</w>") for i in whole.nonzero().flatten().tolist())
    assert 30_000 < int(whole.sum()) < int(plain.sum())
    ids = whole.nonzero().flatten()[:500].tolist()
    assert clip_decoder.read_back([strip_markers(strings[i]) for i in ids]) == [[i] for i in ids]


def test_round_trip_ids_keeps_only_tokens_read_back_alone():
    strings = ["red</w>", "re", "d</w>", "##x", " "]
    read = {"red": [0], "re": [2], "d": [2], "x": [9], "": []}  # "x" alone is another token than "##x"
    assert round_trip_ids(strings, lambda texts: [read[t.strip()] for t in texts]).tolist() == [
        True, False, True, False, False,
    ]  # fmt: skip


@pytest.mark.parametrize("whole_words", [True, False])
def test_the_encoders_text_re_tokenizes_to_its_ids_only_with_whole_words(clip_decoder, whole_words):
    config = tiny_config("", "", "encoder.num_tokens=8", f"tokens.whole_words={str(whole_words).lower()}")
    model = DeDiffusion(config, clip_decoder).eval()
    torch.nn.init.normal_(model.encoder.head.weight, std=5.0)  # spread the argmax over the vocabulary
    images = torch.rand(32, 3, 8, 8, generator=torch.Generator().manual_seed(0)) * 2 - 1
    ids = model.encode_tokens(images)
    texts = model.decoder.decode_tokens(ids)
    same = [back == row for back, row in zip(clip_decoder.read_back(texts), ids.tolist())]
    if whole_words:
        assert all(same) and all(len(t.split()) == 8 for t in texts)
    else:
        assert not all(same)  # subword pieces glue into other words
