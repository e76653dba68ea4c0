"""Offline batch inference: `multitask classify INPUT OUTPUT` on Ray Data (`pipeline.py`), with the per-batch logic
Ray-free (`rows.py`) and the input and output files checked before any work starts (`files.py`)."""
