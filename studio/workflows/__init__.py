"""Jobs that chain text and images: the batch job (`batch`: plan, ask the LLM, render, record;
`estimate`: the work it has left and a rough time, before it starts), a character's look,
portrait and alternate realities (`characters`), an episode's storyboard (`storyboards`), change
requests (`revisions`) and the Marketing Assistant's campaigns (`marketing/`). They take the
studio as a `StudioHost` protocol (`host`), call the writing, image, vision and library layers and
the catalog; only `studio.api` and the UI and CLI above import them.
"""
