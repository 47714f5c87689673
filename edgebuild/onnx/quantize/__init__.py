"""What the quantize steps share, one module per concern. Nothing is re-exported here: a step imports the
modules it uses by name, so its cache key (edgebuild/engine/codedeps.py) covers those modules only.

- preprocess: Constant nodes to initializers, constant folding, shape inference, node names, the opset
  per-channel weights need (also used by fp16 and int4);
- layers: the ops that are layers with weights, producer/consumer maps, which nodes were quantized (or why none);
- target_types: the integer types and thread count `auto` takes from the target's CPU;
- running: feeds, stacked outputs and latency of a model run on dataset samples;
- calibration: quantize-static's activation ranges, once per method, CHUNK samples at a time;
- mixed_ranges: nodes that join tensors of very different ranges (kept in float by quantize-static);
- sensitivity: the error each node adds, and the order the search keeps nodes in float;
- search: the accuracy-aware search over quantized candidates, scored simulated and on fused kernels;
- speed: when a quantized model counts as faster than FP32;
- accuracy_param: the `accuracy:` parameter at plan time (schema, metric file, checks).
"""
