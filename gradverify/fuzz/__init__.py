"""Random-graph differential testing of the engine, and its mutation self-test.

- :mod:`gradverify.fuzz.graph`: the graph IR (printable as Python);
- :mod:`gradverify.strategies`: hypothesis strategies drawing graphs and inputs;
- :mod:`gradverify.fuzz.backends`: the op namespaces a graph runs on;
- :mod:`gradverify.fuzz.adapters`: the engine under test (``--target``), one adapter per engine;
- :mod:`gradverify.fuzz.hips_autograd`: the example adapter of a third-party engine (HIPS autograd);
- :mod:`gradverify.fuzz.oracles`: five-way comparison of one graph's derivatives;
- :mod:`gradverify.fuzz.campaign`: campaigns, shrinking and reproducer scripts;
- :mod:`gradverify.fuzz.mutants`: mutation operators on the engine's rules;
- :mod:`gradverify.fuzz.jax_cache`: a persistent compilation cache for the JAX oracle;
- :mod:`gradverify.fuzz.cli`, :mod:`gradverify.fuzz.mutants_cli`: ``python -m gradverify fuzz`` / ``mutants``.
"""
