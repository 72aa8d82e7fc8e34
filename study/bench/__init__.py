"""`python -m study.bench`: how well the study's search strategies choose, measured.

- `record`: train a grid of the digits space's configurations on several seeds once, and
  keep every evaluation (a tabular benchmark, study/bench/table.py);
- `replay`: replay search strategies against that table as a simulator with asynchronous
  workers and the recorded durations, over many study seeds (study/bench/replay.py);
- `check`: the replay against a real study whose trials replay the table (Ray Tune,
  the searcher, ASHA and the race as they run live): both must decide alike;
- `live`: real studies on digits, against the replay of the same strategies.
"""
