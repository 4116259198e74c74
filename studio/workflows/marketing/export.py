"""What a campaign hands over: which posts' images are missing and why (`missing_images`),
the review step's verdict (`review`, with where each reused image came from), and the campaign as
a zip (`export_zip`: images/, posts.csv, posts.md, campaign.json).

A post whose image is gone (its PNG deleted from the data folder, its catalog row removed, or its
render failed) is never dropped in silence: `missing_images` says which and why, the review lists
them, and the zip marks them MISSING in posts.md and posts.csv.
"""

from __future__ import annotations

import csv
import io
import json
import zipfile
from dataclasses import dataclass
from typing import Any

from studio.catalog.store import Store
from studio.workflows.marketing.campaign import PLATFORMS, Campaign, check_post, post_full_text


@dataclass(frozen=True)
class MissingImage:
    """A post whose image cannot go into the export, and why."""

    post: int  # the post's number, from 1
    platform: str
    reason: str  # completes "its image …"
    fix: str

    @property
    def detail(self) -> str:
        return f"its image {self.reason} — {self.fix}"

    @property
    def message(self) -> str:
        return f"Post {self.post} ({self.platform}): {self.detail}"


RERUN_IMAGES = "rerun the images step"
REUSE_GONE = "choose another image to reuse or render new ones in a new campaign"


def _image_problem(store: Store, image: dict[str, Any] | None) -> tuple[str, str] | None:
    """Why `image`, an entry of the images step, is not in the catalog and on disk now."""
    if image is None:
        return "was never made", RERUN_IMAGES
    fix = REUSE_GONE if image.get("reused") else RERUN_IMAGES
    key = image.get("cache_key")
    if not key:
        return f"failed to render ({image.get('error') or 'no image was recorded'})", fix
    if store.find_image(key) is not None:  # the row, and its file on disk
        return None
    rows = store.images(cache_key=key)
    if not rows:
        return "is missing from the catalog", fix
    return f"file is missing from the data folder ({rows[0]['path']})", fix


def missing_images(campaign: Campaign, store: Store) -> list[MissingImage]:
    """Each post whose image is not in the catalog and on disk right now, in post order.

    Cheap (a catalog look-up and a file check per post, no image read): the page calls it on every
    rerun; the review and the export use it too.
    """
    posts = campaign.steps.get("posts", [])
    if not campaign.done("images"):
        return [MissingImage(n, p["platform"], "was not made yet", "run the images step")
                for n, p in enumerate(posts, start=1)]  # fmt: skip
    images = campaign.steps["images"]
    missing = []
    for number, post in enumerate(posts, start=1):
        image = images[number - 1] if number <= len(images) else None
        problem = _image_problem(store, image)
        if problem is not None:
            missing.append(MissingImage(number, post["platform"], *problem))
    return missing


def review(campaign: Campaign, store: Store) -> dict[str, Any]:
    """The review step's output, from the posts and the catalog as they are now."""
    posts = campaign.steps["posts"]
    missing = {m.post: m for m in missing_images(campaign, store)}
    issues = []
    for number, post in enumerate(posts, start=1):
        for flag in check_post(post)["flags"]:
            issues.append(f"Post {number} ({post['platform']}): {flag}")
        if number in missing:
            issues.append(missing[number].message)
    result = {"ok": not issues, "issues": issues, "posts": len(posts)}
    reused = reused_sources(campaign)
    if reused:  # where each reused image came from; only campaigns that reuse any have it
        result["reused"] = [f"Post {n} ({posts[n - 1]['platform']}): {source}"
                            for n, source in reused.items()]  # fmt: skip
    return result


def reused_sources(campaign: Campaign) -> dict[int, str]:
    """Post number -> where its reused image came from, for the posts that reuse one."""
    posts, images = campaign.steps.get("posts", []), campaign.steps.get("images", [])
    return {
        number: image.get("source") or "a reused catalog image"
        for number, image in enumerate(images[: len(posts)], start=1)
        if image and image.get("reused")
    }


def crop_to_aspect(png: bytes, aspect: str) -> bytes:
    """A reused image cut to a platform's aspect ratio around its centre, metadata kept."""
    from PIL import Image
    from PIL.PngImagePlugin import PngInfo

    image = Image.open(io.BytesIO(png))
    width_part, height_part = (int(n) for n in aspect.split(":"))
    width = min(image.width, round(image.height * width_part / height_part))
    height = min(image.height, round(image.width * height_part / width_part))
    left, top = (image.width - width) // 2, (image.height - height) // 2
    info = PngInfo()
    for key, value in getattr(image, "text", {}).items():
        info.add_text(key, value)
    buffer = io.BytesIO()
    image.crop((left, top, left + width, top + height)).save(buffer, "PNG", pnginfo=info)
    return buffer.getvalue()


def _export_png(store: Store, image: dict[str, Any], platform: str) -> bytes:
    row = store.find_image(image["cache_key"])
    if row is None:
        raise FileNotFoundError("it was removed during the export")
    png = store.image_path(row).read_bytes()
    return crop_to_aspect(png, PLATFORMS[platform].aspect) if image.get("reused") else png


@dataclass(frozen=True)
class CampaignExport:
    """The campaign's zip, and the posts whose image it could not include."""

    data: bytes
    missing: list[MissingImage]


def export_zip(campaign: Campaign, store: Store) -> CampaignExport:
    """The campaign as a zip: images/, posts.csv, posts.md and campaign.json.

    A post whose image is missing still gets its row and section, marked MISSING with the reason;
    the same posts are listed in the result's `missing`.
    """
    posts = campaign.steps.get("posts", [])
    images = campaign.steps.get("images", [])
    missing = {m.post: m for m in missing_images(campaign, store)}
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        names: dict[int, str] = {}
        for number, post in enumerate(posts, start=1):
            if number in missing:
                continue
            image = images[number - 1]
            name = f"images/{number:02d}-{post['platform'].lower()}.png"
            try:
                png = _export_png(store, image, post["platform"])
            except (OSError, ValueError) as exc:  # gone or unreadable since the check
                reason = f"could not be read ({type(exc).__name__}: {exc})"
                missing[number] = MissingImage(number, post["platform"], reason, RERUN_IMAGES)
                continue
            archive.writestr(name, png)
            names[number] = name
        table = io.StringIO()
        writer = csv.writer(table)
        writer.writerow(["post", "platform", "text", "hashtags", "characters", "limit", "flags",
                         "image", "image_source"])  # fmt: skip
        sources = reused_sources(campaign)
        lines = [f"# {campaign.name}", ""]
        concept = campaign.steps.get("concept")
        if concept:
            lines += [f"**Hook:** {concept['hook']}", "", f"**Key message:** "
                      f"{concept['key_message']}", ""]  # fmt: skip
        for number, post in enumerate(posts, start=1):
            checked = check_post(post)
            image = names.get(number) or f"MISSING: {missing[number].detail}"
            writer.writerow([number, post["platform"], post["text"], " ".join(checked["hashtags"]),
                             checked["characters"], checked["limit"], "; ".join(checked["flags"]),
                             image, sources.get(number, "rendered")])  # fmt: skip
            lines += [f"## {number}. {post['platform']}", "", post_full_text(checked), ""]
            if number in names:
                lines += [f"![{post['platform']}]({names[number]})", ""]
                if number in sources:
                    lines += [f"*Reused image: {sources[number]}*", ""]
            else:
                lines += [f"> **MISSING IMAGE:** {image.removeprefix('MISSING: ')}", ""]
        archive.writestr("posts.csv", table.getvalue())
        archive.writestr("posts.md", "\n".join(lines))
        saved = campaign.to_dict()
        if campaign.done("review"):  # as of this export, not as of when the review ran
            saved["steps"] = {**saved["steps"], "review": review(campaign, store)}
        archive.writestr("campaign.json", json.dumps(saved, indent=2, ensure_ascii=False))
    return CampaignExport(buffer.getvalue(), [missing[n] for n in sorted(missing)])
