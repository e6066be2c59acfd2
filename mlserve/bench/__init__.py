"""`mlserve bench`: a load generator for any Open Inference Protocol server.

    options       flags -> BenchSettings (what `mlserve` imports at start: light)
    settings      the frozen settings and the pure flag-text parsers
    model_metadata  the model's inputs from the server (gRPC or HTTP)
    input_data    random or file tensors, checked against the metadata
    wire          the request encoded once (protobuf bytes or a whole HTTP request)
    probe         one request before the load, for one-line setup errors
    pool          the parent's side of the worker processes
    worker        a worker process: an event loop and one client
    http_load     minimal keep-alive HTTP/1.1 client
    grpc_load     grpc.aio client on raw-bytes methods (unary and streaming)
    recorder      per-process counts and latencies of one step
    summary       the merged figures of one level (exact percentiles)
    progress      the stderr progress display
    report        the stdout table and the JSON document
    runner        wires them together: `run_bench(settings)`

Nothing is imported here so that `mlserve serve` does not pay for it."""
