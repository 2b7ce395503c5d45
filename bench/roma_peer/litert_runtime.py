"""An MLServer runtime for a ``.tflite`` model under LiteRT: the peer contender of
``bench/roma.py``. MLServer's own adaptive batching (``max_batch_size``, ``max_batch_time`` in
``model-settings.json``) groups requests before :meth:`predict`. Runs in MLServer's own
virtualenv (``bench/roma.py`` makes it), not hyperfleet's."""

from __future__ import annotations

import numpy as np
from ai_edge_litert.interpreter import Interpreter
from mlserver import MLModel
from mlserver.codecs import NumpyCodec
from mlserver.types import InferenceRequest, InferenceResponse


class LiteRTModel(MLModel):  # type: ignore[misc]
    async def load(self) -> bool:
        uri = self.settings.parameters.uri
        threads = int((self.settings.parameters.extra or {}).get("threads", 1))
        self._interpreter = Interpreter(model_path=uri, num_threads=threads)
        self._in = self._interpreter.get_input_details()[0]
        self._out = self._interpreter.get_output_details()[0]
        self._batch = -1
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        x = NumpyCodec.decode_input(payload.inputs[0]).astype(np.float32)
        if x.shape[0] != self._batch:
            self._interpreter.resize_tensor_input(self._in["index"], list(x.shape))
            self._interpreter.allocate_tensors()
            self._batch = x.shape[0]
        self._interpreter.set_tensor(self._in["index"], np.ascontiguousarray(x))
        self._interpreter.invoke()
        y = np.array(self._interpreter.get_tensor(self._out["index"]))
        return InferenceResponse(
            model_name=self.name,
            outputs=[NumpyCodec.encode_output(name="output", payload=y)],
        )
