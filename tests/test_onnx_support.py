"""The graphs TensorRT builds engines from, against what each supported TensorRT's ONNX parser
imports (``edge_asr/trt/onnx_support.py``): the prepared ones import on 8.6 and 10.3, and a
graph with what a parser lacks is refused with the reason."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from edge_asr.config import Config
from edge_asr.manifest import load_manifest
from edge_asr.trt.onnx_support import PARSERS, import_problems
from edge_asr.whisper import TENSORRT_GRAPHS


def whisper_models(config: Config) -> list[str]:
    return [spec.id for spec in load_manifest(config).values() if spec.family == "whisper"]


def test_every_prepared_graph_tensorrt_reads_imports_on_every_supported_version(config: Config):
    models = whisper_models(config)
    assert len(models) >= 2  # tiny.en and base
    for model in models:
        for name in TENSORRT_GRAPHS:
            graph = onnx.load(config.models_path / model / name, load_external_data=False)
            assert [(o.domain, o.version) for o in graph.opset_import] == [("", 17)], (model, name)
            assert import_problems(graph) == {}, (model, name)
            assert "Erf" in {n.op_type for n in graph.graph.node}  # Gelu, as its formula
    assert set(PARSERS) == {"8.6", "10.3"}


def graph_of(nodes: list, opset: int, initializers: list | None = None, domains: tuple = ()) -> onnx.ModelProto:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    graph = helper.make_graph(nodes, "g", [x], [y], initializer=initializers or [])
    imports = [helper.make_opsetid("", opset), *(helper.make_opsetid(d, 1) for d in domains)]
    return helper.make_model(graph, opset_imports=imports)


def test_an_operator_or_opset_a_parser_lacks_is_refused():
    gelu = graph_of([helper.make_node("Gelu", ["x"], ["y"])], 20)
    assert import_problems(gelu) == {"8.6": ["opset 20 (TensorRT 8.6 imports up to 17)", "Gelu (1 node): no importer"]}
    erf = graph_of([helper.make_node("Erf", ["x"], ["y"])], 17)
    assert import_problems(erf) == {}
    newer = graph_of([helper.make_node("Erf", ["x"], ["y"])], 21)
    assert set(import_problems(newer)) == {"8.6", "10.3"}
    unknown = graph_of(
        [helper.make_node("MatMulNBits", ["x"], ["y"], domain="com.microsoft")], 17, domains=("com.microsoft",)
    )
    problems = import_problems(unknown)
    assert problems["10.3"] == ["operators of domain 'com.microsoft'", "MatMulNBits (1 node): no importer"]


def test_the_nodes_of_subgraphs_are_checked_too():
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    then = helper.make_graph([helper.make_node("Gelu", ["x"], ["y"])], "then", [], [y])
    other = helper.make_graph([helper.make_node("Erf", ["x"], ["y"])], "else", [], [y])
    cond = numpy_helper.from_array(np.array(True), "cond")
    branch = helper.make_node("If", ["cond"], ["y"], then_branch=then, else_branch=other)
    assert import_problems(graph_of([branch], 17, [cond])) == {"8.6": ["Gelu (1 node): no importer"]}


def test_axes_that_must_be_constants_are_checked():
    axes = numpy_helper.from_array(np.array([0], np.int64), "axes")
    constant = graph_of([helper.make_node("Unsqueeze", ["x", "axes"], ["y"])], 17, [axes])
    assert import_problems(constant) == {}
    computed = graph_of(
        [helper.make_node("Shape", ["x"], ["s"]), helper.make_node("Unsqueeze", ["x", "s"], ["y"], name="u")], 17
    )
    assert import_problems(computed) == {v: ["Unsqueeze u: its axes must be an initializer"] for v in ("8.6", "10.3")}
    # 10.3 takes Slice's axes as a tensor; 8.6 does not.
    starts, ends = (numpy_helper.from_array(np.array([0], np.int64), n) for n in ("starts", "ends"))
    slice_ = helper.make_node("Slice", ["x", "starts", "ends", "s"], ["y"], name="cut")
    sliced = graph_of([helper.make_node("Shape", ["x"], ["s"]), slice_], 17, [starts, ends])
    assert import_problems(sliced) == {"8.6": ["Slice cut: its axes must be an initializer"]}
