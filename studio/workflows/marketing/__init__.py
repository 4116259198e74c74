"""The Marketing Assistant's campaigns: concept -> posts -> image prompts -> images -> review.

`campaign` holds what a campaign is made of (the brief, the platforms and their limits, the
steps' schemas, the `Campaign` record, the checks each post gets); `reuse` lists what an episode
offers instead of rendering (its images, storyboard panels and cast's portraits); `chain` runs the
steps with the studio's LLM and image service (`Chain`); `export` finds the posts whose image is
missing, writes the review and packs the campaign into a zip. Each step's output is the next
one's input, can be edited, and an edit clears only the steps after it.

    from studio.workflows.marketing.campaign import Brief
    from studio.workflows.marketing.chain import Chain
    from studio.workflows.marketing.export import export_zip

    chain = Chain(llm, images, series, settings)      # images: the studio's ImageService
    campaign = chain.start(Brief(source="episode", season=1, episode=3, platforms=["X"]))
    # or reuse stored images: Brief(..., post_images={"1": panel_key, "2": portrait_key})
    chain.run(campaign)                       # every step still to do, in order
    chain.edit(campaign, "posts", {...})      # clears image_prompts, images and review
    export = export_zip(campaign, store)      # export.data: the zip; export.missing: its gaps
"""
