"""Figures of the book whose drawing code is longer than what a chapter should show inline.

Each function draws what a chapter has already computed; the measurement stays in
the chapter, beside the text that explains it, and only the matplotlib calls
live here. A chapter imports this module as ``from book import plots`` with the
repository's root on ``sys.path``.
"""
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.patches import Rectangle

import minidl


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
