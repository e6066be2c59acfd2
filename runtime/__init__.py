"""The serving process: model repository, onnxruntime sessions, the
transport-neutral data plane, and the gRPC/HTTP adapters over it."""
