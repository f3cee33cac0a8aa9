"""The model-from-code script MLflow runs to load the pyfunc (see nmt.tracking.pyfunc): no pickle involved."""

from mlflow.models import set_model

from nmt.tracking.pyfunc import TranslatorModel

set_model(TranslatorModel())
