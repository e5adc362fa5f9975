"""steerscope: where and how can a language model be steered?

The toolkit lives in three packages: ``probes`` (capture), ``steering``
(directions, interventions, adapters) and ``analysis`` (metrics, figures).
This package holds the command-line interface.
"""

__version__ = "0.1.0"
