"""The trained student folder (a `Path` artifact): stored as ZenML's PathMaterializer stores it (a tar of the
folder, no pickle), plus a model card view and its numbers as metadata. The step's working copy is then
removed: it is gigabytes for a 7B full fine-tune and nothing reads it after the artifact store has it."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, ClassVar

from zenml.enums import ArtifactType, VisualizationType
from zenml.io import fileio
from zenml.materializers.path_materializer import PathMaterializer

from distill_ner.model_card import card_facts, model_card_markdown

WORK_PREFIX = "student_"  # what steps/train.py names its working folder


def work_folder() -> Path:
    """A fresh working folder for a training run, which StudentModelMaterializer removes once stored."""
    return Path(tempfile.mkdtemp(prefix=WORK_PREFIX))


def is_work_folder(path: Path) -> bool:
    return path.parent == Path(tempfile.gettempdir()) and path.name.startswith(WORK_PREFIX)


class StudentModelMaterializer(PathMaterializer):
    SKIP_REGISTRATION: ClassVar[bool] = True  # only where a step names it; other Paths stay ZenML's
    ASSOCIATED_TYPES = (Path,)
    ASSOCIATED_ARTIFACT_TYPE: ClassVar[ArtifactType] = ArtifactType.MODEL

    def save(self, data: Any) -> None:
        super().save(data)
        if isinstance(data, Path) and is_work_folder(data):
            # ZenML asks for the card and metadata after save: read them while the folder is still there
            self._card = (model_card_markdown(data), card_facts(data))
            shutil.rmtree(data, ignore_errors=True)

    def _card_of(self, data: Path) -> tuple[str, dict[str, Any]]:
        card = getattr(self, "_card", None)
        return card if card is not None else (model_card_markdown(data), card_facts(data))

    def save_visualizations(self, data: Path) -> dict[str, VisualizationType]:
        path = os.path.join(self.uri, "model_card.md")
        with fileio.open(path, "w") as f:
            f.write(self._card_of(data)[0])
        return {path: VisualizationType.MARKDOWN}

    def extract_metadata(self, data: Path) -> dict[str, Any]:
        return {k: v for k, v in self._card_of(data)[1].items() if isinstance(v, (str, int, float, bool))}
