"""vsearch's Airflow integration: a store hook over Airflow connections, the
publish operator with its link to the query service, and the snapshots view.

Airflow puts ``plugins/`` on ``sys.path``, so DAGs import ``vsearch_airflow``.
"""
