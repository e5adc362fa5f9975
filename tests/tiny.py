"""Tiny randomly initialised models of every supported family, with a byte-level tokenizer."""

from __future__ import annotations

import hashlib

import torch
import transformers as T
from tokenizers import Tokenizer, decoders, models, pre_tokenizers

import probes

SPECIALS = ["<pad>", "<s>", "</s>", "<|user|>", "<|assistant|>"]
CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}</s>{% endfor %}{% if add_generation_prompt %}<|assistant|>{% endif %}"
)
VOCAB = 300  # 256 bytes + specials, rounded up


def byte_tokenizer(padding_side: str = "left") -> T.PreTrainedTokenizerFast:
    """A reversible byte-level tokenizer (one token per byte) that needs no download."""
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    vocab = {token: i for i, token in enumerate(SPECIALS)}
    for char in sorted(alphabet):
        vocab[char] = len(vocab)
    # A few merges so that "Yes"/"No" (and " Yes", "yes", ...) and " good"/" bad" are single tokens for
    # readout scoring; a lone " N" or " Y" stays two tokens.
    merges = [
        ("Y", "e"),
        ("Ye", "s"),
        ("Ġ", "Yes"),
        ("N", "o"),
        ("Ġ", "No"),
        ("y", "e"),
        ("ye", "s"),
        ("n", "o"),
        ("g", "o"),
        ("go", "o"),
        ("goo", "d"),
        ("Ġ", "good"),
        ("b", "a"),
        ("ba", "d"),
        ("Ġ", "bad"),
    ]
    for left, right in merges:
        vocab[left + right] = len(vocab)
    backend = Tokenizer(models.BPE(vocab=vocab, merges=merges))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    tokenizer = T.PreTrainedTokenizerFast(
        tokenizer_object=backend,
        pad_token="<pad>",
        bos_token="<s>",
        eos_token="</s>",
        additional_special_tokens=["<|user|>", "<|assistant|>"],
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    tokenizer.padding_side = padding_side
    return tokenizer


def config_for(family: str):
    small = dict(vocab_size=VOCAB, hidden_size=32, intermediate_size=48, num_hidden_layers=3, num_attention_heads=4)
    gqa = dict(small, num_key_value_heads=2)
    return {
        "llama": lambda: T.LlamaConfig(**gqa),
        "mistral": lambda: T.MistralConfig(**gqa),
        "qwen2": lambda: T.Qwen2Config(**gqa),
        "qwen3": lambda: T.Qwen3Config(**gqa, head_dim=8),
        "gemma2": lambda: T.Gemma2Config(**gqa, head_dim=8),
        "gemma3_text": lambda: T.Gemma3TextConfig(**gqa, head_dim=8),
        "gpt2": lambda: T.GPT2Config(vocab_size=VOCAB, n_embd=32, n_layer=3, n_head=4, n_positions=256, bos_token_id=1, eos_token_id=2),
        "gpt_neox": lambda: T.GPTNeoXConfig(**small),
    }[family]()


FAMILIES = ["llama", "mistral", "qwen2", "qwen3", "gemma2", "gemma3_text", "gpt2", "gpt_neox"]


def tiny_model(family: str = "llama", padding_side: str = "left", seed: int = 0):
    """An nnsight-wrapped tiny random model with the byte tokenizer."""
    torch.manual_seed(seed)
    model = T.AutoModelForCausalLM.from_config(config_for(family), attn_implementation="eager")
    model.eval()
    # Larger random weights than the init default, so sublayer outputs differ clearly.
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.ndim == 2:
                parameter.normal_(0, 0.2)
    wrapped = probes.wrap(model, byte_tokenizer())
    wrapped.tokenizer.padding_side = padding_side  # wrap() sets left; tests choose
    return wrapped


def checksum(model) -> str:
    """A hash of every base weight and buffer (to prove nothing changed them)."""
    digest = hashlib.sha256()
    for name, tensor in sorted(probes.sublayers.unwrap(model).state_dict().items()):
        digest.update(name.encode() + tensor.detach().cpu().numpy().tobytes())
    return digest.hexdigest()


def saved_folder(model, folder) -> str:
    """Write ``model`` and its tokenizer to ``folder`` (a local model path, as a user would pass one)."""
    probes.sublayers.unwrap(model).save_pretrained(folder)
    model.tokenizer.save_pretrained(folder)
    return str(folder)


def tiny_sweep_args(folder, out, method: str = "mean_diff", *extra: str) -> list[str]:
    """`steerscope sweep` on a saved tiny model: 3 layers of resid, 8 pairs, 4 items, the top (layer, kind) + a profile."""
    options = ["--layers", "0:3", "--kinds", "resid", "--methods", method, "--pairs", "8", "--items", "4", "--top-k", "1"]
    return ["sweep", "--model", str(folder), *options, "--out", str(out), *extra]
