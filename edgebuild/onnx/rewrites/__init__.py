"""Pure-ONNX graph rewrites: each takes a ModelProto, changes it in place and returns the number of changes.

They fix what published ONNX files often get wrong (initializers listed as graph inputs, wrongly
declared fixed dims, a whole graph wrapped in an `If` on an input the recipe fixes) and fuse
patterns ONNX Runtime's own optimizer leaves decomposed (hard-swish). None needs ONNX Runtime; `onnx`
is imported inside the functions. Import the module you use: a step kind's cache key covers exactly
the edgebuild modules it imports (engine/codedeps.py), so this file re-exports nothing.

| module | rewrite | what it does |
|---|---|---|
| `initializer_inputs` | `drop_initializer_inputs` | initializers also listed as graph inputs (old exporters) stop being inputs, so they are constants |
| `initializer_inputs` | `fix_inputs` | a graph input replaced by a constant initializer |
| `hardswish_fusion` | `fuse_hardswish` | x * Clip(x+3, 0, 6) / 6 and its variants (HardSigmoid, Relu6 as Min/Max, scale first) -> HardSwish |
| `prelu_as_max` | `prelu_to_max` | PRelu(x, s) with a constant s in [0, 1] -> Max(x, x * s) |
| `declared_shapes` | `override_input_dims` | declared input dims replaced; stale value_info dropped; output dims re-inferred (or left symbolic) |
| `if_inlining` | `inline_constant_if` | an If whose condition is constant (or folds to one) replaced by the nodes of the chosen branch |
| `gemm_as_matmul` | `gemm_to_matmul` | Gemm with a constant 2-D weight -> MatMul (+ Add), for quantizers that only take MatMul |

Shared by them: `scopes` (nested graphs, names defined and read, fresh names, renames, pruning) and
`folding` (constant values in scope, and conditions folded from small constant subgraphs).

onnxscript's optimizer and onnx-ir's passes claim some of these rewrites (If elimination in constant
folding, removing unused nodes, initializers removed from inputs, hard-swish fusion, Gemm to MatMul);
tests/test_rewrite_libraries.py shows, case by case, where they fall short of what edgebuild must keep.
"""
