"""Studio: a txt2img playground with every parameter, a comparison grid over one or two, a prompt
interpolation, and the modes that start from an image: img2img, inpaint (a mask painted on the
image or uploaded), outpaint and variations; each of them may be guided by a ControlNet (a sketch
drawn or uploaded, Canny edges, a depth map; a picture of any shape, fitted by a resize mode).
Only the modes and controls the image backend has are shown."""

import io

import streamlit as st
from PIL import Image
from streamlit_drawable_canvas import st_canvas

from studio import ui
from studio.api import DEFAULT_STRENGTH
from studio.core.errors import ImageInputError
from studio.core.inputs import (
    canvas_mask,
    content_hash,
    fitted_size,
    mode_size,
    read_image,
    to_rgb,
)
from studio.core.params import (
    CONTROL_RESIZE,
    CONTROL_SCALE,
    DEFAULT_CONTROL_RESIZE,
    OUTPAINT_SIDES,
    USES_STRENGTH,
)
from studio.images.control import CANNY_THRESHOLDS, SKETCH_TYPES
from studio.images.grid import AXES, compose_grid, grid_requests, parse_axis
from studio.images.interpolation import FRAMES as INTERPOLATION_FRAMES

ui.route_through_dashboard(__file__)

PREFIX = "st"
EXAMPLE_VALUES = {
    "CFG scale": "3, 7, 12",
    "Steps": "10, 25, 40",
    "Seed": "1, 2, 3",
    "Sampler": "Euler a, DPM++ 2M Karras, DDIM",
}
MODE_LABELS = {
    "txt2img": "Text to image",
    "img2img": "Image to image",
    "inpaint": "Inpaint",
    "outpaint": "Outpaint",
    "variation": "Variations",
}
INIT_FROM = ("Upload", "Catalog image")
MASK_FROM = ("Draw", "Upload")
IMAGE_TYPES = ["png", "jpg", "jpeg", "webp", "bmp", "gif", "tif", "tiff"]
OUTPAINT_AMOUNTS = list(range(64, 513, 64))
CANVAS_SIDE = 512  # the mask canvas's longer side on screen
CONTROL_CANVAS_SIDE = 320  # the sketch canvas's longer side on screen
CONTROL_FROM = ("Draw", "Upload")
RESIZE_LABELS = {
    "just resize": "Just resize (stretched)",
    "crop and resize": "Crop and resize (cut at the centre)",
    "resize and fill": "Resize and fill (all of it, the rest filled)",
}
CONTROL_LABELS = {
    "scribble": "Scribble (a sketch)",
    "lineart": "Line art",
    "canny": "Canny edges of a picture",
    "depth": "Depth map",
}
# The mode picker's key; not `st_mode`, which the render controls keep (with every other
# RenderRequest field) under `st_<field>`.
MODE_KEY = "st_mode_choice"
# Widgets whose values outlive a visit to another page (Streamlit drops a widget's value when a
# run does not draw it).
REMEMBERED = (MODE_KEY, "st_init_from", "st_init_catalog", "st_mask_from")


def with_guide(request, guide: dict | None):
    """`request` guided as `guide` says (the control image made and stored now, on a button
    press), or as it is when not guiding."""
    if guide is None:
        return request
    if guide["control_image"] is None:
        raise ImageInputError(
            "Guidance is on but there is no control image: draw or upload one, or turn guidance "
            "off."
        )
    return ui.current_studio().guide(request, **guide)


def playground(request, guide: dict | None = None, blocked: bool = False) -> None:
    if st.button("Generate", type="primary", key="st_generate", disabled=blocked):
        with ui.guard("Generating the image"):
            request = with_guide(ui.with_seed_choice(PREFIX, request), guide)
            made = ui.generate(request)
            st.session_state["st_last"] = made.key
            if made.cached:
                st.toast("That image was already in the catalog.")
    key = st.session_state.get("st_last")
    row = ui.current_store().find_image(key) if key else None
    if row is not None:
        ui.image_card(row, f"seed {row['seed']} · {row['sampler']}", key="st", actions=False)
        control_card(row)
        ui.denoising_strip_panel(row, key="st")


def control_card(row) -> None:
    """The control image an image was guided by, with its settings; nothing when unguided."""
    if row.control_image is None:
        return
    fitted = f", {row.control_resize}" if row.control_resize else ""
    st.image(
        ui.current_store().input_image(row.control_image),
        caption=f"Control image ({row.control_type}, scale {row.control_scale:g}, "
        f"steps {row.control_start:g}–{row.control_end:g}{fitted})",
        width=192,
    )


def guided_controls(controlnets: tuple[str, ...], size: tuple[int, int]) -> dict | None:
    """Guided generation (ControlNet), where the backend has ControlNets: the control type, the
    control image (a sketch drawn on a canvas of the image's `size`, or uploaded; a picture for
    Canny edges, a depth map), how a picture of another shape is fitted, scale and the steps it
    steers. The arguments of `Studio.guide` (the image None until there is one), or None when
    not guiding."""
    if not controlnets:
        return None
    width, height = size
    on = bool(st.session_state.get("st_cn_on"))
    with st.expander("Guided generation (ControlNet)", expanded=on):
        if not st.checkbox("Guide the composition with a control image", key="st_cn_on"):
            return None
        kind = st.selectbox(
            "Control type",
            controlnets,
            format_func=lambda k: CONTROL_LABELS.get(k, k),
            key="st_cn_type",
            help="Which ControlNet reads the control image; the ones configured "
            "(STUDIO_CONTROLNETS) are listed.",
        )
        guide: dict = {"control_type": kind}
        sketch = kind in SKETCH_TYPES
        source = st.radio(
            "Control image from",
            CONTROL_FROM if sketch else CONTROL_FROM[1:],
            key="st_cn_from" if sketch else f"st_cn_from_{kind}",
            horizontal=True,
        )
        if source == CONTROL_FROM[0]:
            st.caption(
                f"Draw the outlines ({width}x{height}); dark on white is inverted to the "
                "white-on-black lines the model reads."
            )
            scale = CONTROL_CANVAS_SIDE / max(width, height)
            drawing = st_canvas(
                fill_color="rgba(0, 0, 0, 0)",
                stroke_width=st.slider("Pen width", 1, 24, 4, key="st_cn_pen"),
                stroke_color="#000000",
                background_color="#FFFFFF",
                width=round(width * scale),
                height=round(height * scale),
                drawing_mode="freedraw",
                return_image_data=True,
                key=f"st_cn_canvas_{width}x{height}",
            )
            picture = None if drawing is None else drawing.image_data
            guide["control_image"] = None if picture is None else Image.fromarray(picture)
        else:
            what = {"canny": "Picture to take the edges of", "depth": "Depth map (near = light)"}
            upload = st.file_uploader(
                what.get(kind, "Sketch (lines on a plain ground)"),
                type=IMAGE_TYPES,
                key=f"st_cn_upload_{kind}",
            )
            guide["control_image"] = None if upload is None else upload.getvalue()
            guide["resize"] = st.radio(
                "A picture of another shape is",
                list(CONTROL_RESIZE),
                index=list(CONTROL_RESIZE).index(DEFAULT_CONTROL_RESIZE),
                format_func=lambda mode: RESIZE_LABELS[mode],
                key="st_cn_resize",
                help=f"As AUTOMATIC1111 does, for a picture that is not {width}x{height}'s shape.",
            )
        if kind == "canny":
            guide["preprocess"] = not st.checkbox(
                "It is an edge map already", False, key="st_cn_edges"
            )
            if guide["preprocess"]:
                guide["canny_thresholds"] = st.slider(
                    "Canny thresholds (low, high)", 0, 500, CANNY_THRESHOLDS, key="st_cn_canny"
                )
        if kind == "depth":
            guide["preprocess"] = st.checkbox(
                "Estimate the depth from a picture",
                False,
                key="st_cn_estimate",
                disabled=not ui.current_settings().depth_model,
                help="With a depth model (STUDIO_DEPTH_MODEL); without one, upload a depth map.",
            )
        guide["scale"] = st.slider(
            "Control scale",
            *CONTROL_SCALE,
            1.0,
            step=0.05,
            key="st_cn_scale",
            help="How strongly the control image steers: 0 ignores it, 1 is as trained.",
        )
        guide["start"], guide["end"] = st.slider(
            "Steers from … to … of the steps",
            0.0,
            1.0,
            (0.0, 1.0),
            step=0.05,
            key="st_cn_range",
            help="Ending early keeps the composition and frees the details.",
        )
    if guide["control_image"] is None:
        st.info("Draw or upload the control image, or turn guidance off.")
    return guide


def comparison_grid(request, guide: dict | None = None, blocked: bool = False) -> None:
    st.caption("Everything but the chosen parameters stays as set above, guidance included.")
    left, right = st.columns(2)
    x_name = left.selectbox("Columns vary", list(AXES), key="st_grid_x")
    x_text = left.text_input("Column values", EXAMPLE_VALUES[x_name], key=f"st_grid_x_{x_name}")
    y_options = ["(none)", *[name for name in AXES if name != x_name]]
    y_name = right.selectbox("Rows vary", y_options, key="st_grid_y")
    y_text = ""
    if y_name != "(none)":
        y_text = right.text_input("Row values", EXAMPLE_VALUES[y_name], key=f"st_grid_y_{y_name}")
    if st.button("Render the grid", key="st_grid_render", disabled=blocked):
        with ui.guard("Rendering the grid"):
            x = parse_axis(x_name, x_text)
            y = parse_axis(y_name, y_text) if y_name != "(none)" else None
            requests = grid_requests(with_guide(request, guide), x, y)
            images = [made.image() for made in ui.generate_many(requests, "Cell")]
            sheet = compose_grid(images, x, y)
            buffer = io.BytesIO()
            sheet.save(buffer, format="PNG")
            st.session_state["st_grid_png"] = buffer.getvalue()
            st.session_state["st_grid_cells"] = len(images)
    png = st.session_state.get("st_grid_png")
    if png:
        st.image(png, caption=f"{st.session_state['st_grid_cells']} cells", width="stretch")
        st.download_button(
            "Download the grid (PNG)",
            png,
            file_name="comparison-grid.png",
            mime="image/png",
            key="st_grid_download",
            on_click="ignore",
        )


def interpolation(request, guide: dict | None = None, blocked: bool = False) -> None:
    st.caption(
        "From the prompt above to another, with the same seed and settings: the text "
        "embeddings move a step at a time (DALL-E 2's text diffs)."
    )
    end = st.text_area(
        "Towards this prompt",
        "Sherlock Holmes playing the violin by the window, Baker Street at dawn, oil painting",
        key="st_morph_end",
        height=80,
    )
    frames = st.slider("Images", INTERPOLATION_FRAMES[0], 12, 5, key="st_morph_frames")
    if st.button("Render the interpolation", key="st_morph_render", disabled=blocked):
        with ui.guard("Rendering the interpolation"):
            base = with_guide(ui.with_seed_choice(PREFIX, request), guide)
            made = ui.interpolate(base, end, frames)
            st.session_state["st_morph"] = {
                "png": made.png(),
                "gif": made.animation("gif"),
                "webp": made.animation("webp"),
                "frames": len(made.results),
            }
    morph = st.session_state.get("st_morph")
    if not morph:
        return
    st.image(morph["png"], caption=f"{morph['frames']} images, t = 0 to 1", width="stretch")
    left, middle, right = st.columns(3)
    for column, kind, mime in ((left, "png", "image/png"), (middle, "gif", "image/gif"),
                               (right, "webp", "image/webp")):  # fmt: skip
        column.download_button(
            f"Download {kind.upper()}",
            morph[kind],
            file_name=f"interpolation.{kind}",
            mime=mime,
            key=f"st_morph_download_{kind}",
            on_click="ignore",
        )


def result_size(request, source, options: dict) -> tuple[int, int]:
    """The size of the image to make: the request's, or for a mode with an init image, the init
    image's as the mode uses it (the sketch canvas takes it)."""
    if source is None:
        return request.width, request.height
    try:
        return mode_size(read_image(source, "init image").size, options.get("outpaint"))
    except ImageInputError:  # an unreadable init image: the mode panel says why
        return request.width, request.height


def remember_widgets(modes: tuple[str, ...], sent: bool) -> None:
    """Bring back the values of `REMEMBERED`; then txt2img for parameters `sent` from another
    page, or an init image sent from a card (in the first mode that takes one, unless such a mode
    is chosen already)."""
    kept = st.session_state.get("st_remembered", {})
    for key in REMEMBERED:
        if key in kept:
            st.session_state.setdefault(key, kept[key])
    if sent:
        st.session_state[MODE_KEY] = "txt2img"
    image_id = st.session_state.pop("st_init_pending", None)
    if image_id is not None:
        st.session_state["st_init_from"] = INIT_FROM[1]
        st.session_state["st_init_catalog"] = image_id
        if st.session_state.get(MODE_KEY, "txt2img") == "txt2img":
            st.session_state[MODE_KEY] = next((m for m in modes if m != "txt2img"), "txt2img")


def mode_picker(modes: tuple[str, ...]) -> str:
    if st.session_state.get(MODE_KEY) not in modes:
        st.session_state[MODE_KEY] = modes[0]
    if len(modes) == 1:
        return modes[0]
    return st.radio(
        "Mode",
        modes,
        format_func=lambda mode: MODE_LABELS.get(mode, mode),
        key=MODE_KEY,
        horizontal=True,
        help="Text to image, or an image made from an init image; only the modes this image "
        "model can do are listed.",
    )


def init_image_source():
    """Upload bytes or a catalog PNG's path; None until there is one."""
    source = st.radio("Init image from", INIT_FROM, key="st_init_from", horizontal=True)
    if source == INIT_FROM[0]:
        upload = st.file_uploader("Init image", type=IMAGE_TYPES, key="st_init_upload")
        return None if upload is None else upload.getvalue()
    rows = {row.id: row for row in reversed(ui.current_store().images())}  # newest first
    if not rows:
        st.info("The catalog has no images yet: upload one, or make one first.")
        return None
    if st.session_state.get("st_init_catalog") not in rows:
        st.session_state["st_init_catalog"] = next(iter(rows))
    chosen = st.selectbox(
        "Catalog image",
        list(rows),
        key="st_init_catalog",
        format_func=lambda i: (
            f"#{i} · {rows[i].target_of.label(rows[i].image_index)} · "
            f"{rows[i].mode} · {rows[i].prompt[:48]}"
        ),
        help="Or press **Send to Studio as init image** under any image of the other pages.",
    )
    return ui.current_store().image_path(rows[chosen])


def mode_options(mode: str, strength: bool) -> dict:
    """The mode's own controls: strength (where the backend takes one: not OpenAI's), the
    mask's source, outpaint sides, variations."""
    options: dict = {}
    if mode in USES_STRENGTH and strength:
        options["strength"] = st.slider(
            "Strength",
            0.05,
            1.0,
            DEFAULT_STRENGTH[mode],
            step=0.05,
            key=f"st_strength_{mode}",
            help="How much to change: low keeps the init image, 1 redraws it"
            + (" (inside the mask)." if mode == "inpaint" else "."),
        )
    if mode == "inpaint":
        options["mask_from"] = st.radio(
            "Mask (white = repaint, black = keep)", MASK_FROM, key="st_mask_from", horizontal=True
        )
        if options["mask_from"] == MASK_FROM[0]:
            options["brush"] = st.slider("Brush size", 4, 96, 32, key="st_brush")
        else:
            upload = st.file_uploader(
                "Mask image, the init image's size", type=IMAGE_TYPES, key="st_mask_upload"
            )
            options["mask"] = None if upload is None else upload.getvalue()
        if st.checkbox(
            "Inpaint only the masked area",
            key="st_only_masked",
            help="A1111's \"Only masked\": the mask's area, with some context, is inpainted at the "
            "image's full size and pasted back, so small details get every pixel.",
        ):
            options["inpaint_padding"] = st.slider(
                "Context around the mask (pixels)", 0, 256, 32, step=8, key="st_mask_padding"
            )
    if mode == "outpaint":
        sides = st.multiselect(
            "Extend to the", OUTPAINT_SIDES, default=["right"], key="st_outpaint_sides"
        )
        options["outpaint"] = {
            side: st.select_slider(
                f"Pixels added {side}", OUTPAINT_AMOUNTS, 128, key=f"st_outpaint_{side}"
            )
            for side in sides
        }
    if mode == "variation":
        options["n"] = st.slider("Variations", 2, 8, 4, key="st_variations_n")
        options["own_prompt"] = st.checkbox(
            "Use the prompt inside the image (when it has one)", True, key="st_own_prompt"
        )
    return options


def mode_panel(
    mode: str, request, source, options: dict, guide: dict | None = None, blocked: bool = False
) -> None:
    """The init image (with the mask canvas for inpaint), Generate, and the results."""
    if source is None:
        st.info(
            "Give an init image: upload one, or pick a catalog image (or press **Send to Studio "
            "as init image** under an image on the Episodes, Seasons or Gallery page)."
        )
        show_results(mode)
        return
    picture = None
    with ui.guard("Reading the init image"):
        picture = to_rgb(read_image(source, "init image"))
    if picture is None:
        return
    width, height = mode_size(picture.size, options.get("outpaint"))
    fitted = fitted_size(*picture.size)
    rounded = "" if fitted == picture.size else f" (resized to {fitted[0]}x{fitted[1]} first)"
    st.caption(
        f"Init image {picture.width}x{picture.height} → the result is {width}x{height}{rounded}."
    )
    drawing = None
    if mode == "inpaint" and options["mask_from"] == MASK_FROM[0]:
        st.caption("Paint over what should change.")
        scale = CANVAS_SIDE / max(picture.size)
        drawing = st_canvas(
            fill_color="rgba(0, 0, 0, 0)",
            stroke_width=options["brush"],
            stroke_color="rgba(255, 40, 160, 0.6)",
            background_image=picture,
            width=round(picture.width * scale),
            height=round(picture.height * scale),
            drawing_mode="freedraw",
            return_image_data=True,
            key=f"st_canvas_{content_hash(picture.tobytes())[:16]}",
        )
    else:
        st.image(picture, caption="Init image", width=min(CANVAS_SIDE, max(picture.width, 192)))
    label = f"Make {options['n']} variations" if mode == "variation" else "Generate"
    if st.button(label, type="primary", key="st_generate", disabled=blocked):
        with ui.guard(f"Making the image ({MODE_LABELS.get(mode, mode)})"):
            mask = options.get("mask")
            if drawing is not None:
                mask = canvas_mask(drawing.image_data, picture.size)
            values = ui.with_seed_choice(PREFIX, request)
            generate_mode(mode, values, source, mask, options, guide)
    show_results(mode)


def generate_mode(mode: str, values, source, mask, options: dict, guide: dict | None) -> None:
    """One call into the studio: the variations, or the image of `mode` (guided as `guide`
    says); kept for the results."""
    if guide is not None and guide["control_image"] is None:
        with_guide(values, guide)  # says what is missing
    fields = {
        name: getattr(values, name) for name in ("negative_prompt", "sampler", "steps", "cfg")
    }
    if mode == "variation":
        with st.spinner(f"Making {options['n']} variations…"):
            made = ui.current_studio().variations(
                source,
                n=options["n"],
                prompt=None if options["own_prompt"] else values.prompt,
                strength=options.get("strength"),
                seed=values.seed,
                guide=guide,
                **fields,
            )
        st.session_state["st_last_variation"] = [result.key for result in made]
        cached = all(result.cached for result in made)
    else:
        request = ui.current_studio().request(
            values.prompt,
            mode=mode,
            init_image=source,
            mask=mask,
            strength=options.get("strength"),
            outpaint=options.get("outpaint"),
            seed=values.seed,
            inpaint_padding=options.get("inpaint_padding"),
            **fields,
        )
        made = ui.generate(with_guide(request, guide))
        st.session_state[f"st_last_{mode}"] = made.key
        cached = made.cached
    if cached:
        st.toast("That image was already in the catalog.")


def show_results(mode: str) -> None:
    store = ui.current_store()
    if mode == "variation":
        rows = [store.find_image(key) for key in st.session_state.get("st_last_variation", [])]
        rows = [row for row in rows if row is not None]
        for start in range(0, len(rows), 4):
            for column, row in zip(st.columns(4), rows[start : start + 4], strict=False):
                with column:
                    result_card(row, f"seed {row.seed}")
        return
    key = st.session_state.get(f"st_last_{mode}")
    row = store.find_image(key) if key else None
    if row is not None:
        st.markdown("**Result**")
        strength = f" · strength {row.strength:g}" if row.strength is not None else ""
        result_card(row, f"{MODE_LABELS[mode]} · seed {row.seed}{strength}")


def result_card(row, caption: str) -> None:
    ui.image_card(row, caption, key="st", actions=False)
    control_card(row)
    ui.denoising_strip_panel(row, key="st")
    if st.button("Use as init image", key=f"st_reuse_{row.id}"):
        st.session_state["st_init_pending"] = row.id
        st.rerun()


st.title("Studio")
ui.placeholder_banner()
sent = "st_pending" in st.session_state  # another page's "Send to Studio": reproduce in txt2img
ui.apply_pending(PREFIX)
with ui.guard("Opening the Studio"):
    can = ui.capabilities()
    remember_widgets(can.modes, sent)
    controls, results = st.columns([2, 3], gap="large")
    with controls:
        mode = mode_picker(can.modes)
        source, options = None, {}
        if mode != "txt2img":
            source = init_image_source()
            options = mode_options(mode, can.strength)
        request = ui.render_controls(
            PREFIX,
            ui.defaults_from_settings(
                "Sherlock Holmes reading a letter by the fire, Baker Street sitting room, "
                "Victorian London, warm firelight, oil painting",
                "blurry, lowres, text, watermark, logo",
            ),
            size=mode == "txt2img",
        )
        request = ui.prompt_extras(PREFIX, request)
        # A prompt whose syntax is wrong says so once, under the prompt; nothing renders it.
        blocked = ui.prompt_error(request) is not None
        guide = guided_controls(can.controlnet, result_size(request, source, options))
    with results:
        if mode != "txt2img":
            mode_panel(mode, request, source, options, guide, blocked)
        elif can.steps_and_cfg:
            single, grid, morph = st.tabs(
                ["Single image", "Comparison grid", "Prompt interpolation"]
            )
            with single:
                playground(request, guide, blocked)
            with grid:
                comparison_grid(request, guide, blocked)
            with morph:
                interpolation(request, guide, blocked)
        else:  # a backend without steps, CFG or samplers has nothing for the grid to vary
            playground(request, guide, blocked)
st.session_state["st_remembered"] = {
    key: st.session_state[key] for key in REMEMBERED if key in st.session_state
}
