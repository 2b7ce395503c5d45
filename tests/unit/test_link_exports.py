"""link's public face: sorted ``__all__`` that names what exists, and the error tree."""

from __future__ import annotations

import importlib

import pytest

import link
from link import (
    ArtifactError,
    BrokerUnavailable,
    ConnectionLost,
    IntegrityError,
    LinkError,
    PublishTimeout,
    ShardError,
)


@pytest.mark.parametrize("name", ["link", "link.mqtt", "link.artifacts"])
def test_all_is_sorted_and_complete(name: str) -> None:
    module = importlib.import_module(name)
    exported = module.__all__
    assert exported == sorted(exported, key=lambda n: (not n.isupper(), n))  # constants first
    assert all(hasattr(module, n) for n in exported)
    assert all(not n.startswith("_") for n in exported)


def test_link_errors_also_subclass_the_matching_built_in() -> None:
    assert issubclass(LinkError, OSError)
    assert issubclass(BrokerUnavailable, ConnectionError)
    assert issubclass(ConnectionLost, ConnectionError)
    assert issubclass(PublishTimeout, TimeoutError)
    assert issubclass(IntegrityError, ArtifactError)
    for error in (BrokerUnavailable, ConnectionLost, PublishTimeout, ShardError, ArtifactError):
        assert issubclass(error, LinkError)
    assert str(PublishTimeout("no ack within 2s")) == "no ack within 2s"


def test_the_error_tree_in_the_docstring_names_every_error() -> None:
    tree = importlib.import_module("link._errors").__doc__ or ""
    for name in link.__all__:
        if isinstance(getattr(link, name), type) and issubclass(getattr(link, name), LinkError):
            assert name in tree
