"""The one definition of a model id: what may name a model, and so a file of the data folder."""

import re

ID_PATTERN = r"[A-Za-z0-9_-]{1,64}"
ID_RE = re.compile(ID_PATTERN)
ID_RULE = "a model id is 1 to 64 of A-Z a-z 0-9 _ -"
