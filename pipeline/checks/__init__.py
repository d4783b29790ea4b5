"""Would the hospital's checks catch it? The range and delta checks a laboratory or a charting system runs
on a recorded value (limits.py), and which of the attack's edits they flag (docs/methods.md §11)."""
