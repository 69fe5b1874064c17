"""tik-report: one self-contained HTML page (and the same data as JSON) from a build's results.

collect reads the inputs into one dict, chain derives the parity/accuracy/preprocessing rows,
plots draws inline SVG, render writes the page, cli is the command. The top layer: it reads what
every other layer writes and nothing imports it.
"""
