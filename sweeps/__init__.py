"""Ray Tune sweeps over model families, sizes and hyperparameters: ``spec`` (the sweep file's
schema and its expansion into trial configs), ``results`` (the trials' table, CSV, plot and best
config) and ``sweep`` (the driver: `python sweeps/sweep.py --config configs/sweeps/X.yaml`)."""
