"""The exported model as an MLflow pyfunc: descriptions in, code out, behind `mlflow models serve`.

The export stage logs it as a *model from code* (``nmt/tracking/pyfunc_script.py``, no pickle): the logged
artifact holds the export directory (weights, config, tokenizer), the ``nmt`` package and pinned
requirements, so ``mlflow models serve -m models:/nmt-text2code@champion`` needs nothing else.

A request is a list of ``{"nl": "..."}`` objects (checked against the ``Description`` type hint:
a missing ``nl`` or a value that is not a string is refused before the model runs); the answer is
one string per object. Decoding options go in ``params``, defaulting to those of the evaluate stage::

    curl -s 127.0.0.1:5001/invocations -H 'Content-Type: application/json' \\
         -d '{"inputs": [{"nl": "return the absolute value of x"}], "params": {"beam_size": 4}}'
    {"predictions": ["return abs ( x )"]}

Concurrent requests are decoded together (:mod:`nmt.decoding.batcher`): the scoring server runs
each request's ``predict`` in its own thread, and those waiting while a decode runs join the next
one, up to ``max_batch`` descriptions, waiting at most ``max_wait_ms`` for them (the model config
that ``export.serve_max_batch`` and ``serve_max_wait_ms`` record; ``max_batch`` 1 decodes each
request apart). Each request gets exactly its own translations back.

Every bad request (not JSON, no ``inputs``, a wrong key, an empty list, a non-string, an
out-of-range param) gets a 400 with MLflow's INVALID_PARAMETER_VALUE and a message naming it.
"""

# No `from __future__ import annotations`: MLflow reads predict's type hints as real objects.
from typing import Any

import mlflow.pyfunc
import pydantic
from mlflow.exceptions import MlflowException

# Decoding options a request may set in "params" (DecodeSettings fields); the rest keep the model's
# defaults, the evaluate stage's recorded at export time. Out-of-range values are a 400.
REQUEST_PARAMS = ("beam_size", "max_len_a", "max_len_b", "length_penalty", "rerank")
EXAMPLE = "return the absolute value of x"


class Description(pydantic.BaseModel):
    """One input: the natural-language description to translate."""

    model_config = pydantic.ConfigDict(extra="forbid", strict=True)
    nl: str


class TranslatorModel(mlflow.pyfunc.PythonModel):
    """A :class:`~nmt.decoding.translator.Translator` loaded from the logged export directory."""

    def load_context(self, context) -> None:
        from nmt.decoding.batcher import MicroBatcher
        from nmt.decoding.translator import Translator
        from nmt.tracking.registry import batching_of

        self.translator = Translator.from_pretrained(context.artifacts["model_dir"], device="auto")
        self.batcher = MicroBatcher(self.translator.translate, *batching_of(context.model_config))

    def predict(self, context, model_input: list[Description], params: dict[str, Any] | None = None) -> list[str]:
        if not model_input:
            raise MlflowException.invalid_parameter_value(
                f'no descriptions to translate: send at least one, e.g. {{"inputs": [{{"nl": "{EXAMPLE}"}}]}}'
            )
        given = {k: v for k, v in (params or {}).items() if k in REQUEST_PARAMS}
        try:
            settings = self.translator.settings(**given)  # built once, from the request over the model's defaults
            translations = self.batcher.translate([d.nl for d in model_input], settings)
        except ValueError as e:  # a bad decoding option, named by the Translator
            raise MlflowException.invalid_parameter_value(f"bad params: {e}") from e
        return [t.text for t in translations]
