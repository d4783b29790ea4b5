"""The MIMIC-III tables with their values as MEDS stores them, for the tests of prepare's MEDS source.

MEDS's `numeric_value` is float32: :func:`rounded_copy` writes the CSV tables with VALUENUM rounded the
same way (and written exactly), so that prepare from the CSV copy and prepare from the MEDS dataset
(pipeline/data/meds_export.py) can be compared bit for bit.
"""

from pathlib import Path

import numpy as np
import pandas as pd

TABLES = ("PATIENTS", "ADMISSIONS", "ICUSTAYS", "LABEVENTS", "CHARTEVENTS")


def rounded_copy(mimic_dir: Path, out: Path) -> Path:
    """The tables with LABEVENTS' and CHARTEVENTS' valuenum rounded to float32."""
    out.mkdir(parents=True)
    for name in TABLES:
        path = next(p for p in Path(mimic_dir).iterdir() if p.name.lower().startswith(name.lower() + ".csv"))
        df = pd.read_csv(path, low_memory=False)
        for col in (c for c in df.columns if c.lower() == "valuenum"):
            df[col] = df[col].astype(np.float32).astype(np.float64)
        df.to_csv(out / f"{name}.csv.gz", index=False, float_format="%.17g")
    return out
