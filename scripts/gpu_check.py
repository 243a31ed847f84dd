"""Check the GPU path of the foundations code on a CUDA machine (run by hand; CI has no GPU).

    python scripts/gpu_check.py            # writes JSON with the results to stdout

It checks that get_device("auto") picks CUDA, that the from-scratch attention matches PyTorch on
the GPU (TF32 off, so the tolerance stays 1e-5), and that the tiny causal LM learns the copy task on
the GPU, with and without bf16 autocast.
"""

from __future__ import annotations

import json
import time

import torch
import torch.nn.functional as F
from torch import nn

from mmhelpers import attention as A
from mmhelpers.toy import CopyTask, TinyCausalLM, TinyLMConfig, copy_accuracy
from mmhelpers.utils import get_device, set_seed


def main() -> None:
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    dev = get_device("auto")
    out: dict[str, object] = {"device": str(dev), "name": torch.cuda.get_device_name() if dev.type == "cuda" else None}
    set_seed(0)
    q, k, v = (torch.randn(4, 8, 64, 32, device=dev) for _ in range(3))
    out["sdpa_causal_err"] = (A.scaled_dot_product_attention(q, k, v, is_causal=True)[0]
                              - F.scaled_dot_product_attention(q, k, v, is_causal=True)).abs().max().item()  # fmt: skip
    x, mem = torch.randn(4, 16, 64, device=dev), torch.randn(4, 10, 64, device=dev)
    ref = nn.TransformerDecoderLayer(64, 4, 256, dropout=0.0, batch_first=True).to(dev).eval()
    ours = A.DecoderBlock(64, 4, 256).to(dev).load_torch_(ref).eval()
    mask = nn.Transformer.generate_square_subsequent_mask(16, device=dev)
    with torch.no_grad():
        out["decoder_err"] = (ours(x, mem) - ref(x, mem, tgt_mask=mask, tgt_is_causal=True)).abs().max().item()
    task = CopyTask(n=8)
    for amp in (False, True):
        set_seed(0)
        model = TinyCausalLM(TinyLMConfig(vocab_size=task.vocab_size)).to(dev)
        opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.01)
        g = torch.Generator().manual_seed(0)
        start = time.perf_counter()
        for _ in range(1500):
            xb, yb = (t.to(dev) for t in task.batch(64, g))
            with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=amp):
                loss = model.loss(xb, yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        out[f"copy_accuracy_{'bf16' if amp else 'fp32'}"] = copy_accuracy(model.cpu(), task)
        out[f"train_s_{'bf16' if amp else 'fp32'}"] = round(time.perf_counter() - start, 1)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
