"""What TensorRT's ONNX parser imports, for each TensorRT version edge-asr supports: the highest
opset, the operators, and the inputs that must be constants. Graphs meant for TensorRT are
checked against it when they are exported (``models prepare``) and in the tests, so an export
that adds an operator an older parser lacks fails there, not in ``build_engines.py`` on a unit.

From onnx/onnx-tensorrt's ``docs/operators.md`` (operators marked Y; the "must be an initializer"
restrictions):

- **8.6** (JetPack 6.0 ships 8.6.2): the table at tag ``release/8.6-GA``, "TensorRT 8.6 supports
  operators up to Opset 17". No ``Gelu`` (an opset-20 operator).
- **10.3** (JetPack 6.1 and 6.2): the table at ``release/10.1-GA``, "opset 9 to opset 20" (no
  10.3 tag of the file is published); ``docs/Changelog.md`` for 10.2 and 10.3 adds and removes no
  operator, and 10.3 lifts the restriction on ``Slice``'s ``axes``.

JetPack 7 (TensorRT 10.x, later than 10.3) imports at least what 10.3 does.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

_OPERATORS_8_6 = frozenset(
    """
    Abs Acos Acosh Add And ArgMax ArgMin Asin Asinh Atan Atanh AveragePool BatchNormalization
    Cast Ceil Celu Clip Concat Constant ConstantOfShape Conv ConvTranspose Cos Cosh CumSum
    DepthToSpace DequantizeLinear Div Dropout Einsum Elu Equal Erf Exp Expand EyeLike Flatten
    Floor GRU Gather GatherElements GatherND Gemm GlobalAveragePool GlobalLpPool GlobalMaxPool
    Greater GreaterOrEqual GridSample GroupNormalization HardSigmoid HardSwish Identity If
    ImageScaler InstanceNormalization IsInf IsNaN LRN LSTM LayerNormalization LeakyRelu Less
    LessOrEqual Log LogSoftmax Loop LpNormalization LpPool MatMul Max MaxPool Mean
    MeanVarianceNormalization Min Mod Mul Neg NonMaxSuppression NonZero Not OneHot Or PRelu Pad
    ParametricSoftplus Pow QuantizeLinear RNN RandomNormal RandomNormalLike RandomUniform
    RandomUniformLike Range Reciprocal ReduceL1 ReduceL2 ReduceLogSum ReduceLogSumExp ReduceMax
    ReduceMean ReduceMin ReduceProd ReduceSum ReduceSumSquare Relu Reshape Resize
    ReverseSequence RoiAlign Round ScaledTanh Scan Scatter ScatterElements ScatterND Selu Shape
    Shrink Sigmoid Sign Sin Sinh Size Slice Softmax Softplus Softsign SpaceToDepth Split Sqrt
    Squeeze Sub Sum Tan Tanh ThresholdedRelu Tile TopK Transpose Trilu Unsqueeze Upsample Where
    Xor
    """.split()  # noqa: SIM905 (the table, as the documentation lists it)
)
_REDUCTIONS = ("L1", "L2", "LogSum", "LogSumExp", "Max", "Mean", "Min", "Prod", "Sum", "SumSquare")


@dataclass(frozen=True)
class OnnxParser:
    """One TensorRT version's ONNX parser, as its operator table describes it."""

    tensorrt: str
    max_opset: int
    operators: frozenset[str]
    constant_inputs: dict[str, tuple[int, str]] = field(default_factory=dict)  # op -> (input index, name)

    def problems(self, model: Any) -> list[str]:
        """Why this parser cannot import ``model`` (an ``onnx.ModelProto``); empty if it can. The
        model is only read, so this module needs no ``onnx`` where it is imported."""
        found = []
        for opset in model.opset_import:
            if opset.domain in ("", "ai.onnx") and opset.version > self.max_opset:
                found.append(f"opset {opset.version} (TensorRT {self.tensorrt} imports up to {self.max_opset})")
            elif opset.domain not in ("", "ai.onnx"):
                found.append(f"operators of domain {opset.domain!r}")
        nodes = [n for body in [model.graph, *model.functions] for n in _nodes(body)]  # functions: as inlined
        missing = Counter(n.op_type for n, _ in nodes if n.op_type not in self.operators)
        found += [f"{op} ({count} node{'s' * (count > 1)}): no importer" for op, count in sorted(missing.items())]
        for node, constants in nodes:
            index, name = self.constant_inputs.get(node.op_type, (None, ""))
            if index is not None and len(node.input) > index and node.input[index] not in constants | {""}:
                found.append(f"{node.op_type} {node.name or node.output[0]}: its {name} must be an initializer")
        return found


def _nodes(graph: Any) -> Iterator[tuple[Any, set[str]]]:
    """Every node of ``graph`` (or of a local function) and of its subgraphs (If, Loop, Scan
    bodies), with the names of the constants (initialisers, Constant outputs) its graph has."""
    constants = {i.name for i in getattr(graph, "initializer", ())}
    constants |= {out for n in graph.node if n.op_type == "Constant" for out in n.output}
    for node in graph.node:
        yield node, constants
        for attribute in node.attribute:
            for subgraph in [attribute.g] if attribute.HasField("g") else list(attribute.graphs):
                yield from _nodes(subgraph)


PARSERS = {
    "8.6": OnnxParser(
        "8.6",
        17,
        _OPERATORS_8_6,
        {"CumSum": (1, "axis"), "Slice": (3, "axes"), "Squeeze": (1, "axes"), "Unsqueeze": (1, "axes")},
    ),
    "10.3": OnnxParser(
        "10.3",
        20,
        _OPERATORS_8_6 | {"CastLike", "DeformConv", "Gelu", "Hardmax", "Mish"},
        {
            "CumSum": (1, "axis"),
            "Dropout": (2, "training_mode"),
            "Pad": (3, "axes"),
            "Squeeze": (1, "axes"),
            "Unsqueeze": (1, "axes"),
            **{f"Reduce{r}": (1, "axes") for r in _REDUCTIONS},
        },
    ),
}


def import_problems(model: Any) -> dict[str, list[str]]:
    """For each supported TensorRT version whose parser cannot import ``model``: why."""
    return {version: found for version, parser in PARSERS.items() if (found := parser.problems(model))}
