"""Checkpoints: one directory per trained model, read and written only by this package. No pickle anywhere.

    format.py    the file names and the tensor names inside them
    manifest.py  `config.json`: the model config, the encoder's identity, training record, metrics, calibration
    files.py     the one safetensors reader, with the one message for a missing or corrupt file
    check.py     `check_checkpoint`: refuse a bad directory before anything serves it (torch-free)
    digest.py    what identifies a checkpoint: every file (storage's fetch cache) or only its encoder (ONNX exports)
    load.py      torch: save a `MultiTaskModel`, load its encoder, heads or the whole model

Every module but load.py is torch-free, so that graph.py, storage and the head and ingress replicas never import
torch (about 450 MB per process).
"""
