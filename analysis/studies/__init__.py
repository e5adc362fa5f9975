"""Studies: whole runs that apply measures at scale and leave a run folder behind.

The layer-steerability sweep (`sweep`) and the paper's experiment (`experiment`, its options checked
up front by `experiment_checks`) write every finished configuration into a run folder (`run_folder`:
the lock, recorded options, row-by-row tables) whose file names, job keys and readers `layout` owns.
A study returns its result (a `SweepResult`, or the experiment's folder) and writes no report: it hands
the result and the folder to `analysis.reports`.
"""
