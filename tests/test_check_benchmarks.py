"""The measurement functions the report embeds: shapes and the facts they must show (no timings asserted)."""
import numpy as np

from gradverify.check.benchmarks import DELTAS, cost_table, document_mlp, sensitivity_table


def test_quick_sensitivity_table_flags_every_delta_for_gradverify():
    table = sensitivity_table(quick=True, tools=["gradverify full", "gradverify fast", "torch gradcheck fast"])
    assert list(table.index) == [1e-2, 1e-4, 1e-6, 1e-8]
    for tool in ("gradverify full", "gradverify fast"):
        assert table[f"{tool} (spread)"].all() and table[f"{tool} (one entry)"].all()
    # torch's fast mode misses the small errors (the anchors' measurement).
    assert not table.loc[1e-6, "torch gradcheck fast (one entry)"]


def test_default_deltas_span_1e_2_to_1e_9():
    assert np.allclose(DELTAS, [10.0**-k for k in range(2, 10)])


def test_cost_table_times_both_tools_in_both_modes_on_the_1029_parameter_mlp():
    _, params = document_mlp()
    assert sum(p.numel() for p in params) == 1029
    table = cost_table(quick=True)
    assert set(table.index) == {("gradverify", "full"), ("gradverify", "fast"), ("torch gradcheck", "full"),
                                ("torch gradcheck", "fast")}
    assert (table["verdict"] == "pass").all()
    assert (table["seconds"] > 0).all()
    assert np.isfinite(table.loc[("gradverify", "full"), "ratio"])
