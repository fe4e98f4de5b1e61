"""``python -m gradverify report``: how accurate and how fast each way of differentiating is.

On the document's examples (:mod:`gradverify.examples`), the engine's reverse
and forward mode, PyTorch, JAX (eager and jit), central differences,
Richardson extrapolation and the complex step are judged against an mpmath
ground truth and timed interleaved in one run.  :func:`build.build_report`
writes report.md, a self-contained report.html, results.json, CSVs and PNGs.
"""
