"""Keras, PyTorch and scikit-learn: each package reads, writes and loads its own framework.

Each framework package imports its framework lazily, inside the functions that need it, so this
package loads no framework. They never import one another: they meet in the spec, the archive,
the layouts and the runtime. Each one fills in its rows of the table of sources and targets
(``table``); the list below is that table's explicit set of contributors, in lookup order.
"""

from __future__ import annotations

from weightio.frameworks import native
from weightio.frameworks.keras import table as keras_table
from weightio.frameworks.sklearn import table as sklearn_table
from weightio.frameworks.table import TABLE
from weightio.frameworks.torch import table as torch_table

#: The modules whose ``ROWS`` fill in ``weightio.frameworks.table.TABLE``, in lookup order
#: (weightio's own rows first, so a dict of numpy arrays is read without a framework).
CONTRIBUTORS = (native, keras_table, torch_table, sklearn_table)

for _contributor in CONTRIBUTORS:
    for _row in _contributor.ROWS:
        TABLE.add(_row)
