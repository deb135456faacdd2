"""Prints, as JSON, what a finished pipeline run left in the ZenML and MLflow stores.

Run as a subprocess with the test's ZENML_CONFIG_PATH, so that it reads the isolated stores.
"""

from __future__ import annotations

import json
import sys

from mlflow.tracking import MlflowClient
from zenml.client import Client

from distill_ner.stack import tracking_uri_of_active_stack


def main(pipeline_name: str, model_name: str) -> None:
    client = Client()
    # other ZenML processes started in this repo may have switched the repo's active stack
    client.activate_stack("distill-ner")
    runs = client.list_pipeline_runs(pipeline_name=pipeline_name, sort_by="desc:created", size=10).items
    run = runs[0]
    steps = {}
    for name, step in run.steps.items():
        outputs = {}
        for out_name, versions in step.outputs.items():
            artifact = versions[0]
            outputs[out_name] = {
                k: v for k, v in artifact.run_metadata.items() if isinstance(v, (int, float, str, bool))
            }
        steps[name] = {"status": str(step.status), "outputs": outputs}
    mlflow = MlflowClient(tracking_uri=tracking_uri_of_active_stack())
    experiments = mlflow.search_experiments()
    mlflow_runs = mlflow.search_runs([e.experiment_id for e in experiments], order_by=["start_time DESC"])
    metrics, histories, params = {}, {}, {}
    for r in mlflow_runs:
        if r.data.tags.get("mlflow.runName") == run.name or not metrics:
            metrics.update(r.data.metrics)
            params.update(r.data.params)
            for key in r.data.metrics:
                if key.startswith("train/loss"):
                    histories[key] = [m.value for m in mlflow.get_metric_history(r.info.run_id, key)]
    # search results carry no aliases in MLflow 3; get_model_version does
    versions = [
        {
            "version": v.version,
            "aliases": list(mlflow.get_model_version(model_name, v.version).aliases),
            "tags": dict(v.tags),
        }
        for v in mlflow.search_model_versions(f"name='{model_name}'")
    ]
    print(
        json.dumps(
            {
                "runs": len(runs),
                "run_status": str(run.status),
                "run_name": run.name,
                "steps": steps,
                "mlflow_metrics": metrics,
                "mlflow_params": params,
                "loss_history": histories,
                "model_versions": versions,
            }
        )
    )


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
