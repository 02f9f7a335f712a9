"""What the client checks in an onnx graph before onnxruntime sees a byte of it.

An ONNX tensor may keep its data in another file (`data_location = EXTERNAL`, `external_data`
naming a `location`, an offset and a length). onnxruntime, given a model as bytes, resolves that
location against the process's working directory, so a graph naming `.env` returns the server's
secrets through `predict()`; its special location `*/_ORT_MEM_ADDR_/*` reads process memory. A
release's graph carries every weight inside the file (pipeline/onnx_export.py writes it so), so
any tensor that points elsewhere is refused, wherever it sits: a graph's initializers and sparse
initializers, a node attribute's tensor(s), sparse tensor(s) and subgraph(s) (If, Loop, Scan
bodies), the functions and training graphs of the model, at any depth. An `EPContext` node (a
compiled blob an execution provider may read from a file) is refused as well.

The check walks the protobuf wire format itself (field numbers from onnx.proto3), so it holds on
a server that has onnxruntime and numpy only (the `[onnx]` extra installs no `onnx` package). It
is conservative: any external-data field, any non-default `data_location`, wire types ONNX never
uses (groups) and anything that does not parse are refused; it never decodes the weights, and it
bounds its own work (nesting depth, number of fields).
"""

from __future__ import annotations

from pipeline.errors import IntegrityError

# Message types, and for each, the fields that hold messages to walk (field number -> type).
_MODEL, _GRAPH, _NODE, _ATTRIBUTE, _TENSOR, _SPARSE, _TRAINING, _FUNCTION = range(8)
_NAMES = ("model", "graph", "node", "attribute", "tensor", "sparse tensor", "training", "function")
_CHILDREN: dict[int, dict[int, int]] = {
    # ModelProto: graph, training_info, functions
    _MODEL: {7: _GRAPH, 20: _TRAINING, 25: _FUNCTION},
    # GraphProto: node, initializer, sparse_initializer
    _GRAPH: {1: _NODE, 5: _TENSOR, 15: _SPARSE},
    # NodeProto: attribute
    _NODE: {5: _ATTRIBUTE},
    # AttributeProto: t, g, tensors, graphs, sparse_tensor, sparse_tensors
    _ATTRIBUTE: {5: _TENSOR, 6: _GRAPH, 10: _TENSOR, 11: _GRAPH, 22: _SPARSE, 23: _SPARSE},
    _TENSOR: {},
    # SparseTensorProto: values, indices
    _SPARSE: {1: _TENSOR, 2: _TENSOR},
    # TrainingInfoProto: initialization, algorithm
    _TRAINING: {1: _GRAPH, 2: _GRAPH},
    # FunctionProto: node, attribute_proto
    _FUNCTION: {7: _NODE, 11: _ATTRIBUTE},
}
_TENSOR_NAME, _TENSOR_EXTERNAL_DATA, _TENSOR_DATA_LOCATION = 8, 13, 14
_NODE_OP_TYPE = 4
_REFUSED_OPS = frozenset({b"EPContext"})

# A release's graph nests 5 messages deep (model, graph, node, attribute, tensor) and holds a
# few hundred fields (measured: the demo's 22.9 MB graph 671, the tiny test release's 577; the
# weights are a few fields of raw bytes, skipped unread, and checking the demo's takes 0.6 ms).
# The bounds are far above that; at the field bound, a hostile file costs about 0.1 s of CPU.
MAX_DEPTH = 64
MAX_FIELDS = 200_000


class _Malformed(Exception):
    pass


def _varint(buf: memoryview, i: int, end: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if i >= end:
            raise _Malformed("a number runs past the end of its message")
        b = buf[i]
        i += 1
        result |= (b & 0x7F) << shift
        if b < 0x80:
            return result, i
        shift += 7
        if shift > 63:
            raise _Malformed("a number longer than 10 bytes")


def _text(raw: bytes) -> str:
    return raw[:80].decode("utf-8", "replace")


def external_reference(data: bytes) -> str | None:
    """Why this ONNX model may read anything outside its own bytes, or None when it cannot.

    The answer names the tensor (or node) and the location it points at, as the user will see
    it in the refusal. `None` means: no tensor anywhere in the model has external data, no
    `data_location` other than the default, no EPContext node, and the bytes parse as protobuf
    within the bounds above.
    """
    buf = memoryview(data)
    # (message type, start, end, depth, path for the message)
    stack: list[tuple[int, int, int, int, str]] = [(_MODEL, 0, len(buf), 0, "model")]
    fields = 0
    try:
        while stack:
            kind, i, end, depth, where = stack.pop()
            if depth > MAX_DEPTH:
                return f"{where}: nested more than {MAX_DEPTH} messages deep"
            children = _CHILDREN[kind]
            tensor_name = ""
            pending: str | None = None  # a tensor's reason, reported with its name
            while i < end:
                fields += 1
                if fields > MAX_FIELDS:
                    return f"more than {MAX_FIELDS:,} protobuf fields"
                key, i = _varint(buf, i, end)
                number, wire = key >> 3, key & 7
                if number == 0:
                    raise _Malformed("field number 0")
                if wire == 0:
                    value, i = _varint(buf, i, end)
                    if kind == _TENSOR and number == _TENSOR_DATA_LOCATION and value != 0:
                        pending = pending or f"data_location {value} (EXTERNAL is 1)"
                    continue
                if wire == 1 or wire == 5:
                    i += 8 if wire == 1 else 4
                    if i > end:
                        raise _Malformed("a fixed-width number runs past the end of its message")
                    continue
                if wire != 2:
                    raise _Malformed(f"wire type {wire} (ONNX uses none)")
                length, i = _varint(buf, i, end)
                start, i = i, i + length
                if i > end:
                    raise _Malformed("a field runs past the end of its message")
                if kind == _TENSOR:
                    if number == _TENSOR_NAME:
                        tensor_name = _text(bytes(buf[start : min(i, start + 80)]))
                    elif number == _TENSOR_EXTERNAL_DATA:
                        pending = pending or _external_entry(bytes(buf[start:i]))
                    elif number == _TENSOR_DATA_LOCATION:
                        pending = pending or "data_location in an unexpected encoding"
                    continue
                if kind == _NODE and number == _NODE_OP_TYPE:
                    op = bytes(buf[start:i]) if length <= 64 else b""
                    if op in _REFUSED_OPS:
                        return f"{where}: an {_text(op)} node (its blob may live in a file)"
                    continue
                child = children.get(number)
                if child is not None:
                    stack.append((child, start, i, depth + 1, f"{where} > {_NAMES[child]}"))
            if pending is not None:
                return f"{where} {tensor_name!r}: external data, {pending}"
    except _Malformed as e:
        return f"not a readable ONNX model ({e})"
    return None


def _external_entry(entry: bytes) -> str:
    """`location '.env'` for a StringStringEntryProto {key = 1, value = 2}, best effort."""
    buf, i, key, value = memoryview(entry), 0, b"", b""
    try:
        while i < len(buf):
            k, i = _varint(buf, i, len(buf))
            if k & 7 != 2:
                break
            n, i = _varint(buf, i, len(buf))
            if k >> 3 == 1:
                key = bytes(buf[i : i + n])
            elif k >> 3 == 2:
                value = bytes(buf[i : i + n])
            i += n
    except _Malformed:
        pass
    return f"{_text(key) or 'an entry'} {_text(value)!r}"


def check_self_contained(data: bytes, source: str) -> None:
    """Refuse an ONNX model that could make onnxruntime read a file or memory outside it.

    Raises:
        IntegrityError: names the tensor or node, and where it points (exit 5).
    """
    why = external_reference(data)
    if why is not None:
        raise IntegrityError(
            f"{source}: refusing to load this graph: {why}. A fastai-release graph keeps every "
            "weight inside the file; this one was not written by `release build` (a hostile or "
            "broken source). Fetch the release from a source you trust, or configure trust "
            "(a public key, certificate or pin) so only releases you published load"
        )
