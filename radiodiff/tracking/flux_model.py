"""MLflow models-from-code entry of the registered RadioDiff-Flux model.

`register_flux_model` hands this file to MLflow, which copies it into the logged model and
runs it when the model loads: the model holds code and weights files, no pickled object.
"""

import mlflow

from radiodiff.tracking.registry import FluxPyfunc

mlflow.models.set_model(FluxPyfunc())
