"""Reports: tables, figures and pages drawn from what measures and studies produced.

The house style (`style`), the one table writer (`tables`: Markdown, LaTeX, CSV, atomically), figures
(`plots` and the figures of experiments and of the monitor) and their files (`figure_files`), the
sweep's report (`sweep_report`, its answer in words `sweep_answer`, its page `report_page`), the paper's
tables, figures and page (`paper`, `paper_page`), every figure and table of a finished run again
(`regenerate`), and the notebooks' figure rendering (`notebook`). Nothing here computes a measure
anew; this is the last stage, handing files and figures to the reader.
"""
