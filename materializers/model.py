"""The trained student folder (a `Path` artifact): stored as ZenML's PathMaterializer stores it (a tar of the
folder, no pickle), plus a model card view and its numbers as metadata."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, ClassVar

from zenml.enums import ArtifactType, VisualizationType
from zenml.io import fileio
from zenml.materializers.path_materializer import PathMaterializer

from distill_ner.model_card import card_facts, model_card_markdown


class StudentModelMaterializer(PathMaterializer):
    SKIP_REGISTRATION: ClassVar[bool] = True  # only where a step names it; other Paths stay ZenML's
    ASSOCIATED_TYPES = (Path,)
    ASSOCIATED_ARTIFACT_TYPE: ClassVar[ArtifactType] = ArtifactType.MODEL

    def save_visualizations(self, data: Path) -> dict[str, VisualizationType]:
        path = os.path.join(self.uri, "model_card.md")
        with fileio.open(path, "w") as f:
            f.write(model_card_markdown(data))
        return {path: VisualizationType.MARKDOWN}

    def extract_metadata(self, data: Path) -> dict[str, Any]:
        return {k: v for k, v in card_facts(data).items() if isinstance(v, (str, int, float, bool))}
