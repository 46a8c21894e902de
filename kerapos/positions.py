"""kerapos.positions: the registry of position schemes (public name).

The registry lives in `kerapos.layers.registry`, beside the layers it
describes (so attention can use it without an import cycle); see there.
"""

from kerapos.layers.registry import FIRE_CAPPED  # noqa: F401
from kerapos.layers.registry import INPUT_LAYER_NAME  # noqa: F401
from kerapos.layers.registry import ROTARY_VARIANTS  # noqa: F401
from kerapos.layers.registry import Scheme  # noqa: F401
from kerapos.layers.registry import available  # noqa: F401
from kerapos.layers.registry import describe  # noqa: F401
from kerapos.layers.registry import get  # noqa: F401
from kerapos.layers.registry import layer_config  # noqa: F401
from kerapos.layers.registry import position_layers  # noqa: F401
from kerapos.layers.registry import relation_matrix  # noqa: F401
from kerapos.layers.registry import scheme  # noqa: F401
from kerapos.layers.registry import where  # noqa: F401
