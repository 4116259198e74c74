"""Jobs that chain text and images: the batch job (`batch`: plan, ask the LLM, render, record)
and the Marketing Assistant's campaigns (`marketing`). They call the writing, image, vision and
library layers and the catalog; nothing below imports them.
"""
