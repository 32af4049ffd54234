"""Draws docs/images/im2col.svg: im2col on a 4x4 image with a 3x3 kernel at stride 1, the
four windows becoming the four columns of ``cols``, then one matrix product.

    python docs/images/im2col_figure.py      # rewrites docs/images/im2col.svg

The values are the ones ``minicnn.kernels.numpy_kernels.im2col`` gives (tests/test_docs_pages.py
holds the picture to them and to this script's output).
"""

from pathlib import Path

import numpy as np

COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728")   # one per window (oh, ow)
TINTS = ("#dbe9f6", "#ffe8d2", "#dcf1dc", "#f8dada")
X = np.arange(1, 17).reshape(1, 1, 4, 4)                 # x[0, 0, h, w] = 4h + w + 1
OUT = Path(__file__).with_suffix(".svg").with_name("im2col.svg")


def columns(x=X):
    """cols (9, 4): row i*3 + j, column oh*2 + ow holds x[0, 0, oh + i, ow + j]."""
    return np.array([[x[0, 0, oh + i, ow + j] for oh in range(2) for ow in range(2)]
                     for i in range(3) for j in range(3)])


def text(x, y, words, size=13, anchor="middle", weight="normal", color="#222"):
    return (f'<text x="{x}" y="{y}" font-size="{size}" text-anchor="{anchor}" '
            f'font-weight="{weight}" fill="{color}">{words}</text>')


def drawing() -> str:
    parts = ['<svg xmlns="http://www.w3.org/2000/svg" width="980" height="360" '
             'viewBox="0 0 980 360" font-family="DejaVu Sans, Helvetica, Arial, sans-serif">',
             '<rect width="980" height="360" fill="white"/>']
    # the image, its four 3x3 windows outlined (inset a little each, so all four show)
    cell, left, top = 36, 60, 90
    parts.append(text(left + 2 * cell, top - 40, "x: one 4x4 image (N = C = 1)", 14, weight="bold"))
    parts.append(text(left + 2 * cell, top - 20, "four 3x3 windows, stride 1", 12))
    for h in range(4):
        for w in range(4):
            parts.append(f'<rect x="{left + w * cell}" y="{top + h * cell}" width="{cell}" '
                         f'height="{cell}" fill="white" stroke="#999"/>')
            parts.append(text(left + w * cell + cell / 2, top + h * cell + 23, X[0, 0, h, w]))
    for window, (oh, ow) in enumerate([(0, 0), (0, 1), (1, 0), (1, 1)]):
        inset = 3 + 3 * window
        parts.append(f'<rect x="{left + ow * cell + inset}" y="{top + oh * cell + inset}" '
                     f'width="{3 * cell - 2 * inset}" height="{3 * cell - 2 * inset}" '
                     f'fill="none" stroke="{COLORS[window]}" stroke-width="2.5"/>')
    parts.append(text(left + 2 * cell, top + 4 * cell + 28, "window (oh, ow) starts at "
                      "x[oh, ow]", 12))
    # the arrow
    parts.append('<line x1="240" y1="162" x2="330" y2="162" stroke="#444" stroke-width="2" '
                 'marker-end="url(#head)"/>')
    parts.insert(1, '<defs><marker id="head" markerWidth="10" markerHeight="8" refX="9" '
                 'refY="4" orient="auto"><path d="M0,0 L10,4 L0,8 z" fill="#444"/></marker>'
                 '</defs>')
    parts.append(text(285, 152, "im2col", 13, weight="bold"))
    # cols: one column per window, one row per position (i, j) inside the window
    cols = columns()
    cell_w, cell_h, left, top = 40, 24, 440, 64
    parts.append(text(left + 2 * cell_w, top - 30, "cols (C·KH·KW, N·OH·OW) = (9, 4)", 14,
                      weight="bold"))
    for column in range(4):
        oh, ow = divmod(column, 2)
        parts.append(text(left + column * cell_w + cell_w / 2, top - 8, f"({oh},{ow})", 11,
                          color=COLORS[column]))
        for row in range(9):
            parts.append(f'<rect x="{left + column * cell_w}" y="{top + row * cell_h}" '
                         f'width="{cell_w}" height="{cell_h}" fill="{TINTS[column]}" '
                         f'stroke="#999"/>')
            parts.append(text(left + column * cell_w + cell_w / 2, top + row * cell_h + 17,
                              cols[row, column]))
    for row in range(9):
        i, j = divmod(row, 3)
        parts.append(text(left - 8, top + row * cell_h + 17, f"(i={i}, j={j})", 11, "end"))
    parts.append(text(left + 2 * cell_w, top + 9 * cell_h + 22, "column (oh, ow): window "
                      "(oh, ow), row by row", 12))
    # the product
    left = 660
    parts.append(text(left, 110, "then the whole convolution is one product:", 13, "start"))
    parts.append(text(left, 140, "out = W2 @ cols", 15, "start", weight="bold"))
    parts.append(text(left, 165, "(F, 9) @ (9, 4) = (F, 4)", 13, "start"))
    parts.append(text(left, 195, "W2 = W.reshape(F, C·KH·KW): row f is", 12, "start"))
    parts.append(text(left, 213, "filter f, in the same (c, i, j) order;", 12, "start"))
    parts.append(text(left, 231, "out[f, oh·OW + ow] is y[n, f, oh, ow]", 12, "start"))
    parts.append(text(left, 261, "Backward: dcols = W2.T @ dout, then", 12, "start"))
    parts.append(text(left, 279, "col2im adds every entry back onto the", 12, "start"))
    parts.append(text(left, 297, "pixel it came from: x[1, 1] (value 6) is", 12, "start"))
    parts.append(text(left, 315, "in all four columns, so it collects four.", 12, "start"))
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


if __name__ == "__main__":
    OUT.write_text(drawing())
    print(f"wrote {OUT}")
