"""Tools beside the study, not on its path: a local autoscaling cluster of cluster.yaml's
node types (fake_cluster.py) and the lost-worker rehearsal on it (`python -m
study.tools.rehearsal`). The benchmarks are study/bench/ (`python -m study.bench`). A study
itself runs through study/run.py, cli.py, driver.py, trainable.py and what they import."""
