"""Reports: tables, figures and pages drawn from what measures and studies produced.

The house style (`style`), the one table writer (`tables`: CSV, Markdown, LaTeX, each atomic), figures
(`plots`; `experiment_plots` for methods compared, `monitor_plots` for the monitor) and their files
(`figure_files`), the sweep's report (`sweep_report`, its answer in words `sweep_answer`, its HTML page
`report_page`), the paper's tables, figures and page (`paper`, `paper_page`), every figure and table of
a finished run again (`regenerate`), and the notebooks' figure rendering (`notebook`). Nothing here
measures anew: it reads a `SweepResult` or a run folder (through `analysis.studies.layout`) and hands
files, figures and pages to the reader, the last stage.
"""
