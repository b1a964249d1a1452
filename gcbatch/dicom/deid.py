"""Local de-identification with DIAG's package, the procedure the platform itself uses.

``grand-challenge-dicom-de-identifier`` with the procedure of
``grand-challenge-dicom-de-id-procedure`` (what gcapi runs before a DICOM Image Set
upload, and what the platform runs again on its side) is an optional extra:
``pip install 'gcbatch[dicom]'``. It is imported only here and only when a case needs it;
without it :func:`require` raises :class:`DeidentifierMissing` naming the extra.

**Deterministic per attempt.** The package maps every UID to a fresh random one; gcbatch
replaces that map with one derived from the attempt's id and the original UID
(``sha256(attempt/uid)`` as digits under the package's root ``1.2.826.0.1.3680043.10.1666.``).
So the copy of a file is the same bytes however often it is made for one attempt (a
resumed upload sends exactly what was planned), and a new attempt gets new Study and
Series Instance UIDs: the Series Instance UID the platform stores on the image is then a
handle of that attempt, as exact as an upload name. The file meta's
MediaStorageSOPInstanceUID follows the new SOP Instance UID (the package leaves the
original there).
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from gcbatch.errors import InputError

__all__ = [
    "EXTRA",
    "ROOT_UID",
    "DeidentificationRejected",
    "DeidentifierMissing",
    "attempt_uid",
    "deidentify_file",
    "procedure_version",
    "require",
]

#: what to install for local de-identification
EXTRA = "gcbatch[dicom]"
#: the de-identifier's root UID (DIAG's, registered for Grand Challenge)
ROOT_UID = "1.2.826.0.1.3680043.10.1666."
#: the tags whose values must be identical across a DICOM image set's files (the
#: platform's own ``assert_unique_value_for`` list)
UNIQUE_TAGS = ("StudyInstanceUID", "SeriesInstanceUID", "PatientID", "StudyID", "StudyDate",
               "AccessionNumber", "SeriesNumber")


class DeidentifierMissing(InputError):
    """The optional de-identification packages are not installed."""


class DeidentificationRejected(InputError):
    """The procedure refuses a file (an unsupported SOP class, differing tags, ...)."""


def _modules() -> tuple[Any, Any]:
    try:
        import pydicom
        from grand_challenge_dicom_de_identifier import deidentifier
    except ImportError as exc:
        raise DeidentifierMissing(
            f"local DICOM de-identification needs DIAG's grand-challenge-dicom-de-identifier "
            f"({exc.name or 'a package'} is not installed): pip install '{EXTRA}', or turn "
            "it off for this source with `deidentify: false` (patient data then leaves "
            "this machine as it is)") from None
    return pydicom, deidentifier


def require() -> None:
    """:class:`DeidentifierMissing` unless the extra is installed."""
    _modules()


def procedure_version() -> str:
    """The installed procedure's version (``2025.11.0``), "" when not installed."""
    try:
        from grand_challenge_dicom_de_id_procedure import procedure
    except ImportError:
        return ""
    return str(procedure.get("version", ""))


def attempt_uid(attempt: str, uid: str) -> str:
    """The UID ``uid`` becomes in ``attempt``'s copies (at most 64 characters)."""
    digits = str(int(hashlib.sha256(f"{attempt}/{uid}".encode()).hexdigest(), 16))
    return ROOT_UID + digits[: 64 - len(ROOT_UID)]


class _AttemptUIDs(dict[str, Any]):
    """The de-identifier's ``uid_map``, deterministic per attempt."""

    def __init__(self, attempt: str, uid_type: Any) -> None:
        super().__init__()
        self._attempt = attempt
        self._uid_type = uid_type

    def __missing__(self, key: str) -> Any:
        value = self._uid_type(attempt_uid(self._attempt, str(key)))
        self[key] = value
        return value


def make_deidentifier(attempt: str, *, unique: bool) -> Any:
    """A de-identifier for one input of one attempt (``unique``: the files must agree on
    :data:`UNIQUE_TAGS`, as the platform requires for an image set)."""
    pydicom, deidentifier = _modules()
    made = deidentifier.DicomDeidentifier(
        assert_unique_value_for=list(UNIQUE_TAGS) if unique else None)
    made.uid_map = _AttemptUIDs(attempt, pydicom.uid.UID)
    return made


def deidentify_file(source: Path, target: Path, deidentifier: Any) -> None:
    """Write the de-identified copy of ``source`` to ``target`` (atomically)."""
    pydicom, _ = _modules()
    from grand_challenge_dicom_de_identifier.exceptions import RejectedDICOMFileError

    partial = target.with_name(target.name + ".part")
    try:
        with pydicom.dcmread(source, force=True) as dataset:
            deidentifier.deidentify_dataset(dataset)
            meta = getattr(dataset, "file_meta", None)
            if meta is not None and "SOPInstanceUID" in dataset:
                meta.MediaStorageSOPInstanceUID = dataset.SOPInstanceUID
            dataset.save_as(partial, enforce_file_format=True)
    except RejectedDICOMFileError as exc:
        partial.unlink(missing_ok=True)
        raise DeidentificationRejected(
            f"{source}: the de-identification procedure refuses it: "
            f"{getattr(exc, 'justification', '') or exc}") from None
    except OSError:
        partial.unlink(missing_ok=True)
        raise
    partial.replace(target)
