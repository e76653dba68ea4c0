"""The inference core: texts -> embeddings, the same way for serving, evaluation, prediction and training.

    base.py            `EncoderRuntime`, what every runtime is, and the batched forward they share (`encode`)
    passes.py          length-sorted forward passes under a text and a token budget
    text_window.py     tokenizing only the part of a long text the encoder reads
    torch_runtime.py   the encoder on torch, any device and dtype (Ray-free)
    onnx_runtime.py    the encoder exported to ONNX, on onnxruntime (CPU; torch-free)
    onnx_cache.py      where exports are kept, and making one on first use (torch-free)
    onnx_export.py     the export itself (torch; runs in a subprocess)
    select.py          `select_runtime`: the one choice of runtime, device and dtype

Only torch_runtime.py and onnx_export.py import torch.
"""
