"""vsearch: image search over tens of millions of pictures.

The core library. It imports neither Airflow nor Flask: ``dags/`` wires its
functions into tasks and ``service/`` serves what it publishes.
"""

__version__ = "0.1.0"
