"""Measures: numbers about directions and interventions, computed from readouts; they draw nothing.

Dose-response tables (`dose`) and their metrics with item- and dilemma-level inference (`metrics`),
value profiles (`values`, with the side effects' label-permutation null), precision across runs
(`precision`: paired between-method tests over dilemmas, the seed spread apart from the interval),
the evaluation of one intervention against its baselines (`evaluate`), each method's coefficient at a
shared KL budget (`matched_cost`), first-order predictions of
steerability (`predict`), separation of the pairs' states (`separation`), agreement between direction
methods (`agreement`) and token-by-token monitoring (`monitor`). Each returns data (DataFrames, dicts,
dataclasses) that `analysis.studies` runs at scale and `analysis.reports` draws.
"""
