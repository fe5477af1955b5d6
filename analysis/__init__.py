"""Exploring a run's results: its artifacts through MLMD (artifacts.py), tables and plots of
statistics (stats_views.py) and evaluations (evaluation.py), the HTML run report (report.py),
the served model's lineage (lineage.py) and the data-leakage check step (leakage.py).

The notebooks in notebooks/ call these, so they stay thin and the report shows the same views.
"""
