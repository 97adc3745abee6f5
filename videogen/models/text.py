"""The text encoder: a T5 / UMT5 encoder and its tokenizer, read from a model folder, with Wan's semantics.

Wan2.1 conditions its DiT on umT5-XXL states. We follow diffusers' ``WanPipeline`` to the number, so that
our text states equal theirs on the same weights:

1. the prompt is cleaned (HTML entities unescaped twice, whitespace collapsed; ftfy's text fixes where
   ftfy is installed, as Wan does);
2. it is tokenized padded to ``max_sequence_length`` (512) with an attention mask, longer prompts cut;
3. the encoder runs with that mask; each prompt's states are cut to its true token count and padded back
   to 512 with zeros -- the DiT's cross-attention sees exact zeros, not the encoder's outputs at
   padding positions.

Steps 1-2 are `tokenize` and step 3 `encode_states`: the one text conditioning that training uses too.

Encoded prompts are kept in a small LRU cache, so the negative prompt and repeated prompts in one process
are encoded once. `TextEncoder.offload` moves the encoder to the CPU once encoding is done, to give its
memory (11 GB for umT5-XXL in bf16) back to the DiT.

The demo model uses a byte-level tokenizer (transformers' ``ByT5Tokenizer``, which needs no vocabulary
file); `save_byte_tokenizer` writes such a ``tokenizer/`` folder.
"""

from __future__ import annotations

import html
import re
from collections import OrderedDict
from pathlib import Path

import torch

from videogen.errors import ModelError

MAX_SEQUENCE_LENGTH = 512  # Wan2.1's text length: states are always (B, 512, D)
CACHE_SIZE = 32  # prompts kept encoded per process

# transformers model_type -> encoder-only class (Wan2.1 ships UMT5; the demo model a plain T5)
_ENCODER_CLASSES = {"umt5": "UMT5EncoderModel", "t5": "T5EncoderModel"}


def clean_prompt(text: str) -> str:
    """Wan's prompt cleaning: ftfy fixes (if installed), HTML entities unescaped twice, whitespace collapsed."""
    try:
        import ftfy

        text = ftfy.fix_text(text)
    except ImportError:
        pass
    text = html.unescape(html.unescape(text)).strip()
    return re.sub(r"\s+", " ", text).strip()


def tokenize(tokenizer, captions: list[str], max_length: int) -> dict[str, torch.Tensor]:
    """Token ids and attention mask of cleaned captions, padded to ``max_length`` (longer ones cut): (B, N) each."""
    tokens = tokenizer([clean_prompt(c) for c in captions], padding="max_length", max_length=max_length,
                       truncation=True, add_special_tokens=True, return_attention_mask=True, return_tensors="pt")
    return {"input_ids": tokens.input_ids, "attention_mask": tokens.attention_mask}


def encode_states(encoder, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Text states (B, N, D) of tokens (B, N), exact zeros at the padding positions.

    As diffusers' ``WanPipeline._get_t5_prompt_embeds``: each prompt's states are cut at its true token count
    (the mask is a run of ones, padding on the right) and padded back with zeros, so the DiT's cross-attention
    sees zeros, not the encoder's outputs at padding positions. Differentiable, for runs that train the encoder.
    """
    states = encoder(input_ids, attention_mask=attention_mask).last_hidden_state  # (B, N, D)
    keep = attention_mask[..., None].bool()  # (B, N, 1)
    return torch.where(keep, states, torch.zeros((), dtype=states.dtype, device=states.device))


def save_byte_tokenizer(folder: str | Path) -> Path:
    """Write a byte-level T5 tokenizer folder (transformers' ByT5Tokenizer: 384 ids, no vocabulary file).

    It tokenizes any UTF-8 text without a trained vocabulary, which suits the small demo model and
    tests; the encoder's ``vocab_size`` must be at least 384.
    """
    from transformers import ByT5Tokenizer

    folder = Path(folder)
    ByT5Tokenizer().save_pretrained(folder)
    return folder


def _load_tokenizer(folder: Path):
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(folder)
    except Exception as e:  # transformers raises OSError, ValueError or KeyError for a bad folder
        raise ModelError(f"{folder}: cannot load the tokenizer ({type(e).__name__}: {e})") from None


def _load_encoder(folder: Path, dtype: torch.dtype | None):
    import transformers

    try:
        config = transformers.AutoConfig.from_pretrained(folder)
    except Exception as e:
        raise ModelError(f"{folder}: cannot read the text encoder config ({type(e).__name__}: {e})") from None
    class_name = _ENCODER_CLASSES.get(config.model_type)
    if class_name is None:
        raise ModelError(f"{folder}: text encoder type {config.model_type!r} is not a T5 or UMT5 encoder")
    try:
        return getattr(transformers, class_name).from_pretrained(folder, dtype=dtype)
    except Exception as e:
        raise ModelError(f"{folder}: cannot load the text encoder weights ({type(e).__name__}: {e})") from None


class TextEncoder:
    """Prompts -> zero-padded text states ``(B, max_sequence_length, D)``, as Wan's pipelines compute them.

    Args:
        tokenizer: a transformers tokenizer (umT5's, or the byte-level one).
        encoder: a transformers ``T5EncoderModel`` / ``UMT5EncoderModel``.
        max_sequence_length: tokens per prompt (Wan: 512); longer prompts are cut.
        device: where encoding runs; `offload` moves the encoder to the CPU afterwards.
    """

    def __init__(self, tokenizer, encoder, *, max_sequence_length: int = MAX_SEQUENCE_LENGTH, device=None):
        self.tokenizer = tokenizer
        self.encoder = encoder.eval().requires_grad_(False)
        self.max_sequence_length = max_sequence_length
        self.device = torch.device(device) if device is not None else encoder.device
        self._cache: OrderedDict[str, torch.Tensor] = OrderedDict()

    @classmethod
    def from_pretrained(
        cls,
        tokenizer_folder: str | Path,
        encoder_folder: str | Path,
        *,
        device: torch.device | str = "cpu",
        dtype: torch.dtype | None = None,
        max_sequence_length: int | None = None,
    ) -> "TextEncoder":
        """Load ``tokenizer/`` and ``text_encoder/`` folders (diffusers layout); errors are `ModelError`.

        max_sequence_length: None takes the tokenizer's ``model_max_length`` when it is at most 512 (a
        model trained on shorter padded captions, such as the demo, records its length there: the DiT
        attends to the zero padding too, so inference must pad as training did), else Wan's 512.
        """
        tokenizer = _load_tokenizer(Path(tokenizer_folder))
        encoder = _load_encoder(Path(encoder_folder), dtype).to(device)
        if max_sequence_length is None:
            max_sequence_length = min(MAX_SEQUENCE_LENGTH, int(tokenizer.model_max_length))
        return cls(tokenizer, encoder, max_sequence_length=max_sequence_length, device=device)

    def save_tokenizer(self, folder: str | Path) -> Path:
        """Write ``tokenizer/`` with ``model_max_length`` = this encoder's text length (see `from_pretrained`)."""
        saved = self.tokenizer.model_max_length
        self.tokenizer.model_max_length = self.max_sequence_length
        try:
            self.tokenizer.save_pretrained(folder)
        finally:
            self.tokenizer.model_max_length = saved
        return Path(folder)

    @property
    def dim(self) -> int:
        """D, the width of the text states (umT5-XXL: 4096)."""
        return self.encoder.config.d_model

    @property
    def dtype(self) -> torch.dtype:
        return self.encoder.dtype

    def to(self, device: torch.device | str) -> "TextEncoder":
        self.device = torch.device(device)
        self.encoder.to(self.device)
        return self

    def offload(self) -> "TextEncoder":
        """Move the encoder's weights to the CPU (encoding still works, on the CPU; cached prompts stay)."""
        self.encoder.to("cpu")
        self.device = torch.device("cpu")
        return self

    def clear_cache(self) -> None:
        self._cache.clear()

    @torch.no_grad()
    def encode(self, prompts: str | list[str]) -> torch.Tensor:
        """Text states ``(B, max_sequence_length, D)`` in the encoder's dtype, on the CPU.

        Each prompt's states stop at its true token count (end-of-sequence token included) and are
        zero beyond, as in diffusers' ``WanPipeline._get_t5_prompt_embeds``.
        """
        prompts = [prompts] if isinstance(prompts, str) else list(prompts)
        unique = list(dict.fromkeys(prompts))
        found = {p: self._cache[p] for p in unique if p in self._cache}
        missing = [p for p in unique if p not in found]
        if missing:
            found.update(zip(missing, self._encode(missing)))
        for p in unique:
            self._remember(p, found[p])
        return torch.stack([found[p] for p in prompts])  # (B, N, D)

    def _encode(self, prompts: list[str]) -> torch.Tensor:
        tokens = tokenize(self.tokenizer, prompts, self.max_sequence_length)
        ids, mask = tokens["input_ids"].to(self.device), tokens["attention_mask"].to(self.device)
        return encode_states(self.encoder, ids, mask).cpu()  # (B, N, D)

    def _remember(self, prompt: str, states: torch.Tensor) -> None:
        self._cache[prompt] = states
        self._cache.move_to_end(prompt)
        while len(self._cache) > CACHE_SIZE:
            self._cache.popitem(last=False)
