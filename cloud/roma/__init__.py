"""ROMA: serve trained models under a response-time SLA per model, with the fewest cores.

The server speaks the KServe v2 / Open Inference Protocol over REST (:mod:`cloud.roma.app`,
:mod:`cloud.roma.v2`), serves models from a repository on disk (:mod:`cloud.roma.repository`)
in worker processes (:mod:`cloud.roma.worker`), batches to the SLA and sheds what cannot make it
(:mod:`cloud.roma.served`, :mod:`cloud.roma.batching`, :mod:`cloud.roma.dispatch`), gives the
node's GPU to the most pressing model (:mod:`cloud.roma.gpu`), sets each model's cores with a PI
controller (:mod:`cloud.roma.controller`, :mod:`cloud.roma.quota`) and hot-reloads the models
the coordinator publishes (:mod:`cloud.roma.follow`). Imports :mod:`protocol` and :mod:`link`.
"""

from .config import ModelConfig, ServeConfig, load_model_config, load_serve_config
from .errors import (
    InferenceRequestError,
    ModelLoadError,
    ModelNotFound,
    ModelUnavailable,
    Overloaded,
    PayloadTooLarge,
    RepositoryError,
    RomaError,
    ServeConfigError,
    Unauthorized,
    UnsupportedEncoding,
)
from .serve import RomaRunner
from .server import RomaServer

__all__ = [
    "InferenceRequestError",
    "ModelConfig",
    "ModelLoadError",
    "ModelNotFound",
    "ModelUnavailable",
    "Overloaded",
    "PayloadTooLarge",
    "RepositoryError",
    "RomaError",
    "RomaRunner",
    "RomaServer",
    "ServeConfig",
    "ServeConfigError",
    "Unauthorized",
    "UnsupportedEncoding",
    "load_model_config",
    "load_serve_config",
]
