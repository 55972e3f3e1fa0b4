"""Batches for training and evaluation, reproducible down to the iteration.

Everything random is a pure function of ``seed``:

- the order of epoch ``e`` is ``permutation(len(dataset))`` drawn from ``SeedSequence((seed, 0, e))``;
- item ``index`` in epoch ``e`` is augmented with its own generator, ``SeedSequence((seed, 1, e, index))``,
  passed to the data set's ``get(index, rng)`` and then to the loader's ``transform``.

So batch ``b`` of epoch ``e`` is the same whenever and however it is made: in order, alone, by worker
threads, or after a restart. Training by iterations (DeepLab's poly schedule counts iterations, not
epochs) reads ``loader.batches(start_iteration=k)``: iteration ``k`` is batch ``k % len(loader)`` of epoch
``k // len(loader)``, and the stream is exactly the tail of the uninterrupted one. Epoch-style loops use
``for images, labels in loader`` with ``state_dict()`` / ``load_state_dict()`` to resume mid-epoch.

A data set is anything with ``__len__`` and ``__getitem__`` returning ``(image (3, H, W), label (H, W))``;
if it also has ``get(index, rng)`` (the minidl data sets do), the loader calls that so the data set's own
transform draws from the item's generator too.
"""
import collections
import concurrent.futures
import contextlib
import itertools

import numpy as np

from minidl import backend
from minidl.backend import Device
from minidl.tensor import Tensor

_ORDER, _ITEM = 0, 1


class DataLoader:
    """Reproducible, resumable batches of ``(images (N, 3, H, W) float32, labels (N, H, W) int64)``.

    Args:
        dataset: see the module docstring.
        batch_size: items per batch.
        shuffle: a new random order each epoch (a pure function of (seed, epoch)); else 0, 1, 2, ...
        drop_last: drop the last, smaller batch of an epoch (training); keep it for evaluation.
        seed: the seed of order and augmentation (an int >= 0).
        num_workers: 0 loads items in the calling thread; n > 0 uses n threads (same results, in order).
        transform: ``t(image, label, rng)`` applied to each item after the data set's own (see
            ``minidl.data.transforms``).
        progress: show a tqdm progress bar.
        device: None for NumPy arrays; 'cpu' or 'cuda' for minidl Tensors on that device. On a GPU each
            batch is collated into pinned host memory and copied on a side stream one batch ahead, so the
            copy of the next batch overlaps the step that uses this one (see ``_PinnedCopies``).
        prefetch: with workers, how many batches are loaded ahead (default 2).
    """

    def __init__(self, dataset, batch_size=1, shuffle=True, drop_last=True, seed=0, num_workers=0,
                 transform=None, progress=False, device=None, prefetch=2):
        if not hasattr(dataset, "__len__") or not hasattr(dataset, "__getitem__"):
            raise TypeError(f"DataLoader: dataset must have __len__ and __getitem__, got {type(dataset).__name__}")
        if int(batch_size) != batch_size or batch_size < 1:
            raise ValueError(f"DataLoader: batch_size must be a positive int, got {batch_size!r}")
        if int(seed) != seed or seed < 0:
            raise ValueError(f"DataLoader: seed must be an int >= 0, got {seed!r}")
        if int(num_workers) != num_workers or num_workers < 0:
            raise ValueError(f"DataLoader: num_workers must be an int >= 0, got {num_workers!r}")
        if transform is not None and not callable(transform):
            raise TypeError(f"DataLoader: transform must be callable, got {transform!r}")
        self.dataset = dataset
        self.batch_size = int(batch_size)
        self.shuffle = bool(shuffle)
        self.drop_last = bool(drop_last)
        self.seed = int(seed)
        self.num_workers = int(num_workers)
        self.transform = transform
        self.progress = progress
        self.device = device
        self.prefetch = max(1, int(prefetch))
        if len(self) == 0:
            raise ValueError(
                f"DataLoader: a data set of {len(dataset)} items gives no batch of {self.batch_size}"
                + (" with drop_last=True" if self.drop_last else "")
            )
        self.epoch = 0  # where iteration over the loader (``for batch in loader``) continues
        self.batch = 0

    # ----------------------------------------------------------------- the pure functions

    def __len__(self):
        """Batches per epoch."""
        n = len(self.dataset)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def order(self, epoch):
        """The data set indices in the order epoch ``epoch`` visits them."""
        n = len(self.dataset)
        if not self.shuffle:
            return np.arange(n)
        return np.random.default_rng([self.seed, _ORDER, int(epoch)]).permutation(n)

    def batch_indices(self, epoch, batch):
        """The data set indices of batch ``batch`` of epoch ``epoch``."""
        if not 0 <= batch < len(self):
            raise IndexError(f"batch {batch} out of range: an epoch has {len(self)} batches")
        return self.order(epoch)[batch * self.batch_size : (batch + 1) * self.batch_size]

    def item_rng(self, epoch, index):
        """The generator that augments data set item ``index`` in epoch ``epoch``."""
        return np.random.default_rng([self.seed, _ITEM, int(epoch), int(index)])

    def position(self, iteration):
        """(epoch, batch) of a global iteration number."""
        if iteration < 0:
            raise ValueError(f"iteration must be >= 0, got {iteration}")
        return divmod(int(iteration), len(self))

    def load_item(self, epoch, index):
        """Item ``index`` as it appears in epoch ``epoch``: the data set's item, then ``transform``."""
        rng = self.item_rng(epoch, index)
        get = getattr(self.dataset, "get", None)
        item = get(int(index), rng) if get is not None else self.dataset[int(index)]
        try:
            image, label = item
        except (TypeError, ValueError):
            raise TypeError(
                f"DataLoader: item {index} of {type(self.dataset).__name__} is not an (image, label) pair"
            ) from None
        if self.transform is not None:
            image, label = self.transform(image, label, rng)
        return image, label

    def load_batch(self, epoch, batch):
        """Batch ``batch`` of epoch ``epoch``, made in this thread."""
        indices = self.batch_indices(epoch, batch)
        return self._collate(indices, [self.load_item(epoch, i) for i in indices])

    # ----------------------------------------------------------------- streams

    def batches(self, start_iteration=0, num_iterations=None):
        """Batches for global iterations start_iteration, start_iteration + 1, ... across epochs (endless
        unless ``num_iterations`` is given): exactly what an uninterrupted run sees from that iteration.
        Does not touch the loader's own position (``epoch``, ``batch``)."""
        start = int(start_iteration)
        if start < 0:
            raise ValueError(f"start_iteration must be >= 0, got {start_iteration}")
        if num_iterations is not None and num_iterations < 0:
            raise ValueError(f"num_iterations must be >= 0 or None, got {num_iterations}")
        iterations = itertools.count(start) if num_iterations is None else range(start, start + int(num_iterations))
        stream = self._stream(self.position(k) for k in iterations)
        if self.progress:
            stream = self._bar(stream, total=num_iterations, desc="iterations", initial=0)
        return stream

    def epoch_batches(self, epoch, start=0):
        """The batches of one epoch from batch ``start`` on (does not touch the loader's position)."""
        if not 0 <= start <= len(self):
            raise ValueError(f"start must be in 0..{len(self)}, got {start}")
        return self._stream((int(epoch), b) for b in range(int(start), len(self)))

    def __iter__(self):
        """The rest of the current epoch, from the loader's position; the position moves on as batches are
        handed out (it names the next batch, so ``state_dict()`` taken while a batch is in use resumes
        after it), and to the next epoch at the end."""
        epoch, start = self.epoch, self.batch
        stream = self._stream((epoch, b) for b in range(start, len(self)))
        if self.progress:
            stream = self._bar(stream, total=len(self), desc=f"epoch {epoch}", initial=start)
        for b, item in enumerate(stream, start):
            self.epoch, self.batch = (epoch + 1, 0) if b + 1 == len(self) else (epoch, b + 1)
            yield item

    # ----------------------------------------------------------------- resuming

    @property
    def iteration(self):
        """The global iteration number of the next batch ``for batch in loader`` hands out."""
        return self.epoch * len(self) + self.batch

    def seek(self, iteration):
        """Make ``for batch in loader`` continue at global iteration ``iteration``."""
        self.epoch, self.batch = self.position(iteration)

    def set_epoch(self, epoch):
        """Start of epoch ``epoch`` (as ``DistributedSampler.set_epoch``)."""
        self.epoch, self.batch = int(epoch), 0

    def state_dict(self):
        return {
            "seed": self.seed,
            "epoch": self.epoch,
            "batch": self.batch,
            "iteration": self.iteration,
            "dataset_size": len(self.dataset),
            "batch_size": self.batch_size,
            "shuffle": self.shuffle,
            "drop_last": self.drop_last,
        }

    def load_state_dict(self, state):
        """Continue where ``state`` (from ``state_dict()``) left off. The seed, data set size, batch size,
        shuffle and drop_last must match: with any of them changed the batches would not be the same."""
        mismatched = [
            f"{key} {state[key]!r} (this loader: {mine!r})"
            for key, mine in (("seed", self.seed), ("dataset_size", len(self.dataset)),
                              ("batch_size", self.batch_size), ("shuffle", self.shuffle),
                              ("drop_last", self.drop_last))
            if key in state and state[key] != mine
        ]
        if mismatched:
            raise ValueError("DataLoader.load_state_dict: cannot resume, the state has " + "; ".join(mismatched))
        if "epoch" in state and "batch" in state:
            self.epoch, self.batch = int(state["epoch"]), int(state["batch"])
            if not 0 <= self.batch <= len(self):
                raise ValueError(f"DataLoader.load_state_dict: batch {self.batch} out of range 0..{len(self)}")
            if self.batch == len(self):
                self.epoch, self.batch = self.epoch + 1, 0
        elif "iteration" in state:
            self.seek(state["iteration"])
        else:
            raise ValueError("DataLoader.load_state_dict: the state has neither 'epoch'/'batch' nor 'iteration'")

    # ----------------------------------------------------------------- machinery

    def _stream(self, positions):
        loaded = self._loaded(positions)
        try:
            if self.device is None or Device(self.device).type == "cpu":
                for indices, items in loaded:
                    yield self._to_device(self._collate(indices, items))
            else:
                yield from self._through_pinned_copies(loaded)
        finally:
            loaded.close()

    def _through_pinned_copies(self, loaded):
        """The batches on a GPU, one ahead: the copy of the next is under way while the consumer steps on
        the one handed out."""
        copies = _PinnedCopies(self.device)
        ahead = None
        try:
            for indices, items in loaded:
                batch = copies.start(self._collate(indices, items, staging=copies.staging))
                if ahead is not None:
                    yield copies.hand_over(*ahead)
                ahead = batch
            if ahead is not None:
                yield copies.hand_over(*ahead)
        finally:
            copies.finish()

    def _loaded(self, positions):
        """(indices, items) of the batch at each position, loaded in this thread or by the workers, in order."""
        if self.num_workers == 0:
            for epoch, batch in positions:
                indices = self.batch_indices(epoch, batch)
                yield indices, [self.load_item(epoch, i) for i in indices]
            return
        pool = concurrent.futures.ThreadPoolExecutor(self.num_workers, thread_name_prefix="minidl-data")
        pending = collections.deque()
        positions = iter(positions)

        def submit():  # queue the items of the next batch, if there is one
            position = next(positions, None)
            if position is not None:
                indices = self.batch_indices(*position)
                pending.append((indices, [pool.submit(self.load_item, position[0], i) for i in indices]))

        try:
            for _ in range(self.prefetch):
                submit()
            while pending:
                indices, futures = pending.popleft()
                items = [f.result() for f in futures]
                submit()
                yield indices, items
        finally:
            pool.shutdown(wait=False, cancel_futures=True)

    def _collate(self, indices, items, staging=None):
        """The items as one (images float32, labels int64) pair: new arrays, or the arrays that
        ``staging(images_shape, labels_shape)`` gives, filled with the same values."""
        images = [np.asarray(image) for image, _ in items]
        labels = [np.asarray(label) for _, label in items]
        for i, image, label in zip(indices, images, labels):
            if image.ndim != 3 or label.ndim != 2 or image.shape[1:] != label.shape:
                raise ValueError(
                    f"DataLoader: item {i} has image {image.shape} and label {label.shape}; "
                    "expected (C, H, W) and (H, W)"
                )
            if image.shape != images[0].shape:
                raise ValueError(
                    f"DataLoader: items of a batch must share one size, but item {indices[0]} is "
                    f"{images[0].shape} and item {i} is {image.shape}; add PadToSize/RandomCrop "
                    "(minidl.data.transforms) to the transform, or use batch_size=1"
                )
        if staging is None:
            return (np.stack(images).astype(np.float32, copy=False),
                    np.stack(labels).astype(np.int64, copy=False))
        batch = staging((len(images), *images[0].shape), (len(labels), *labels[0].shape))
        for out, arrays in zip(batch, (images, labels)):
            _stack_into(out, arrays)
        return batch

    def _to_device(self, batch):
        if self.device is None:
            return batch
        import minidl

        images, labels = batch
        return minidl.tensor(images, device=self.device), minidl.tensor(labels, device=self.device)

    def _bar(self, stream, total, desc, initial):
        from tqdm.auto import tqdm

        with tqdm(stream, total=total, desc=desc, initial=initial, unit="batch", leave=False) as bar:
            yield from bar

    def __repr__(self):
        return (f"DataLoader({type(self.dataset).__name__} of {len(self.dataset)}, batch_size={self.batch_size}, "
                f"shuffle={self.shuffle}, drop_last={self.drop_last}, seed={self.seed}, "
                f"num_workers={self.num_workers})")


def _stack_into(out, arrays):
    """``np.stack(arrays).astype(out.dtype)`` written into ``out``, value for value."""
    if len({a.dtype for a in arrays}) == 1:
        np.stack(arrays, out=out, casting="unsafe")  # each value cast once, as astype casts it
    else:  # items of mixed dtypes: promoted together first, as np.stack does, then cast
        np.copyto(out, np.stack(arrays), casting="unsafe")


class _PinnedCopies:
    """The loader's way to a GPU: pinned staging buffers, copies on a side stream, a wait on the GPU.

    A batch is collated straight into one of a few reusable staging buffers in pinned (page-locked) host
    memory, the only memory a GPU copies from asynchronously. Its copy runs on a stream of its own, so it
    overlaps the step the GPU is computing, and an event recorded after it is what the consumer's stream
    waits for before using the batch: a wait on the GPU, never on the host. A staging buffer is written
    again only after its last copy is done; waiting for that is the one host wait, and only when every
    buffer is still being copied (the loader is then far ahead of the GPU).
    """

    SLOTS = 3  # one being filled, one whose copy may still run, one spare

    def __init__(self, device):
        self.cp = backend.cupy()
        self.device = Device(device)
        with self._on_device():
            self.stream = self.cp.cuda.Stream(non_blocking=True)
        self.slots = [_StagingBuffer() for _ in range(self.SLOTS)]
        self.turn = 0

    def _on_device(self):
        return self.cp.cuda.Device(self.device.index) if self.device.index is not None else contextlib.nullcontext()

    def staging(self, images_shape, labels_shape):
        """NumPy views of float32 images and int64 labels of these shapes in the next free staging buffer."""
        slot = self.slots[self.turn]
        if slot.copied is not None and not slot.copied.done:
            slot.copied.synchronize()
        labels_bytes = 8 * int(np.prod(labels_shape))  # int64 labels first: the float32 images after them stay aligned
        size = labels_bytes + 4 * int(np.prod(images_shape))
        if slot.size < size:
            slot.memory, slot.size = self.cp.cuda.alloc_pinned_memory(size), size
        labels = np.frombuffer(slot.memory, np.int64, int(np.prod(labels_shape)), 0).reshape(labels_shape)
        images = np.frombuffer(slot.memory, np.float32, int(np.prod(images_shape)), labels_bytes)
        return images.reshape(images_shape), labels

    def start(self, staged):
        """Start copying the staged batch to the GPU: its arrays there, and the event that marks them ready."""
        with self._on_device():
            arrays = tuple(self.cp.empty(host.shape, host.dtype) for host in staged)
            # The memory comes from the pool of the consumer's stream, which may still have work queued that
            # reads it from before it was freed: the copy waits for that work, on the GPU.
            self.stream.wait_event(self.cp.cuda.get_current_stream().record())
            for array, host in zip(arrays, staged):
                array.set(host, stream=self.stream)
            copied = self.stream.record()
        slot = self.slots[self.turn]
        slot.copied, self.turn = copied, (self.turn + 1) % len(self.slots)
        return arrays, copied

    def hand_over(self, arrays, copied):
        """The batch as Tensors, its use on the consumer's current stream ordered after its copy."""
        with self._on_device():
            self.cp.cuda.get_current_stream().wait_event(copied)
        return tuple(Tensor(array) for array in arrays)

    def finish(self):
        """Wait for the copies still running: they read staging buffers that, once this object is gone,
        go back to CuPy's pool of pinned memory, where the next owner could overwrite them."""
        self.stream.synchronize()


class _StagingBuffer:
    memory, size, copied = None, 0, None  # pinned bytes, their count, the event after their last copy
