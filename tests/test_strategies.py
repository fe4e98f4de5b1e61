"""The public hypothesis strategies and the graph IR they draw."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gradverify.fuzz.backends import namespace
from gradverify.fuzz.graph import ApiNode, Branch, Const, Graph, Loop, OpNode
from gradverify.ops import TABLE
from gradverify.strategies import INPUT_RANGES, MARGIN, MAX_ELEMENTS, Case, cases, graphs, nudge, nudged_arrays


def _table_forward(graph, inputs):
    """The graph evaluated by the table's numpy forwards (the values the strategy steered by)."""

    class TableOps:
        name = "numpy"  # API calls: the surface's numpy functions, which the strategy steered by too
        const = staticmethod(np.asarray)
        value = staticmethod(float)

        def __getattr__(self, name):
            return TABLE[name].forward

    with np.errstate(over="ignore"):  # tanh_backward's cosh may overflow to inf (its result is then 0)
        return np.asarray(graph.compile()(TableOps(), *inputs))


@settings(max_examples=60)
@given(cases())
def test_cases_are_consistent_and_finite(case):
    assert isinstance(case, Case)
    graph = case.graph
    assert [x.shape for x in case.inputs] == list(graph.input_shapes)
    assert {x.dtype.name for x in case.inputs} == {graph.dtype}
    assert [u.shape for u in case.tangents] == list(graph.input_shapes)
    out = _table_forward(graph, case.inputs)
    assert out.shape == case.cotangent.shape
    assert out.size <= MAX_ELEMENTS
    assert np.all(np.isfinite(out))


@given(cases(max_nodes=5))
def test_printed_graph_is_standalone_python(case):
    source = case.graph.to_python()
    namespace_ = {"np": np}
    exec(source, namespace_)  # the printed source alone defines f
    engine_out = namespace_["f"](namespace("engine"), *[namespace("engine").const(x) for x in case.inputs])
    np.testing.assert_allclose(engine_out.data, _table_forward(case.graph, case.inputs), rtol=1e-5)
    assert source.startswith("def f(ops, v0")


@given(st.lists(st.floats(-5, 5), min_size=1, max_size=20), st.floats(0.01, 1.0))
def test_nudge_keeps_order_and_distance(values, gap):
    moved = nudge(values, gap)
    assert np.all(np.abs(moved) >= gap - 1e-12)
    ordered = np.sort(moved)
    assert np.all(np.diff(ordered) >= gap * (1 - 1e-12))
    assert list(np.argsort(moved, kind="stable")) == list(np.argsort(values, kind="stable"))
    assert np.all(moved >= np.asarray(values))  # only ever moved upwards


@given(nudged_arrays((2, 3), "float32", "tail"))
def test_tail_arrays_have_large_magnitudes(array):
    assert array.dtype == np.float32 and array.shape == (2, 3)
    assert np.all(np.abs(array) >= INPUT_RANGES["tail"][0])


@settings(max_examples=40)
@given(cases(max_nodes=6, focus="relu"))
def test_kinked_ops_see_values_away_from_their_kinks(case):
    graph = case.graph
    relu_inputs = []

    class Recording:
        name = "numpy"
        const = staticmethod(np.asarray)
        value = staticmethod(float)

        def __getattr__(self, name):
            if name == "relu":
                return lambda x: relu_inputs.append(np.asarray(x)) or TABLE["relu"].forward(x)
            return TABLE[name].forward

    graph.compile()(Recording(), *case.inputs)
    for values in relu_inputs:
        assert np.all(np.abs(values) >= MARGIN * (1 + np.abs(values)) * (1 - 1e-9))


def test_focus_places_the_op_in_most_graphs():
    found = []

    @settings(max_examples=20, derandomize=True)
    @given(cases(max_nodes=4, focus="log_softmax"))
    def collect(case):
        found.append("log_softmax" in case.graph.ops_covered() or any(
            "log_softmax" in node.ops_used for node in case.graph.nodes))

    collect()
    assert sum(found) >= len(found) // 2


@given(graphs(max_nodes=3))
def test_graphs_strategy_yields_graphs(graph):
    assert isinstance(graph, Graph)
    assert 1 <= len(graph) <= 3
    assert graph.live_nodes()[-1] == len(graph) - 1


def test_graph_rejects_undefined_values_and_unknown_ops():
    with pytest.raises(ValueError, match="reads value 3"):
        Graph(((2,),), "float64", (OpNode("exp", (3,)),))
    with pytest.raises(ValueError, match="not an op of the table"):
        Graph(((2,),), "float64", (OpNode("erf", (0,)),))
    with pytest.raises(ValueError, match="dtype"):
        Graph(((2,),), "int32", (OpNode("exp", (0,)),))


def test_loop_iterations_depend_on_the_values():
    # v1 = v0, doubled (v1 + v0 ...) until its sum exceeds 5, at most 3 times.
    graph = Graph(((2,),), "float64", (Loop(0, ("add", 0, ()), 5.0, 3),))
    run = graph.compile()
    ops = namespace("engine")
    small = run(ops, ops.const(np.array([0.5, 0.5])))
    large = run(ops, ops.const(np.array([3.0, 3.0])))
    np.testing.assert_array_equal(small.data, [2.0, 2.0])  # four copies: three iterations
    np.testing.assert_array_equal(large.data, [3.0, 3.0])  # sum 6 > 5: no iteration
    assert "for _ in range(3):" in graph.to_python()


def test_branch_takes_the_path_its_values_choose():
    graph = Graph(((2,),), "float64", (Branch(0, 0, 1.0, ("exp", ()), ("neg", ())),))
    run = graph.compile()
    ops = namespace("numpy")
    np.testing.assert_allclose(run(ops, np.array([1.0, 1.0])), np.exp([1.0, 1.0]))
    np.testing.assert_allclose(run(ops, np.array([0.2, 0.3])), [-0.2, -0.3])


def test_constants_print_as_exact_literals():
    target = Const(np.array([0.1, 1 / 3], dtype=np.float32))
    graph = Graph(((2,),), "float32", (OpNode("mse_loss", (0, target)),))
    source = graph.to_python()
    assert "ops.const(np.array([" in source and "dtype=np.float32" in source
    namespace_ = {"np": np}
    exec(source, namespace_)
    x = np.array([1.0, 2.0], dtype=np.float32)
    expected = np.mean((x - target.array) ** 2)
    assert namespace_["f"](namespace("numpy"), x) == pytest.approx(expected, rel=1e-6)
    assert graph.precision == "float32"


def _drawn(examples, **options):
    from gradverify.fuzz.campaign import draw_cases

    return draw_cases(cases(**options), 3, examples)


def test_graphs_draw_the_shapes_axes_and_api_calls_naive_rules_get_wrong():
    drawn = _drawn(400)
    nodes = [node for case in drawn for node in case.graph.nodes]
    ops = [node for node in nodes if isinstance(node, OpNode)]
    apis = {node.function for node in nodes if isinstance(node, ApiNode)}
    assert any(n.op in ("concatenate", "stack") for n in ops)
    joins = {op: [n for case in _drawn(120, focus=op, max_nodes=2) for n in case.graph.nodes
                  if isinstance(n, OpNode) and n.op == op] for op in ("concatenate", "stack")}
    assert any(len(n.args) >= 3 for n in joins["concatenate"])
    assert any(dict(n.attrs)["axis"] < 0 for n in joins["stack"])
    assert len(apis) >= 8, apis
    inputs = np.concatenate([np.ravel(x).astype(np.float64) for case in drawn for x in case.inputs])
    assert np.any((np.abs(inputs) < 1e-4) & (inputs != 0))  # where log(1 + x) loses digits
    assert np.any(np.abs(inputs) > 88.8)  # beyond float32's exp


@pytest.mark.parametrize("focus, wanted", [
    ("matmul", lambda n, shapes: len(shapes[0]) >= 3),
    ("sum_to", lambda n, shapes: 1 in dict(n.attrs)["shape"][1:-1] or len(dict(n.attrs)["shape"]) < len(shapes[0])),
    ("pow_scalar", lambda n, shapes: True),
])
def test_focused_graphs_reach_batched_and_middle_axis_forms(focus, wanted):
    found = False
    for case in _drawn(120, focus=focus, max_nodes=2):
        shapes = [np.shape(x) for x in case.inputs]
        for node in case.graph.nodes:  # a batched matmul's second operand is a node: the transposed batch
            if isinstance(node, OpNode) and node.op == focus and node.args[0] in range(len(shapes)):
                found = found or wanted(node, [shapes[node.args[0]]])
    assert found


def test_pow_scalar_draws_negative_bases():
    cases_ = [c for c in _drawn(60, focus="pow_scalar", max_nodes=1) if "pow_scalar" in c.graph.ops_covered()]
    assert any(np.any(np.asarray(c.inputs[0]) < 0) for c in cases_)
