"""Tiny, randomly initialised image-text-to-text models of the real architectures, with
processors built locally (a byte-fallback BPE vocabulary of single characters: no download)."""

from __future__ import annotations

import string
from collections.abc import Callable
from typing import Any

import torch

#: Vision towers see 32×32 pictures in 8×8 patches.
IMAGE_SIZE = 32
_TEXT = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2,
         "num_key_value_heads": 1, "head_dim": 16, "max_position_embeddings": 512}
_VISION = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2,
           "image_size": IMAGE_SIZE, "patch_size": 8}


def _vocab(special: list[str]) -> dict[str, int]:
    """Special tokens, the 256 byte-fallback tokens, then single printable characters."""
    tokens = [*special, *(f"<0x{b:02X}>" for b in range(256)), "▁", *string.ascii_letters, *string.digits, *".,?!:'-"]
    return {token: n for n, token in enumerate(dict.fromkeys(tokens))}


def gemma3() -> tuple[Any, Any]:
    from transformers import (Gemma3Config, Gemma3ForConditionalGeneration, Gemma3ImageProcessor, Gemma3Processor,
                              GemmaTokenizer)

    specials = ["<pad>", "<eos>", "<bos>", "<unk>", "<mask>", "<start_of_image>", "<end_of_image>", "<image_soft_token>",
                "<start_of_turn>", "<end_of_turn>"]
    vocab = _vocab(specials)
    tokenizer = GemmaTokenizer(vocab=vocab, extra_special_tokens={"boi_token": "<start_of_image>", "eoi_token": "<end_of_image>",
                                                                  "image_token": "<image_soft_token>"})
    image_processor = Gemma3ImageProcessor(size={"height": IMAGE_SIZE, "width": IMAGE_SIZE})
    processor = Gemma3Processor(image_processor=image_processor, tokenizer=tokenizer, image_seq_length=4)
    config = Gemma3Config(
        text_config={**_TEXT, "vocab_size": len(vocab), "sliding_window": 64, "layer_types": ["full_attention"]},
        vision_config=_VISION, mm_tokens_per_image=4, boi_token_index=vocab["<start_of_image>"],
        eoi_token_index=vocab["<end_of_image>"], image_token_index=vocab["<image_soft_token>"],
        pad_token_id=0, eos_token_id=1, bos_token_id=2)
    return Gemma3ForConditionalGeneration(config), processor


def paligemma() -> tuple[Any, Any]:
    from transformers import (GemmaTokenizer, PaliGemmaConfig, PaliGemmaForConditionalGeneration, PaliGemmaProcessor,
                              SiglipImageProcessor)

    vocab = _vocab(["<pad>", "<eos>", "<bos>", "<unk>", "<mask>", "<image>"])
    tokenizer = GemmaTokenizer(vocab=vocab, extra_special_tokens={"image_token": "<image>"})
    image_processor = SiglipImageProcessor(size={"height": IMAGE_SIZE, "width": IMAGE_SIZE})
    image_processor.image_seq_length = 16
    processor = PaliGemmaProcessor(image_processor=image_processor, tokenizer=tokenizer)
    config = PaliGemmaConfig(
        text_config={**_TEXT, "model_type": "gemma", "vocab_size": len(vocab)},
        vision_config={**_VISION, "projection_dim": 32}, projection_dim=32, image_token_index=vocab["<image>"],
        pad_token_id=0, eos_token_id=1, bos_token_id=2)
    return PaliGemmaForConditionalGeneration(config), processor


def _qwen_tokenizer_and_processor(processor_class) -> tuple[dict[str, int], Any]:
    from transformers import Qwen2Tokenizer, Qwen2VLImageProcessor, Qwen2VLVideoProcessor

    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>"]
    vocab = _vocab(specials)
    tokenizer = Qwen2Tokenizer(vocab=vocab, merges=[], unk_token=None, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                               extra_special_tokens={"image_token": "<|image_pad|>", "video_token": "<|video_pad|>",
                                                     "vision_bos_token": "<|vision_start|>", "vision_eos_token": "<|vision_end|>"})
    image_processor = Qwen2VLImageProcessor(min_pixels=IMAGE_SIZE * IMAGE_SIZE, max_pixels=IMAGE_SIZE * IMAGE_SIZE,
                                            patch_size=8, merge_size=2, temporal_patch_size=2)
    processor = processor_class(image_processor=image_processor, tokenizer=tokenizer,
                                video_processor=Qwen2VLVideoProcessor(patch_size=8, merge_size=2, temporal_patch_size=2))
    return vocab, processor


def _qwen_ids(vocab: dict[str, int]) -> dict[str, int]:
    return {"image_token_id": vocab["<|image_pad|>"], "video_token_id": vocab["<|video_pad|>"],
            "vision_start_token_id": vocab["<|vision_start|>"], "vision_end_token_id": vocab["<|vision_end|>"],
            "eos_token_id": vocab["<|im_end|>"], "pad_token_id": vocab["<|endoftext|>"]}


def _qwen_text(vocab: dict[str, int]) -> dict[str, Any]:
    return {**_TEXT, "vocab_size": len(vocab), "rope_scaling": {"type": "mrope", "mrope_section": [2, 3, 3]},
            "bos_token_id": vocab["<|endoftext|>"], "eos_token_id": vocab["<|im_end|>"]}


def qwen2_vl() -> tuple[Any, Any]:
    from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration, Qwen2VLProcessor

    vocab, processor = _qwen_tokenizer_and_processor(Qwen2VLProcessor)
    config = Qwen2VLConfig(
        text_config=_qwen_text(vocab),
        vision_config={"depth": 1, "embed_dim": 32, "hidden_size": 32, "num_heads": 2, "mlp_ratio": 2, "patch_size": 8,
                       "spatial_merge_size": 2, "temporal_patch_size": 2, "in_channels": 3},
        **_qwen_ids(vocab))
    return Qwen2VLForConditionalGeneration(config), processor


def qwen2_5_vl() -> tuple[Any, Any]:
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration, Qwen2_5_VLProcessor

    vocab, processor = _qwen_tokenizer_and_processor(Qwen2_5_VLProcessor)
    config = Qwen2_5_VLConfig(
        text_config=_qwen_text(vocab),
        vision_config={"depth": 2, "hidden_size": 32, "intermediate_size": 64, "num_heads": 2, "patch_size": 8,
                       "spatial_merge_size": 2, "temporal_patch_size": 2, "window_size": 16, "out_hidden_size": 32,
                       "fullatt_block_indexes": [1]},
        **_qwen_ids(vocab))
    return Qwen2_5_VLForConditionalGeneration(config), processor


def llava() -> tuple[Any, Any]:
    from transformers import CLIPImageProcessor, LlamaTokenizer, LlavaConfig, LlavaForConditionalGeneration, LlavaProcessor

    vocab = _vocab(["<unk>", "<s>", "</s>", "<pad>", "<image>"])
    tokenizer = LlamaTokenizer(vocab=vocab, merges=[], extra_special_tokens={"image_token": "<image>"})
    image_processor = CLIPImageProcessor(size={"shortest_edge": IMAGE_SIZE}, crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE})
    processor = LlavaProcessor(image_processor=image_processor, tokenizer=tokenizer, patch_size=8,
                               vision_feature_select_strategy="default", num_additional_image_tokens=1)
    config = LlavaConfig(
        text_config={**_TEXT, "model_type": "llama", "vocab_size": len(vocab)},
        vision_config={**_VISION, "model_type": "clip_vision_model", "projection_dim": 32},
        image_token_index=vocab["<image>"], vision_feature_select_strategy="default", vision_feature_layer=-1,
        pad_token_id=3, eos_token_id=2, bos_token_id=1)
    return LlavaForConditionalGeneration(config), processor


#: Builders by ``model_type``.
BUILDERS: dict[str, Callable[[], tuple[Any, Any]]] = {
    "gemma3": gemma3, "paligemma": paligemma, "qwen2_vl": qwen2_vl, "qwen2_5_vl": qwen2_5_vl, "llava": llava,
}


def tiny_model(family: str, seed: int = 0) -> tuple[Any, Any]:
    """``(model, processor)`` of ``family``, in eval mode, weights from ``seed``."""
    torch.manual_seed(seed)
    model, processor = BUILDERS[family]()
    return model.eval(), processor
