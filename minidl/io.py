"""Checkpoints on disk, and state_dicts to and from PyTorch.

The format is NumPy's ``.npz``: a zip archive of ``.npy`` arrays, plus one
entry, ``__minidl_manifest__``, holding JSON that names the structure (nested
dicts, lists, numbers, strings) and points at the arrays. Why not pickle, as
``torch.save`` does: unpickling a file runs whatever code the file names, so
loading a checkpoint from elsewhere would mean trusting it. Here ``load``
reads arrays with ``allow_pickle=False`` and parses the rest as JSON, so a
foreign or hostile file can fail to load but never execute anything; and the
arrays stay readable with NumPy alone (``numpy.load(path)``).

``save`` writes atomically: into a temporary file in the same directory,
flushed to disk, then renamed over the target. A crash mid-save leaves the
previous checkpoint whole, never a half-written one.
"""
import errno
import json
import os
import uuid
import zipfile
import zlib
from collections import OrderedDict

import numpy as np

from minidl import backend
from minidl.nn.module import Module
from minidl.tensor import Tensor

FORMAT, VERSION = "minidl-checkpoint", 1
MANIFEST = "__minidl_manifest__"
_ZIP_MAGIC = b"PK\x03\x04"
_PLAIN = (type(None), bool, int, float, str)


class CheckpointError(ValueError):
    """A file that is not a readable minidl checkpoint: foreign, truncated or corrupted."""


def to_numpy(value):
    """``value`` as a NumPy array if it is array-like (minidl Tensor, NumPy/CuPy array, torch tensor), else None.

    A torch tensor is recognised by its ``detach`` method, so minidl needs no
    torch import to read one.
    """
    if isinstance(value, Tensor):
        return backend.to_numpy(value.data)
    if isinstance(value, np.ndarray) or backend.is_cupy_array(value):
        return backend.to_numpy(value)
    if hasattr(value, "detach"):
        return value.detach().cpu().numpy()
    return None


# ---------------------------------------------------------------- the manifest: a JSON tree over named arrays
def _encode(value, arrays, where):
    """The JSON node for ``value``; its arrays go into ``arrays`` under names "0", "1", ..."""
    if isinstance(value, dict):
        for key in value:
            if not isinstance(key, (str, int)) or isinstance(key, bool):
                raise TypeError(f"save: key {key!r} at {where or 'the top'} is of type {type(key).__name__}; "
                                "checkpoint keys must be strings or integers")
        return {"dict": [[key, _encode(v, arrays, f"{where}[{key!r}]")] for key, v in value.items()]}
    if isinstance(value, (list, tuple)):
        items = [_encode(v, arrays, f"{where}[{i}]") for i, v in enumerate(value)]
        return {"tuple" if isinstance(value, tuple) else "list": items}
    if isinstance(value, _PLAIN):
        return {"value": value}
    array = np.asarray(value) if isinstance(value, np.generic) else to_numpy(value)
    if array is None or array.dtype.hasobject:
        raise TypeError(f"save: cannot store a value of type {type(value).__name__} at {where or 'the top'}; "
                        "checkpoints hold "
                        "arrays, numbers, strings, None, and dicts, lists and tuples of them")
    name = str(len(arrays))
    arrays[name] = array
    return {"scalar" if isinstance(value, np.generic) else "array": name}


def _decode(node, archive):
    """The value a manifest node describes, reading its arrays from the open archive."""
    if not isinstance(node, dict) or len(node) != 1:
        raise CheckpointError(f"malformed manifest node {node!r}")
    (kind, content), = node.items()
    if kind == "dict":
        return {key: _decode(child, archive) for key, child in content}
    if kind in ("list", "tuple"):
        items = [_decode(child, archive) for child in content]
        return items if kind == "list" else tuple(items)
    if kind == "value":
        return content
    if kind in ("array", "scalar"):
        array = archive[content]
        return array if kind == "array" else array[()]  # [()] turns a 0-d array back into a NumPy scalar
    raise CheckpointError(f"unknown manifest node kind {kind!r}")


# ---------------------------------------------------------------- saving
def write_atomically(path, write):
    """Call ``write(file)`` on a temporary file beside ``path``, make it durable, then rename it to ``path``."""
    directory = os.path.dirname(os.path.abspath(path))
    temporary = os.path.join(directory, f".{os.path.basename(path)}.{uuid.uuid4().hex}.tmp")
    try:
        with open(temporary, "xb") as file:
            write(file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.remove(temporary)
        raise
    if hasattr(os, "O_DIRECTORY"):  # make the rename itself durable (POSIX)
        handle = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(handle)
        finally:
            os.close(handle)


def save(model_or_state, path):
    """Write a Module's state_dict, or a dict of arrays, numbers and nested dicts/lists, to ``path``.

    A training checkpoint is a dict such as ``{"model": model.state_dict(),
    "optimizer": optimizer.state_dict(), "iteration": 1000}``. Tensors and
    GPU arrays are stored as NumPy arrays; NumPy scalars stay NumPy scalars.
    """
    state = model_or_state.state_dict() if isinstance(model_or_state, Module) else model_or_state
    if not isinstance(state, dict):
        raise TypeError(f"save: expected a Module or a dict, got {type(model_or_state).__name__}")
    arrays = {}
    manifest = {"format": FORMAT, "version": VERSION, "tree": _encode(state, arrays, "")}
    arrays[MANIFEST] = np.array(json.dumps(manifest))
    write_atomically(os.fspath(path), lambda file: np.savez(file, **arrays))


# ---------------------------------------------------------------- loading
def _check_looks_like_a_checkpoint(path):
    if not os.path.isfile(path):
        raise FileNotFoundError(errno.ENOENT, "no checkpoint file", path)
    with open(path, "rb") as file:
        head = file.read(len(_ZIP_MAGIC))
    if head != _ZIP_MAGIC:
        what = "it is empty" if not head else "it is not a NumPy .npz (zip) archive"
        raise CheckpointError(f"{path} is not a minidl checkpoint: {what}")


def _read_manifest(path, archive):
    if MANIFEST not in archive.files:
        raise CheckpointError(f"{path} is a zip archive but not a minidl checkpoint: it has no {MANIFEST} entry "
                              "(a PyTorch file? read it with torch.load, then from_torch_state_dict)")
    manifest = json.loads(str(archive[MANIFEST]))
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a minidl checkpoint: its manifest does not say format {FORMAT!r}")
    if manifest.get("version") != VERSION:
        raise CheckpointError(f"{path} is a minidl checkpoint of version {manifest.get('version')!r}; "
                              f"this minidl reads version {VERSION}")
    return manifest


def load(path):
    """The state saved at ``path`` by ``save``: nested dicts (and lists) of NumPy arrays and plain values.

    A missing file raises FileNotFoundError; a foreign, truncated or corrupted
    one raises CheckpointError; both name the file. Nothing in the file is
    ever executed.
    """
    path = os.fspath(path)
    _check_looks_like_a_checkpoint(path)
    try:
        with np.load(path, allow_pickle=False) as archive:
            return _decode(_read_manifest(path, archive)["tree"], archive)
    except CheckpointError:
        raise
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError, KeyError, TypeError) as error:
        raise CheckpointError(f"{path} is truncated or corrupted: {type(error).__name__}: {error}") from error


# ---------------------------------------------------------------- PyTorch state_dicts
def from_torch_state_dict(state_dict):
    """A PyTorch state_dict (torch tensors, or anything array-like) as an OrderedDict of NumPy arrays.

    The arrays are copies, so the result does not change with the torch model.
    The keys stay as they are: minidl's modules use PyTorch's names.
    """
    result = OrderedDict()
    for key, value in state_dict.items():
        array = to_numpy(value)
        if array is None:
            raise TypeError(f"from_torch_state_dict: the value of {key!r} is of type {type(value).__name__}, "
                            "not a tensor "
                            "(pass the state_dict itself, e.g. checkpoint['model'])")
        result[key] = np.array(array, copy=True, order="C")
    return result


def to_torch_state_dict(state, as_tensor=None):
    """A minidl state_dict (or Module) for ``torch.nn.Module.load_state_dict``.

    PyTorch wants torch tensors, and minidl never imports torch: pass
    ``as_tensor=torch.from_numpy`` (or ``torch.as_tensor``) to get them.
    Without it the values are C-contiguous NumPy copies.
    """
    arrays = from_torch_state_dict(state.state_dict() if isinstance(state, Module) else state)
    return OrderedDict((key, as_tensor(array)) for key, array in arrays.items()) if as_tensor else arrays
