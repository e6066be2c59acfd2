SimpleInput = tuple[str, str, tuple[int, ...], memoryview]
SimpleRequest = tuple[str, str, str, list[SimpleInput], list[str]]

def decode_simple_infer(data: bytes) -> SimpleRequest | None: ...
