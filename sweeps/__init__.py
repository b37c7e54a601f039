"""Ray Tune drivers: `python sweeps/sweep.py --config configs/sweeps/X.yaml`."""
