"""What a `.tflite` flatbuffer holds, read without running it.

`TFLiteGraph(content)` parses the main subgraph with LiteRT's own schema
module (`ai_edge_litert.schema_py_generated`) and answers the questions a
device asks before anything runs:

- `op_inventory()`: each builtin op and version with its count;
- `flags()`: what stops or burdens a microcontroller runtime: ops that
  compute shapes at run time (`SHAPE` and everything fed by it, e.g. the
  `SHAPE -> STRIDED_SLICE -> PACK -> RESHAPE` of a `Flatten` with a dynamic
  batch), inputs with a dynamic dimension, weights stored outside the
  flatbuffer (the `offset`/`size` fields of `Buffer`, which LiteRT follows
  and TFLM does not), float tensors;
- `activation_plan()`: bytes of the non-constant tensors alive at each op,
  a tensor living from the op that writes it to the last op that reads it
  (model inputs from the start, outputs to the end). Its peak is the least
  any memory planner that keeps every tensor whole can reach; TFLM's greedy
  plan (the arena head) is at least that, plus kernels' scratch buffers.
"""

from dataclasses import dataclass

import numpy as np
from ai_edge_litert import schema_py_generated as schema

_OP_NAMES = {
    code: name
    for name, code in vars(schema.BuiltinOperator).items()
    if not name.startswith("_")
}
_TYPE_NAMES = {
    code: name.lower()
    for name, code in vars(schema.TensorType).items()
    if not name.startswith("_")
}
_TYPE_BITS = {
    "float32": 32,
    "float16": 16,
    "bfloat16": 16,
    "float64": 64,
    "int32": 32,
    "uint32": 32,
    "int64": 64,
    "uint64": 64,
    "int16": 16,
    "uint16": 16,
    "int8": 8,
    "uint8": 8,
    "bool": 8,
    "int4": 4,
    "int2": 2,
    "complex64": 64,
    "complex128": 128,
}
INTEGER_TYPES = {"int8", "int16", "int32", "uint8", "int4", "bool"}


@dataclass(frozen=True)
class Tensor:
    index: int
    name: str
    dtype: str
    shape: tuple
    signature: tuple  # shape with -1 for dynamic dimensions
    constant: bool  # has data in (or beside) the file

    @property
    def nbytes(self):
        count = int(np.prod(self.shape)) if self.shape else 1
        return count * _TYPE_BITS.get(self.dtype, 32) // 8


_PADDINGS = {v: k for k, v in vars(schema.Padding).items() if k.isupper()}
_ACTIVATIONS = {
    v: k for k, v in vars(schema.ActivationFunctionType).items() if k.isupper()
}
_CONV_OPTIONS = {
    "CONV_2D": schema.Conv2DOptions,
    "DEPTHWISE_CONV_2D": schema.DepthwiseConv2DOptions,
}


@dataclass(frozen=True)
class Op:
    index: int
    name: str  # builtin name, e.g. CONV_2D (or the custom code)
    version: int
    inputs: tuple  # tensor indices, -1 for an omitted optional input
    outputs: tuple
    # CONV_2D / DEPTHWISE_CONV_2D: padding, (stride h, w), fused activation
    options: tuple = ()


def _conv_options(op, name):
    """`(padding, (stride_h, stride_w), activation)` of a conv op, else ()."""
    kind = _CONV_OPTIONS.get(name)
    table = op.BuiltinOptions()
    if kind is None or table is None:
        return ()
    options = kind()
    options.Init(table.Bytes, table.Pos)
    return (
        _PADDINGS.get(options.Padding(), options.Padding()),
        (options.StrideH(), options.StrideW()),
        _ACTIVATIONS.get(
            options.FusedActivationFunction(), options.FusedActivationFunction()
        ),
    )


class TFLiteGraph:
    """The main subgraph of a `.tflite` file (see the module docstring)."""

    def __init__(self, content):
        content = bytes(content)
        if len(content) < 8 or content[4:8] != b"TFL3":
            raise ValueError("Not a .tflite flatbuffer (no TFL3 identifier).")
        self.size_bytes = len(content)
        model = schema.Model.GetRootAs(content, 0)
        graph = model.Subgraphs(0)
        self.buffers = [model.Buffers(i) for i in range(model.BuffersLength())]
        self.tensors = [
            self._tensor(graph.Tensors(i), i)
            for i in range(graph.TensorsLength())
        ]
        codes = [
            model.OperatorCodes(i) for i in range(model.OperatorCodesLength())
        ]
        self.ops = []
        for i in range(graph.OperatorsLength()):
            op = graph.Operators(i)
            code = codes[op.OpcodeIndex()]
            builtin = max(code.BuiltinCode(), code.DeprecatedBuiltinCode())
            name = _OP_NAMES.get(builtin, f"BUILTIN_{builtin}")
            if name == "CUSTOM":
                name = f"CUSTOM:{(code.CustomCode() or b'?').decode()}"
            self.ops.append(
                Op(
                    i,
                    name,
                    code.Version(),
                    tuple(int(t) for t in op.InputsAsNumpy()),
                    tuple(int(t) for t in op.OutputsAsNumpy()),
                    _conv_options(op, name),
                )
            )
        self.inputs = tuple(int(t) for t in graph.InputsAsNumpy())
        self.outputs = tuple(int(t) for t in graph.OutputsAsNumpy())

    def _tensor(self, tensor, index):
        buffer = self.buffers[tensor.Buffer()]
        constant = buffer.DataLength() > 0 or buffer.Size() > 0
        shape = (
            tuple(int(d) for d in tensor.ShapeAsNumpy())
            if (tensor.ShapeLength())
            else ()
        )
        signature = (
            tuple(int(d) for d in tensor.ShapeSignatureAsNumpy())
            if tensor.ShapeSignatureLength()
            else shape
        )
        return Tensor(
            index,
            (tensor.Name() or b"").decode(),
            _TYPE_NAMES.get(tensor.Type(), f"type{tensor.Type()}"),
            shape,
            signature,
            constant,
        )

    def op_inventory(self):
        """`[{"op", "version", "count"}]` in order of first use."""
        counts = {}
        for op in self.ops:
            counts[(op.name, op.version)] = counts.get((op.name, op.version), 0)
            counts[(op.name, op.version)] += 1
        return [
            {"op": name, "version": version, "count": count}
            for (name, version), count in counts.items()
        ]

    def weights_bytes(self):
        """Bytes of constant data: in the flatbuffer and outside it."""
        inside = sum(b.DataLength() for b in self.buffers)
        outside = sum(b.Size() for b in self.buffers if b.Offset() > 1)
        return inside, outside

    def shape_ops(self):
        """Ops that compute shapes at run time: `SHAPE` and every op whose
        non-constant inputs all derive from one, plus the ops that take such
        a shape as an argument (a `RESHAPE`'s second input)."""
        derived, found = set(), []
        for op in self.ops:
            dynamic = [
                t for t in op.inputs if t >= 0 and not self.tensors[t].constant
            ]
            if op.name == "SHAPE" or (
                dynamic and all(t in derived for t in dynamic)
            ):
                derived.update(op.outputs)
                found.append(op)
            elif any(t in derived for t in dynamic):
                found.append(op)
        return found

    def flags(self):
        """`[{"kind", "message"}]`: what a device runtime should know."""
        return [
            {"kind": kind, "message": message}
            for kind, message in self._findings()
        ]

    def _findings(self):
        """`(kind, message)` of each property a device runtime should know."""
        shape_ops = self.shape_ops()
        if shape_ops:
            chain = " -> ".join(dict.fromkeys(op.name for op in shape_ops))
            yield (
                "dynamic_shape_ops",
                (
                    f"{len(shape_ops)} ops compute a shape at run time ({chain}), "
                    "typically a Flatten or Reshape under a dynamic batch: export "
                    "with --batch_size=1 to fold them"
                ),
            )
        for index in self.inputs:
            tensor = self.tensors[index]
            if -1 in tensor.signature:
                yield (
                    "dynamic_input",
                    (
                        f"input {tensor.name!r} has shape {list(tensor.signature)} "
                        "(-1: not fixed); devices run one fixed shape: export with "
                        "--batch_size=1"
                    ),
                )
        _, outside = self.weights_bytes()
        if outside:
            count = sum(1 for b in self.buffers if b.Offset() > 1)
            yield (
                "external_weights",
                (
                    f"{count} weight buffers ({outside:,} bytes) are stored "
                    "outside the flatbuffer (Buffer.offset/size): LiteRT reads "
                    "them, TFLM does not and computes with garbage"
                ),
            )
        floats = sorted(
            {
                t.dtype
                for t in self.tensors
                if t.dtype not in INTEGER_TYPES and not t.constant
            }
        )
        if floats:
            yield (
                "float_tensors",
                (
                    f"non-integer activations ({', '.join(floats)}): not a "
                    "full-integer model"
                ),
            )

    def activation_plan(self):
        """`{"per_op": [{"index", "op", "live_bytes", "output_bytes"}],
        "peak_bytes", "peak_op", "peak_tensors"}` (module docstring);
        `peak_tensors`: the tensors alive at the peak, largest first."""
        first, last = {t: -1 for t in self.inputs}, {}
        for op in self.ops:
            for t in op.outputs:
                first.setdefault(t, op.index)
            for t in op.inputs:
                if t >= 0:
                    last[t] = op.index
        for t in self.outputs:
            last[t] = len(self.ops)
        spans = {
            t: (first[t], last[t])
            for t in first
            if t in last and not self.tensors[t].constant
        }
        per_op, peak, peak_alive = [], None, []
        for op in self.ops:
            alive = [t for t, (a, b) in spans.items() if a <= op.index <= b]
            live = sum(self.tensors[t].nbytes for t in alive)
            if peak is None or live > peak["live_bytes"]:
                peak, peak_alive = (
                    {"index": op.index, "op": op.name, "live_bytes": live},
                    alive,
                )
            per_op.append(
                {
                    "index": op.index,
                    "op": op.name,
                    "live_bytes": live,
                    "output_bytes": sum(
                        self.tensors[t].nbytes for t in op.outputs
                    ),
                }
            )
        if peak is None:
            return {
                "per_op": [],
                "peak_bytes": 0,
                "peak_op": None,
                "peak_tensors": [],
            }
        return {
            "per_op": per_op,
            "peak_bytes": peak["live_bytes"],
            "peak_op": f"{peak['op']} #{peak['index']}",
            "peak_tensors": sorted(
                peak_alive, key=lambda t: -self.tensors[t].nbytes
            ),
        }

    def producer(self, tensor_index):
        """The op that writes `tensor_index`, or None (an input, a constant)."""
        for op in self.ops:
            if tensor_index in op.outputs:
                return op
        return None
