"""Benchmarks: Vesalius side by side with Orthanc and DCMTK on the same synthetic data.

``python -m bench.run`` generates the corpora (:mod:`bench.corpus`), starts every server on
loopback (:mod:`bench.servers`), runs the scenarios of the registry (:mod:`bench.scenarios`)
with alternating runs, and writes docs/benchmarks.md with PNG plots (:mod:`bench.report`).
"""
