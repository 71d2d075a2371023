"""Connection arguments for Airflow's SQLite metadata database (``vsearch airflow``).

Airflow opens SQLite in WAL mode (readers never block the writer) but with the
driver's default busy timeout of 5 s: when the scheduler, the API server and a
``airflow backfill create`` in another terminal write at once on a busy machine,
the one that waits longer than that fails with "database is locked". A longer
wait turns that into a short pause. Named in ``airflow.cfg`` as
``[database] sql_alchemy_connect_args = vsearch.airflow_setup.sqlite_args.CONNECT_ARGS``;
this module imports nothing, so every Airflow process loads it cheaply.
"""

CONNECT_ARGS = {"timeout": 120}
