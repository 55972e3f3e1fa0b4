"""How big and how costly a model is: parameters, multiply-accumulates, output stride and output shape.

``summary(model, input_size)`` runs the model once on zeros (eval mode, no
graph) while recording what each layer receives and returns, and counts:

- **parameters**, total and trainable (a shared tensor once);
- **MACs** (multiply-accumulates) of one forward pass at that size, by
  layer type:

  - Conv2d: one per weight tap per output value,
    N·C_out·H_out·W_out · (C_in/groups)·k_h·k_w; the bias adds are not counted;
  - Linear: one per weight per output row, N·out·in;
  - BatchNorm: one per element (at inference BN is x·scale + shift);
  - ReLU, pooling, resizing, additions and concatenations: not counted (they
    move memory more than they compute).

  **FLOPs = 2 × MACs** (a multiply and an add each), the convention of most
  papers and tools;
- the **output stride** (input size ÷ final backbone feature size, DeepLab's
  OS) and the output shape.

Atrous convolution is why DeepLab's cost depends so much on the output
stride: at OS 8 the last stages run on 4× (OS 16) or 16× (OS 32) as many
positions with the same weights, and the summary shows it.
"""
from dataclasses import dataclass, field

from minidl import nn
from minidl.tensor import Tensor, no_grad, zeros

HEADER = ("Submodule", "Type", "Output shape", "Parameters", "MACs")


def _conv_macs(conv, inputs, output):
    kernel_h, kernel_w = conv.kernel_size
    return output.numel() * (conv.in_channels // conv.groups) * kernel_h * kernel_w


def _linear_macs(linear, inputs, output):
    return output.numel() * linear.in_features


def _norm_macs(norm, inputs, output):
    return inputs[0].numel()


MAC_COUNTERS = {nn.Conv2d: _conv_macs, nn.Linear: _linear_macs, nn.BatchNorm1d: _norm_macs, nn.BatchNorm2d: _norm_macs}


@dataclass
class Row:
    """One top-level submodule: its name, type, output shape (the "out" of a backbone), parameters and MACs."""

    name: str
    type: str
    output_shape: tuple = None
    parameters: int = 0
    macs: int = 0


@dataclass
class Summary:
    """What ``summary`` measured: totals for the whole model, and one ``Row`` per top-level submodule."""

    input_shape: tuple
    output_shape: tuple
    output_stride: float
    total_parameters: int
    trainable_parameters: int
    macs: int
    rows: list = field(default_factory=list)

    @property
    def flops(self):
        return 2 * self.macs

    def __str__(self):
        cells = [(r.name, r.type, str(r.output_shape), f"{r.parameters:,}", f"{r.macs:,}") for r in self.rows]
        lines = [HEADER] + cells
        widths = [max(len(line[i]) for line in lines) for i in range(len(HEADER))]
        table = ["  ".join(cell.ljust(w) if i < 3 else cell.rjust(w) for i, (cell, w) in enumerate(zip(line, widths)))
                 for line in lines]
        table.insert(1, "-" * len(table[0]))
        return "\n".join(table + [
            f"Parameters: {self.total_parameters:,} ({self.trainable_parameters:,} trainable)",
            f"MACs: {self.macs:,} (FLOPs = 2 × MACs = {self.flops:,}) for input {self.input_shape}",
            f"Output: {self.output_shape}, output stride {self.output_stride}",
        ])


def _shape(output):
    """The shape of a module's output; for a backbone's dict, of its final features ("out")."""
    if isinstance(output, dict):
        output = output.get("out")
    return tuple(output.shape) if isinstance(output, Tensor) else None


def output_stride(input_hw, feature_hw):
    """The power of two s with ceil(H/s), ceil(W/s) = the feature size, else the plain ratio H / h.

    DeepLab's strided convs pad so that a stride-s network maps H to ceil(H/s),
    which makes 513 → 33 and 33 → 3 both OS 16, where the ratio alone says 15.5 and 11.
    """
    for power in range(max(input_hw).bit_length() + 1):
        stride = 2 ** power
        if all(-(-size // stride) == feature for size, feature in zip(input_hw, feature_hw)):
            return stride
    return input_hw[0] / feature_hw[0]


class _Recorder:
    """Wraps the forward of chosen modules (an instance attribute over the class's) to see each call's in and out."""

    def __init__(self):
        self.wrapped = []

    def watch(self, module, on_call):
        forward = module.forward

        def recorded(*inputs, **options):
            output = forward(*inputs, **options)
            on_call(inputs, output)
            return output

        module.forward = recorded
        self.wrapped.append(module)

    def restore(self):
        for module in self.wrapped:
            vars(module).pop("forward", None)  # the class's forward shows through again (once if wrapped twice)


def _adding_macs(row, module, counter):
    def on_call(inputs, output):
        row.macs += counter(module, inputs, output)
    return on_call


def _setting_shape(row):
    def on_call(inputs, output):
        row.output_shape = _shape(output)
    return on_call


def _mac_counter(module):
    return next((count for kind, count in MAC_COUNTERS.items() if isinstance(module, kind)), None)


def _run(model, images, parts, rows):
    """One forward pass with each part's MACs and output shape recorded; returns the output and backbone features."""
    recorder, features = _Recorder(), []
    for name, module in model.named_modules():
        counter = _mac_counter(module)
        if counter is not None:  # a leaf: within a top-level part, or the model itself
            recorder.watch(module, _adding_macs(rows[name.split(".")[0]], module, counter))
    for name, module in parts.items():
        recorder.watch(module, _setting_shape(rows[name]))
    if isinstance(getattr(model, "backbone", None), nn.Module):
        recorder.watch(model.backbone, lambda inputs, output: features.append(_shape(output)))
    try:
        with no_grad():
            return model(images), features
    finally:
        recorder.restore()


def summary(model, input_size):
    """Parameters, MACs (FLOPs = 2 × MACs), output stride and output shape of ``model`` at ``input_size``.

    ``input_size`` is (C, H, W) for one image, or (N, C, H, W). The model runs
    once in eval mode (so BN uses its running statistics and any batch size
    works) and is left in the modes it had. ``print(summary(...))`` shows a
    table with one row per top-level submodule.
    """
    input_shape = (1, *input_size) if len(input_size) == 3 else tuple(input_size)
    parts = dict(model.named_children()) or {"": model}
    rows = {name: Row(name or "(model)", type(module).__name__, parameters=_count(module.parameters()))
            for name, module in parts.items()}
    first = next(model.parameters(), None)
    images = zeros(*input_shape, **({} if first is None else {"dtype": first.dtype, "device": first.device}))
    modes = {module: module.training for module in model.modules()}
    model.eval()
    try:
        output, features = _run(model, images, parts, rows)
    finally:
        for module, training in modes.items():
            module.training = training
    output_shape = _shape(output)
    final = features[-1] if features else output_shape
    return Summary(
        input_shape=input_shape,
        output_shape=output_shape,
        output_stride=output_stride(input_shape[2:], final[2:]),
        total_parameters=_count(model.parameters()),
        trainable_parameters=_count(p for p in model.parameters() if p.requires_grad),
        macs=sum(row.macs for row in rows.values()),
        rows=list(rows.values()),
    )


def _count(parameters):
    return sum(p.numel() for p in parameters)
