"""Marketing Assistant: a campaign by prompt chaining; each step is shown and editable."""

import json

import streamlit as st

from studio import ui
from studio.workflows.marketing.campaign import LANGUAGES, PLATFORMS, STEPS, Brief, post_full_text
from studio.workflows.marketing.chain import Chain
from studio.workflows.marketing.export import export_zip, missing_images, review
from studio.workflows.marketing.reuse import reusable_images

ui.route_through_dashboard(__file__)

TITLES = {
    "concept": "1. Concept",
    "posts": "2. Posts",
    "image_prompts": "3. Image prompts",
    "images": "4. Images",
    "review": "5. Review",
}
EDITABLE = {"concept", "posts", "image_prompts"}


def open_campaign(campaign_id: str) -> None:
    """Show this campaign on the next run, with a link to it in the address bar."""
    st.session_state["mk_campaign"] = campaign_id
    st.session_state["mk_view_pending"] = "Campaign"
    st.query_params["campaign"] = campaign_id


def make_chain(series, store) -> Chain:
    return Chain(ui.current_llm(), ui.current_studio().images, series, ui.current_settings())


def brief_form(series, store) -> Brief:
    source = st.radio("About", ["Episode", "Season", "Free topic"], key="mk_source",
                      horizontal=True)  # fmt: skip
    brief = Brief(source={"Episode": "episode", "Season": "season"}.get(source, "topic"))
    left, right = st.columns(2)
    reuse_options: dict[str, str | None] = {"Render new images": None}
    if brief.source == "episode":
        episode = left.selectbox(
            "Episode", series.episodes, format_func=lambda e: f"{e.id} · {e.title}",
            key="mk_episode",
        )  # fmt: skip
        brief.season, brief.episode = episode.season, episode.episode
        for option in reusable_images(store, series, episode.season, episode.episode):
            reuse_options[f"Reuse: {option.label}"] = option.cache_key
    elif brief.source == "season":
        brief.season = ui.season_picker(series, "mk_season", left)
    else:
        brief.topic = left.text_input("Topic", key="mk_topic",
                                      placeholder="e.g. the show's 10th anniversary")  # fmt: skip
    brief.platforms = right.multiselect("Platforms", list(PLATFORMS), default=["Instagram", "X"],
                                        key="mk_platforms")  # fmt: skip
    brief.language = left.selectbox("Language of the posts", list(LANGUAGES),
                                    format_func=LANGUAGES.get, key="mk_language")  # fmt: skip
    brief.posts_per_platform = int(right.number_input("Posts per platform", 1, 10, 1,
                                                      key="mk_count"))  # fmt: skip
    brief.audience = left.text_input("Audience", brief.audience, key="mk_audience")
    brief.tone = right.text_input("Tone", brief.tone, key="mk_tone")
    brief.call_to_action = left.text_input("Call to action", brief.call_to_action, key="mk_cta")
    choice = right.selectbox("Images", list(reuse_options), key="mk_reuse")
    brief.reuse_image = reuse_options[choice]
    if len(reuse_options) > 1:  # the episode's images, storyboard panels and portraits
        with st.expander("A different image per post"):
            posts = [p for p in brief.platforms for _ in range(brief.posts_per_platform)]
            per_post = {"As above": None, **{k: v for k, v in reuse_options.items() if v}}
            for number, platform in enumerate(posts, start=1):
                picked = st.selectbox(f"Post {number} ({platform})", list(per_post),
                                      key=f"mk_post_image_{number}")  # fmt: skip
                if per_post[picked] is not None:
                    brief.post_images[str(number)] = per_post[picked]
    return brief


def show_output(chain, campaign, step: str, store) -> None:
    output = campaign.steps[step]
    if step == "concept":
        st.markdown(
            f"**Hook:** {output['hook']}  \n**Key message:** {output['key_message']}  \n"
            f"**Hashtags:** {' '.join(output['hashtags'])} — {output['hashtag_strategy']}"
        )
    elif step == "posts":
        columns = st.columns(min(3, len(output)))
        for number, post in enumerate(output):
            with columns[number % len(columns)].container(border=True):
                st.markdown(f"**{number + 1}. {post['platform']}** · {post['characters']} of "
                            f"{post['limit']} characters" + (" · repaired" if post.get("repaired")
                                                             else ""))  # fmt: skip
                st.text(post_full_text(post))
                for flag in post["flags"]:
                    st.warning(flag)
    elif step == "image_prompts":
        for number, prompt in enumerate(output, start=1):
            st.markdown(f"**Post {number}:** {prompt['prompt']}  \n*Negative:* "
                        f"{prompt['negative_prompt']}")  # fmt: skip
    elif step == "images":
        posts = campaign.steps["posts"]
        missing = {m.post: m for m in missing_images(campaign, store)}
        columns = st.columns(min(4, len(posts)))
        for number, post in enumerate(posts, start=1):
            with columns[(number - 1) % len(columns)]:
                label = f"{number}. {post['platform']}"
                if number <= len(output) and output[number - 1].get("source"):
                    label += f" · {output[number - 1]['source']}"  # a reused image
                row = None if number in missing else store.find_image(
                    output[number - 1]["cache_key"])  # fmt: skip
                if row is not None:
                    st.image(str(store.image_path(row)), caption=label, width="stretch")
                else:
                    gone = missing[number].detail if number in missing else "its image is missing"
                    st.caption(f"{label}: {gone}")
    elif step == "review":
        # Checked again on every run: an image can leave the data folder after the review ran.
        current = review(campaign, store)
        if current["ok"]:
            st.success(f"All {current['posts']} posts are within their platforms' limits and have "
                       "their images.")  # fmt: skip
        for issue in current["issues"]:
            st.warning(issue)
        for reused in current.get("reused", []):
            st.caption(f"Reused image · {reused}")
        missing = missing_images(campaign, store)  # what export_zip will mark MISSING
        if missing:
            numbers = ", ".join(str(m.post) for m in missing)
            st.warning(
                f"The zip leaves out {len(missing)} image(s) (post {numbers}): those posts are "
                "marked MISSING, with the reason, in posts.md and posts.csv. Rerun the images "
                "step to include them.", icon=":material/image_not_supported:",
            )  # fmt: skip
            if st.button("Rerun the images step", key="mk_rerun_images"):
                with ui.guard("Rerunning the images step"):
                    run_steps(chain, campaign, "images", again=True)
                    st.rerun()
        st.download_button(
            "Download the campaign (zip: images, posts.csv, posts.md, campaign.json)",
            lambda: export_zip(campaign, store).data, file_name=f"campaign-{campaign.id}.zip",
            mime="application/zip", key="mk_download", on_click="ignore",
        )  # fmt: skip


def edit_output(chain, campaign, step: str) -> None:
    text = json.dumps(campaign.steps[step], indent=2, ensure_ascii=False)
    if step == "posts":  # the user edits what they write; counts and flags are recomputed
        keep = ("platform", "text", "hashtags")
        text = json.dumps([{k: p[k] for k in keep} for p in campaign.steps[step]], indent=2,
                          ensure_ascii=False)  # fmt: skip
    with st.expander("Edit this step (JSON); the steps after it will run again"):
        version = abs(hash(text)) % 10**8
        edited = st.text_area("JSON", text, height=240, key=f"mk_json_{step}_{version}",
                              label_visibility="collapsed")  # fmt: skip
        if st.button("Save the edit", key=f"mk_save_{step}"):
            with ui.guard(f"Saving the edited {step}"):
                try:
                    data = json.loads(edited)
                except json.JSONDecodeError as exc:
                    st.error(f"That is not valid JSON: {exc}. Fix it and save again.")
                    return
                chain.edit(campaign, step, data)
                st.rerun()


def run_steps(chain, campaign, until: str, again: bool = False) -> None:
    """Run the steps still to do up to `until`; `again`: run `until` anew, then the review."""
    bar = st.progress(0.0, text="Starting…")

    def progress(step: str, done: int, total: int) -> None:
        bar.progress(done / max(1, total), text=f"{TITLES[step]}: {done} of {total}")

    try:
        if again:
            chain.run_step(campaign, until, progress)
            until = "review"
        chain.run(campaign, until=until, progress=progress)
    finally:
        bar.empty()


def campaign_view(chain, campaign, store) -> None:
    st.subheader(campaign.name)
    brief = campaign.brief
    st.caption(
        f"{LANGUAGES[brief.language]} · {brief.posts_per_platform} post(s) per platform · "
        f"audience: {brief.audience} · tone: {brief.tone} · CTA: {brief.call_to_action}"
    )
    for step in STEPS:
        with st.container(border=True):
            st.markdown(f"#### {TITLES[step]}")
            if campaign.done(step):
                show_output(chain, campaign, step, store)
                if step in EDITABLE:
                    edit_output(chain, campaign, step)
            elif step == campaign.next_step:
                left, right = st.columns(2)
                if left.button(f"Run {TITLES[step][3:].lower()}", key=f"mk_run_{step}",
                               type="primary"):  # fmt: skip
                    with ui.guard(f"The {step} step"):
                        run_steps(chain, campaign, step)
                        st.rerun()
                if right.button("Run all remaining steps", key="mk_run_all"):
                    with ui.guard("The campaign"):
                        run_steps(chain, campaign, "review")
                        st.rerun()
            else:
                st.caption("Waits for the step above.")


st.title("Marketing Assistant")
series, store = ui.open_catalog("Opening the Marketing Assistant")
if series is not None:
    ui.placeholder_banner()
    saved = {row["id"]: row for row in store.campaigns()}
    linked = st.query_params.get("campaign")  # a link to a saved campaign opens it
    if linked in saved:
        st.session_state.setdefault("mk_campaign", linked)
    elif linked:
        st.error(f"No saved campaign {ui.escape_markdown(linked)}; pick one under Saved campaigns.")
    campaign_id = st.session_state.get("mk_campaign")
    views = (["Campaign"] if campaign_id else []) + ["New campaign", "Saved campaigns"]
    pending = st.session_state.pop("mk_view_pending", None)
    if pending in views:
        st.session_state["mk_view"] = pending
    if st.session_state.get("mk_view") not in views:
        st.session_state["mk_view"] = views[0]
    view = st.radio("View", views, key="mk_view", horizontal=True, label_visibility="collapsed")
    if view == "Campaign":
        with ui.guard("Showing the campaign"):
            chain = make_chain(series, store)
            campaign_view(chain, chain.load(campaign_id), store)
    elif view == "New campaign":
        brief = brief_form(series, store)
        if st.button("Start the campaign", key="mk_start", type="primary"):
            with ui.guard("Starting the campaign"):
                chain = make_chain(series, store)
                campaign = chain.start(brief)
                open_campaign(campaign.id)
                run_steps(chain, campaign, "concept")
                st.rerun()
    elif saved:
        ids = list(saved)
        picked = st.selectbox(
            f"Open one of {len(saved)} saved campaigns", ids,
            format_func=lambda i: f"{saved[i]['name']} ({saved[i]['updated_at'][:16]})",
            key="mk_open",
        )  # fmt: skip
        if st.button("Open this campaign", key="mk_open_button"):
            open_campaign(picked)
            st.rerun()
    else:
        st.info("No campaign yet: start one under New campaign.")
