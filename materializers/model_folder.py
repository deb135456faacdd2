"""The trained model folder: stored like any Path (a tar.gz in the artifact store), then its working
copy is removed, since it is gigabytes for a 7B full fine-tune and no one reads it after the step."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any, ClassVar

from zenml.enums import ArtifactType
from zenml.materializers.path_materializer import PathMaterializer

WORK_PREFIX = "student_"  # what steps/train.py names its working folder


def work_folder() -> Path:
    """A fresh working folder for a training run, which StudentFolderMaterializer removes once stored."""
    return Path(tempfile.mkdtemp(prefix=WORK_PREFIX))


def is_work_folder(path: Path) -> bool:
    return path.parent == Path(tempfile.gettempdir()) and path.name.startswith(WORK_PREFIX)


class StudentFolderMaterializer(PathMaterializer):
    ASSOCIATED_TYPES: ClassVar[tuple[type[Any], ...]] = (Path,)
    ASSOCIATED_ARTIFACT_TYPE: ClassVar[ArtifactType] = ArtifactType.MODEL
    SKIP_REGISTRATION: ClassVar[bool] = True  # only where a step names it; other Paths stay as they are

    def save(self, data: Any) -> None:
        super().save(data)
        if isinstance(data, Path) and is_work_folder(data):
            shutil.rmtree(data, ignore_errors=True)
