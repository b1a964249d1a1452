"""Search everything the sandbox stored for the example's patient data.

    python check_no_patient_data.py [STATE_DIR]

STATE_DIR (default ``.gcbatch``) holds the embedded sandbox's database and its storage
folder (uploads, images, job inputs). Every file there is read as bytes and searched for
each made-up patient value that make_series.py writes into the DICOM files (but the
one-letter PatientSex, which any binary file holds). Exit 0 and
"no patient data" when none is found; exit 1 naming each file and value otherwise.
"""

from __future__ import annotations

import sys
from pathlib import Path

from make_series import PATIENT


def main() -> int:
    state = Path(sys.argv[1] if len(sys.argv) > 1 else ".gcbatch")
    stored = [p for p in state.glob("sandbox.db*") if p.is_file()]
    stored += [p for d in state.glob("sandbox.db*") if d.is_dir()
               for p in d.rglob("*") if p.is_file()]
    if not stored:
        print(f"nothing stored under {state}: run the example first", file=sys.stderr)
        return 2
    # a one-letter value (PatientSex "F") is in any binary file: search the others
    needles = {value: value.encode() for value in PATIENT.values() if len(value) > 3}
    found = 0
    for path in sorted(stored):
        data = path.read_bytes()
        for value, raw in needles.items():
            if raw in data:
                print(f"{path}: holds {value!r}")
                found += 1
    if found:
        return 1
    print(f"no patient data: {len(stored)} stored files searched for "
          f"{', '.join(needles)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
