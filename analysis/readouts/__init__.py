"""Readouts: what a model is asked and how its answer is read, before anything is steered.

A readout item (`items.ReadoutItem`) is a prompt, a prefilled start of the answer and two word sets;
the shipped sets (`sets`), DailyDilemmas copies (`daily_dilemmas`) and JSONL files all become lists of
them, split into validation and test items (`split`). `score` reads each item once from the model's
next-token distribution (the signed readout ``sign · (log P(positive) − log P(negative))``) and measures
NLL on neutral text. It hands item lists, score tables and the signed readout to `analysis.measures`.
"""
