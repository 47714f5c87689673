"""Model-level ONNX code used inside steps: the graph reader and saver, the runtime, rewrites, quantization."""
