"""Figures of the book whose drawing code is longer than what a chapter should show inline.

Each function draws what a chapter has already computed; the measurement stays in
the chapter, beside the text that explains it, and only the matplotlib calls
live here. A chapter imports this module as ``from book import plots`` with the
repository's root on ``sys.path``.
"""
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

