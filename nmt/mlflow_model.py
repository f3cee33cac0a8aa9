"""The model-from-code script MLflow runs to load the pyfunc (see nmt.serving): no pickle involved."""

from mlflow.models import set_model

from nmt.serving import TranslatorModel

set_model(TranslatorModel())
