"""Imported by the workers' fork server first, as a preload, and nowhere else: it points the server's
standard output and error at /dev/null.

The server inherits edgebuild's stdout and stderr, and it outlives the edgebuild process by the time its
interpreter takes to tear down numpy, onnx and onnxruntime (~0.1 s). Whoever reads edgebuild's output
through a pipe (CI, `subprocess.run(capture_output=True)`) would wait that long for end-of-file after
edgebuild has exited. The server prints nothing, and each worker sends its output to its step's log.
"""

import os

_null = os.open(os.devnull, os.O_RDWR)
os.dup2(_null, 1)
os.dup2(_null, 2)
os.close(_null)
