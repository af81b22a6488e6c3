# transitional: import standins.slack (the lead removes this module once no test imports it)
from standins.slack import *  # noqa: F401,F403
