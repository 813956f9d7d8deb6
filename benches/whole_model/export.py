#!/usr/bin/env python3
"""Export three small transformer stacks to ONNX for the whole-model benchmark.

Models (4 layers, hidden 768, 12 heads, FFN 3072 each):

  bert_postln   BERT-like post-LN encoder:  x = LN(x + Attn(x)); x = LN(x + FFN(x))
                nn.LayerNorm(eps=1e-12), exact (erf) GELU.
  gpt2_preln    GPT-2-like pre-LN stack:    x = x + Attn(LN(x)); x = x + FFN(LN(x)),
                plus a final LN; nn.LayerNorm(eps=1e-5), tanh GELU, no causal mask.
  bert_adanorm  bert_postln with every LayerNorm replaced by AdaNorm
  bert_paperform  the same with AdaNorm written as the paper writes it (PaperFormAdaNorm)
                (Xu et al. 2019, "Understanding and Improving Layer Normalization").

Every model is exported with the legacy TorchScript exporter (dynamo=False) at
opset 17, with the static input "x" of shape [8, 128, 768] float32 and the
output "y".  At opset 17 that exporter would write nn.LayerNorm as one fused
LayerNormalization node; we want the decomposed form it writes for opsets
below 17 (ReduceMean, Sub, Pow, ReduceMean, Add, Sqrt, Div, Mul, Add), which is
what the rewriter has to recognise in real-world exports, so by default we
register the exporter's own opset-9 layer_norm symbolic for opset 17.  Pass
--native-layernorm to keep the fused LayerNormalization nodes instead.

Output directory (default target/whole-models):
  <name>.onnx       the exported model
  <name>.ref.npz    PyTorch's output for inputs.npz, key "y"
  inputs.npz        one seeded random input, key "x" (shared by all models)

Weights and the input are drawn from fixed seeds, so reruns give the same
files.  Needs torch, onnx and numpy (CPU is enough).
"""

import argparse
import math
import os

import numpy as np
import torch
import torch.nn as nn

BATCH, SEQ, HIDDEN, HEADS, FFN, LAYERS = 8, 128, 768, 12, 3072, 4
OPSET = 17
INPUT_SEED = 1234


class SelfAttention(nn.Module):
    """Plain multi-head softmax self-attention with separate q/k/v/out Linears."""

    def __init__(self, hidden, heads):
        super().__init__()
        self.heads = heads
        self.head_dim = hidden // heads
        self.q = nn.Linear(hidden, hidden)
        self.k = nn.Linear(hidden, hidden)
        self.v = nn.Linear(hidden, hidden)
        self.out = nn.Linear(hidden, hidden)

    def _split(self, t, b, s):
        # [B, S, H*D] -> [B, H, S, D]
        return t.view(b, s, self.heads, self.head_dim).transpose(1, 2)

    def forward(self, x):
        b, s, hidden = x.shape
        q = self._split(self.q(x), b, s)
        k = self._split(self.k(x), b, s)
        v = self._split(self.v(x), b, s)
        scores = torch.matmul(q, k.transpose(-2, -1)) / math.sqrt(self.head_dim)
        ctx = torch.matmul(torch.softmax(scores, dim=-1), v)
        # [B, H, S, D] -> [B, S, H*D]
        ctx = ctx.transpose(1, 2).reshape(b, s, hidden)
        return self.out(ctx)


class FeedForward(nn.Module):
    def __init__(self, hidden, ffn, gelu_approximate):
        super().__init__()
        self.up = nn.Linear(hidden, ffn)
        self.act = nn.GELU(approximate=gelu_approximate)
        self.down = nn.Linear(ffn, hidden)

    def forward(self, x):
        return self.down(self.act(self.up(x)))


class AdaNorm(nn.Module):
    """AdaNorm over the last dimension (no learned gain or bias), written as the paper's
    reference code writes it (lancopku/AdaNorm, fairseq/modules/layer_norm.py, mode 'adanorm'):
    the unbiased std, eps added to it, and the factor k * y detached, so that in eval mode and in
    the export it is plain arithmetic: z = C * (x - x * k*y) / (std + eps) = C * (1 - k*y) * y.
    (The paper's own formula `C * (1 - k*y) * y`, written as such: `PaperFormAdaNorm`.)
    """

    def __init__(self, k=0.1, scale=1.0, eps=1e-5):
        super().__init__()
        self.k = k
        self.scale = scale
        self.eps = eps

    def forward(self, x):
        mean = x.mean(-1, keepdim=True)
        std = x.std(-1, keepdim=True)  # unbiased (divides by N - 1)
        x = x - mean
        mean = x.mean(-1, keepdim=True)
        factor = (self.k * (x - mean) / (std + self.eps)).detach()
        return (x - x * factor) / (std + self.eps) * self.scale


class PaperFormAdaNorm(nn.Module):
    """AdaNorm as the paper writes it, not as its reference code does: a LayerNorm without
    affine (biased variance, eps under the root), then z = C * (1 - k * y.detach()) * y."""

    def __init__(self, k=0.1, scale=2.0, eps=1e-5):
        super().__init__()
        self.k = k
        self.scale = scale
        self.eps = eps

    def forward(self, x):
        m = x.mean(-1, keepdim=True)
        v = ((x - m) ** 2).mean(-1, keepdim=True)
        y = (x - m) / torch.sqrt(v + self.eps)
        return self.scale * (1 - self.k * y.detach()) * y


class PostLNLayer(nn.Module):
    """BERT layer: residual add first, normalise after."""

    def __init__(self, make_norm, gelu_approximate):
        super().__init__()
        self.attn = SelfAttention(HIDDEN, HEADS)
        self.norm1 = make_norm()
        self.ffn = FeedForward(HIDDEN, FFN, gelu_approximate)
        self.norm2 = make_norm()

    def forward(self, x):
        x = self.norm1(x + self.attn(x))
        return self.norm2(x + self.ffn(x))


class PreLNLayer(nn.Module):
    """GPT-2 layer: normalise the branch input, residual add after."""

    def __init__(self, make_norm, gelu_approximate):
        super().__init__()
        self.norm1 = make_norm()
        self.attn = SelfAttention(HIDDEN, HEADS)
        self.norm2 = make_norm()
        self.ffn = FeedForward(HIDDEN, FFN, gelu_approximate)

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        return x + self.ffn(self.norm2(x))


class Stack(nn.Module):
    def __init__(self, layers, final_norm=None):
        super().__init__()
        self.layers = nn.ModuleList(layers)
        self.final_norm = final_norm if final_norm is not None else nn.Identity()

    def forward(self, x):
        for layer in self.layers:
            x = layer(x)
        return self.final_norm(x)


def bert_postln():
    norm = lambda: nn.LayerNorm(HIDDEN, eps=1e-12)
    return Stack([PostLNLayer(norm, "none") for _ in range(LAYERS)])


def gpt2_preln():
    norm = lambda: nn.LayerNorm(HIDDEN, eps=1e-5)
    return Stack([PreLNLayer(norm, "tanh") for _ in range(LAYERS)], final_norm=norm())


def bert_adanorm():
    norm = lambda: AdaNorm(k=0.1, scale=1.0, eps=1e-5)
    return Stack([PostLNLayer(norm, "none") for _ in range(LAYERS)])


def bert_paperform():
    norm = lambda: PaperFormAdaNorm(k=0.1, scale=2.0, eps=1e-5)
    return Stack([PostLNLayer(norm, "none") for _ in range(LAYERS)])


# name -> (constructor, weight seed)
MODELS = {
    "bert_postln": (bert_postln, 1),
    "gpt2_preln": (gpt2_preln, 2),
    "bert_adanorm": (bert_adanorm, 3),
    "bert_paperform": (bert_paperform, 4),
}


def build(make, seed):
    """Build a model from a fixed seed, in eval mode.

    Linears keep PyTorch's default (seeded) random init.  LayerNorm gains and
    biases are perturbed away from 1 and 0 so their Mul/Add nodes carry real
    values instead of identities.
    """
    torch.manual_seed(seed)
    model = make()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.LayerNorm):
                m.weight.copy_(1.0 + 0.1 * torch.randn_like(m.weight))
                m.bias.copy_(0.1 * torch.randn_like(m.bias))
    return model.eval()


def use_decomposed_layernorm():
    """Make the opset-17 export write aten::layer_norm with the exporter's own
    opset-9 decomposition instead of a LayerNormalization node."""
    try:  # torch >= 2.9 moved the TorchScript exporter under _internal
        from torch.onnx._internal.torchscript_exporter import symbolic_opset9
    except ImportError:
        from torch.onnx import symbolic_opset9
    torch.onnx.register_custom_op_symbolic("aten::layer_norm", symbolic_opset9.layer_norm, OPSET)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("out_dir", nargs="?", default="target/whole-models")
    parser.add_argument(
        "--native-layernorm",
        action="store_true",
        help="keep opset 17's fused LayerNormalization nodes",
    )
    parser.add_argument("--only", choices=sorted(MODELS), action="append", help="export only these")
    args = parser.parse_args()

    os.makedirs(args.out_dir, exist_ok=True)
    if not args.native_layernorm:
        use_decomposed_layernorm()

    # One input shared by every model.
    gen = torch.Generator().manual_seed(INPUT_SEED)
    x = torch.randn(BATCH, SEQ, HIDDEN, generator=gen, dtype=torch.float32)
    np.savez(os.path.join(args.out_dir, "inputs.npz"), x=x.numpy())

    for name in args.only or MODELS:
        make, seed = MODELS[name]
        model = build(make, seed)
        with torch.no_grad():
            y = model(x)
        np.savez(os.path.join(args.out_dir, f"{name}.ref.npz"), y=y.numpy())

        path = os.path.join(args.out_dir, f"{name}.onnx")
        torch.onnx.export(
            model,
            (x,),
            path,
            dynamo=False,  # the legacy TorchScript exporter
            opset_version=OPSET,
            input_names=["x"],
            output_names=["y"],
            do_constant_folding=True,
        )
        print(f"{path}: {os.path.getsize(path) / 2**20:.1f} MiB")


if __name__ == "__main__":
    main()
