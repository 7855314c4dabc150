"""Checks that a `.tflite` model is fully integer."""

import numpy as np
from ai_edge_litert.interpreter import Interpreter

INTEGER_TYPES = (np.int8, np.int32)


class NotFullyIntegerError(ValueError):
    """The model has float tensors or float I/O; `offenders` lists them."""

    def __init__(self, offenders):
        self.offenders = offenders
        super().__init__(
            "The model is not fully int8: "
            + "; ".join(offenders[:20])
            + (
                f" (and {len(offenders) - 20} more)"
                if len(offenders) > 20
                else ""
            )
        )


def integer_report(model_content):
    """Returns offending ops and tensors: everything not int8/int32.

    Input and output must be int8. A tensor with an ``int32`` type is
    allowed (biases, shapes).
    """
    interpreter = Interpreter(model_content=model_content)
    offenders = []
    for detail in (
        interpreter.get_input_details() + interpreter.get_output_details()
    ):
        if detail["dtype"] != np.int8:
            offenders.append(
                f"I/O tensor {detail['name']!r} is {np.dtype(detail['dtype']).name}"
            )
    tensors = {t["index"]: t for t in interpreter.get_tensor_details()}
    for (
        op
    ) in interpreter._get_ops_details():  # the only op-level view LiteRT offers
        for index in list(op["inputs"]) + list(op["outputs"]):
            if index < 0 or index not in tensors:
                continue
            dtype = np.dtype(tensors[index]["dtype"])
            if dtype.type not in INTEGER_TYPES:
                offenders.append(
                    f"op {op['op_name']} (#{op['index']}) uses "
                    f"{dtype.name} tensor {tensors[index]['name']!r}"
                )
                break
    return offenders


def check_full_integer(model_content):
    """Raises `NotFullyIntegerError` listing offenders, else returns None."""
    offenders = integer_report(model_content)
    if offenders:
        raise NotFullyIntegerError(offenders)
