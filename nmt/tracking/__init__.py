"""Every MLflow call of the project, one module per concept; import from the module itself.

- ``store``: which store (``MLFLOW_TRACKING_URI``, else ./mlflow.db), connecting to it, the experiment.
- ``provenance``: where a result came from (git commit, data digest, device, versions) as tags.
- ``run``: :class:`~nmt.tracking.run.Run`, the one MLflow run the train, evaluate and export stages share.
- ``registry``: the exported model logged as a pyfunc, registered, and promoted to champion.
- ``browse``: the `nmt runs` table and the `nmt ui` server.
- ``pyfunc`` / ``pyfunc_script``: the served model and the model-from-code script MLflow loads it by.
"""
