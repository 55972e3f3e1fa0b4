"""Figures of the book whose drawing code is longer than what a chapter should show inline.

Each function draws what a chapter has already computed; the measurement stays in
the chapter, beside the text that explains it, and only the matplotlib calls
live here. A chapter imports this module as ``from book import plots`` with the
repository's root on ``sys.path``, or as ``import plots`` with ``book/`` on it.
"""
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.collections import LineCollection
from matplotlib.patches import Rectangle

import minidl
from minidl.data import colorize


def draw_graph(order, leaf_names, ax):
    """The recorded graph of chapter 1: ``order`` is ``_topological_order`` of the output's node.

    Operations are placed in columns by their distance from the output and
    numbered in the order ``backward()`` visits them; leaves (tensors without
    a node) sit above, labelled with ``leaf_names`` (id(tensor) → name, else
    'input') and their shape.
    """
    depth = {order[0]: 0}
    edges = []
    for node in order:
        for parent in node.inputs:
            if parent is None:
                continue
            source = parent.grad_fn if parent.grad_fn is not None else parent
            depth[source] = max(depth.get(source, 0), depth[node] + 1)
            edges.append((source, node))
    columns = max(depth.values())
    placed = {}
    for level in range(columns + 1):
        ops = [item for item in depth if depth[item] == level and not isinstance(item, minidl.Tensor)]
        leaves = [item for item in depth if depth[item] == level and isinstance(item, minidl.Tensor)]
        placed.update({item: (columns - level, -1.1 * k) for k, item in enumerate(ops)})
        placed.update({item: (columns - level, 1.2 + 1.1 * k) for k, item in enumerate(leaves)})
    for source, target in edges:
        ax.annotate("", xy=placed[target], xytext=placed[source],
                    arrowprops=dict(arrowstyle="->", color="gray", shrinkA=20, shrinkB=20))
    for item, (px, py) in placed.items():
        if isinstance(item, minidl.Tensor):
            text, colour = f"{leaf_names.get(id(item), 'input')}\n{item.shape}", "#d8ecd8"
        else:
            text, colour = f"{order.index(item) + 1}. {item.function.__name__}", "#dde6f5"
        ax.text(px, py, text, ha="center", va="center", fontsize=10,
                bbox=dict(boxstyle="round,pad=0.4", fc=colour, ec="gray"))
    ax.set_xlim(-0.7, columns + 0.7)
    ax.set_ylim(min(y for _, y in placed.values()) - 1, max(y for _, y in placed.values()) + 1)
    ax.axis("off")


def receptive_field_grid(axes, support, erf, fields, mass_sides, trials):
    """Chapter 3's receptive fields: per stack (a column of ``axes``), the gradient support and the ERF.

    ``support`` and ``erf`` map each stack's name to a gradient image (the ERF
    averaged over ``trials`` random networks); ``fields`` to its receptive
    field from the recursion (drawn dashed red on both); ``mass_sides`` to
    {fraction: side of the centred square holding that fraction of the ERF's
    mass}, outlined on the ERF.
    """
    for column, name in enumerate(support):
        field, side_of_image = fields[name], support[name].shape[0]
        top, bottom = axes[0, column], axes[1, column]
        top.imshow(support[name] > 0, cmap="Blues", vmin=0, vmax=1.3)
        top.set_title(f"{name}: gradient support = RF, {field}×{field}")
        bottom.imshow(erf[name], cmap="magma")
        for (fraction, side), colour in zip(mass_sides[name].items(), ("w", "c")):
            bottom.add_patch(centred_square(side_of_image, side, ec=colour, lw=1.2,
                                            label=f"{fraction:.0%} of mass: {side}×{side}"))
        bottom.legend(loc="lower left", fontsize=8)
        bottom.set_title(f"{name}: ERF (mean of {trials} random nets)")
        for ax in (top, bottom):
            ax.add_patch(centred_square(side_of_image, field, ec="tab:red", ls="--", lw=1))
            ax.set_xticks([])
            ax.set_yticks([])


def centred_square(image_side, side, **style):
    """An unfilled square of ``side`` pixels centred on an image_side² image, as imshow places pixels."""
    corner = image_side // 2 - side / 2
    return Rectangle((corner, corner), side, side, fill=False, **style)


def im2col_picture(axes, image, cols, dilation, picks):
    """Chapter 2's im2col: ``image`` (H×W, each pixel its index) with the 3×3 windows, at ``dilation``, of the output
    positions ``picks`` outlined (left), and ``cols`` with those windows' columns outlined in the same colours (right).
    """
    size, h_out = image.shape[0], image.shape[0] - 2 * dilation
    left, right = axes
    left.imshow(image, cmap="Greys", alpha=0.25)
    for (py, px), value in np.ndenumerate(image):
        left.text(px, py, int(value), ha="center", va="center", fontsize=8)
    right.imshow(cols, cmap="Greys", alpha=0.25, aspect="auto")
    for (row, column), value in np.ndenumerate(cols):
        right.text(column, row, int(value), ha="center", va="center", fontsize=8)
    for (oy, ox), colour in zip(picks, ("tab:red", "tab:blue")):
        for i in range(3):
            for j in range(3):
                left.add_patch(Rectangle((ox + j * dilation - 0.5, oy + i * dilation - 0.5), 1, 1,
                                         fill=False, ec=colour, lw=2))
        column = oy * h_out + ox
        right.add_patch(Rectangle((column - 0.5, -0.5), 1, 9, fill=False, ec=colour, lw=2.5))
        right.text(column, 9.1, f"out{(oy, ox)}", ha="center", va="top", color=colour, fontsize=8)
    left.set_title(f"input {size}×{size} (pixel = its index), 3×3 kernel, dilation {dilation}")
    right.set_title(f"cols = im2col(input): {cols.shape[0]} taps × {cols.shape[1]} output positions")
    right.set_xticks(range(cols.shape[1]))
    right.set_yticks(range(9), [f"tap {divmod(r, 3)}" for r in range(9)], fontsize=8)
    left.set_xticks([])
    left.set_yticks([])


def separable_cost(widths, marker_widths, measured):
    """Chapter 8's cost of a separable k×k convolution against a dense one: the formula 1/C_out + 1/k² over ``widths``
    for k = 3, 5, 7, its limit 1/k² dotted, and ``measured`` {(k, C_in): ratios at ``marker_widths``} as markers."""
    fig, ax = plt.subplots(figsize=(10, 5))
    for k, colour in ((3, "tab:blue"), (5, "tab:orange"), (7, "tab:green")):
        ax.plot(widths, 1 / widths + 1 / k**2, color=colour, label=f"{k}×{k}: 1/C_out + 1/{k * k}")
        ax.axhline(1 / k**2, color=colour, ls=":", lw=1)
        for ci, marker in ((16, "o"), (64, "x")):
            ax.plot(marker_widths, measured[k, ci], marker, color=colour, ms=7, mfc="none",
                    label=f"{k}×{k}, summary, C_in = {ci}" if k == 3 else None)
    for width, text in ((256, "v3+ ASPP / decoder: 256"), (728, "Xception middle flow: 728")):
        ax.axvline(width, color="gray", lw=0.8, ls="--")
        ax.text(width * 1.08, 0.97, text, rotation=90, color="gray", fontsize=9, va="top",
                transform=ax.get_xaxis_transform())
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set(xlabel="output channels C_out", ylabel="separable MACs ÷ dense MACs (= weights ratio)",
           title="Cost of a separable convolution relative to a dense one (dotted: the limit 1/k²)")
    ax.legend(fontsize=9, loc="lower left")
    plt.show()


def _picture(array):
    """What imshow should draw: a (H, W) label map in the class colours, a (3, H, W) image as (H, W, 3)."""
    array = np.asarray(array)
    if array.ndim == 2:
        return colorize(array)
    return array.transpose(1, 2, 0) if array.shape[0] == 3 else array


def label_grid(rows, legend, title, panel_width=3.0, panel_height=3.3):
    """Images, ground truths and predictions, one row per image: each row a list of (picture, caption) panels.

    A picture is a label map (H, W), drawn in the class colours, or an image ((3, H, W) as the data sets give it,
    or (H, W, 3)); ``legend`` holds the class patches.
    """
    columns = max(len(row) for row in rows)
    fig, axes = plt.subplots(len(rows), columns, figsize=(panel_width * columns, panel_height * len(rows)),
                             layout="constrained", squeeze=False)
    for row_axes, panels in zip(axes, rows):
        for ax, (picture, caption) in zip(row_axes, panels):
            ax.imshow(_picture(picture))
            ax.set_title(caption, fontsize=10)
        for ax in row_axes:
            ax.set_xticks([])
            ax.set_yticks([])
    fig.legend(handles=legend, loc="outside lower center", ncol=len(legend))
    fig.suptitle(title)
    plt.show()


def aspp_taps(panels, output_stride=8):
    """Chapter 4's ASPP-L taps: per panel (image as (3, H, W), rates), where each branch's 3×3 kernel reads for
    the centre feature of the map at ``output_stride``, over the image (grey beyond it: padding)."""
    fig, axes = plt.subplots(1, len(panels), figsize=(6.5 * len(panels), 6.4), layout="constrained")
    for ax, (image, rates) in zip(np.atleast_1d(axes), panels):
        side = image.shape[-1]
        cells = -(-side // output_stride)
        centre = (cells // 2) * output_stride  # the input pixel under the centre feature
        ax.imshow(_picture(image), extent=(-0.5, side - 0.5, side - 0.5, -0.5))
        ax.add_patch(Rectangle((-0.5, -0.5), side, side, fill=False, ec="k", lw=1.5))
        for rate, colour in zip(rates, ("tab:green", "tab:blue", "tab:orange", "tab:red")):
            step = rate * output_stride
            ys, xs = np.meshgrid(centre + np.array([-1, 0, 1]) * step, centre + np.array([-1, 0, 1]) * step,
                                 indexing="ij")
            ax.scatter(xs.ravel(), ys.ravel(), s=60, marker="s", color=colour, ec="k", zorder=3,
                       label=f"rate {rate}: taps {step} px apart")
            ax.add_patch(Rectangle((centre - step, centre - step), 2 * step, 2 * step, fill=False, ec=colour,
                                   ls="--", lw=1.2))
        reach = max(rates) * output_stride + 12
        ax.set_xlim(centre - reach, centre + reach)
        ax.set_ylim(centre + reach, centre - reach)
        ax.set(xlabel="x (input pixels)", ylabel="y (input pixels)",
               title=f"{side}×{side} image, OS {output_stride}: {cells}×{cells} feature map")
        ax.set_facecolor("0.92")
        ax.legend(loc="lower left", fontsize=9)
    fig.suptitle("Where the ASPP-L branches read, for the centre feature (grey: outside the image, i.e. padding)")
    plt.show()


def _outline(ax, label):
    """The boundaries of a label map as white lines along the pixel edges between two classes."""
    ys, xs = np.nonzero(label[:, 1:] != label[:, :-1])
    segments = [[(x + 0.5, y - 0.5), (x + 0.5, y + 0.5)] for y, x in zip(ys, xs)]
    ys, xs = np.nonzero(label[1:] != label[:-1])
    segments += [[(x - 0.5, y + 0.5), (x + 0.5, y + 0.5)] for y, x in zip(ys, xs)]
    ax.add_collection(LineCollection(segments, colors="white", linewidths=1.5), autolim=False)


def boundary_zooms(rows, legend, zoom):
    """Chapter 9's zooms: per row (image, label, (y, x) corner of the zoom × zoom window, title, [(prediction,
    caption)]), the image with the window marked, then the window of the image, the ground truth and each
    prediction, with the true boundaries drawn in white."""
    fig, axes = plt.subplots(len(rows), 3 + len(rows[0][4]), figsize=(16, 3.4 * len(rows)), layout="constrained",
                             squeeze=False)
    for row_axes, (image, label, (y, x), title, predictions) in zip(axes, rows):
        crop = np.s_[y:y + zoom, x:x + zoom]
        row_axes[0].imshow(_picture(image))
        row_axes[0].add_patch(Rectangle((x - 0.5, y - 0.5), zoom, zoom, fill=False, ec="yellow", lw=2))
        row_axes[0].set_title(title, fontsize=10)
        panels = [(image, "zoomed image"), (label, "ground truth"), *predictions]
        for ax, (picture, caption) in zip(row_axes[1:], panels):
            ax.imshow(_picture(picture)[crop], interpolation="nearest")
            ax.set_title(caption, fontsize=10)
            _outline(ax, label[crop])
        for ax in row_axes:
            ax.set_xticks([])
            ax.set_yticks([])
    fig.legend(handles=legend, loc="outside lower center", ncol=len(legend))
    fig.suptitle(f"Single-scale predictions zoomed on boundaries ({zoom}×{zoom} windows; white: true boundary)")
    plt.show()
