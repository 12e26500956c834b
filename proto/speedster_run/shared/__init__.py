"""What the orchestrator and the runners both speak, beside the generated protocol code: the tensor codec, file
hashing and safe paths, failure categories and their gRPC statuses, the contract's data types, device names,
transport security, timing, and torch artifact I/O (archive checks, loading, ONNX export).

Nothing here imports a backend library at import time, nor anything of `orchestrator/` or `runners/`.
"""
