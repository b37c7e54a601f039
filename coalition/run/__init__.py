"""Running a job: the config schema, the command line, checks before start, the run directory and its files, saved states, live progress, statistics, tables and plots."""
