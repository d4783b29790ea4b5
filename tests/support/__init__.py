"""Helpers of the tests, not tests: small runs and how they are copied (runs.py), the task functions Slurm
jobs and spawned workers import by name (tasks.py), suspending and signalling Slurm jobs (slurm_control.py),
MIMIC-III and MEDS tables in other shapes (mimic_tables.py, meds_tables.py). A test module imports these,
never another test module (tests/test_house.py)."""
