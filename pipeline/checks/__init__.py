"""Would the hospital's checks catch it? The range and delta checks a laboratory or a charting system runs
on a recorded value (limits.py), a laboratory's own limits and the ones a store keeps (table.py), and which
limits a run uses (source.py); docs/methods.md §11."""
