"""The predictions shown: one PNG per image, a grid (evaluate.figures.grid_png) and a small HTML
page that links them, with the captions also as CSV. The seen images, where given, are shown
beside the predictions for a look, never scored."""
from __future__ import annotations

import csv
import html
from pathlib import Path

import numpy as np

from fmri_recon import helpers

COLUMNS = ("seen", "recon", "blurry", "refined", "final")


def write(out: dict, labels: list[str], recons, refined, captions, seen=None, blurry=None, *, title: str,
          rows: int = 12, blend: float = 0.75) -> None:
    """``out``: paths page, grid, captions, images (a folder). ``seen``, ``blurry``: (G, 3, H, W) or
    None. With a blurry branch, ``final`` is the refined image blended with it as upstream's final
    images are (``evaluate.blend_blurry`` of the refined one)."""
    from fmri_recon.evaluate import figures, score

    final = score.blend_blurry(refined, blurry, blend) if blurry is not None else None
    sets = {"seen": seen, "recon": recons, "blurry": blurry, "refined": refined, "final": final}
    sets = {k: v for k, v in sets.items() if v is not None}
    with helpers.atomic_dir(out["images"]) as folder:
        for name, images in sets.items():
            for i, img in enumerate(images):
                _png(Path(folder) / f"{i:04d}_{name}.png", img)
    columns = [("seen\n(not scored)" if k == "seen" else k, v) for k, v in sets.items()]
    figures.grid_png(columns, [f"{lab}: {cap}" for lab, cap in zip(labels, captions)], out["grid"], n=rows,
                     caption_title="predicted caption")
    with helpers.atomic_output(out["captions"]) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["index", "label", "caption"])
        writer.writerows([i, lab, str(cap)] for i, (lab, cap) in enumerate(zip(labels, captions)))
    folder = Path(out["images"]).name
    with helpers.atomic_output(out["page"]) as tmp:
        Path(tmp).write_text(_html(title, labels, captions, [k for k in COLUMNS if k in sets], folder,
                                   Path(out["grid"]).name))


def _html(title: str, labels, captions, columns: list[str], folder: str, grid: str) -> str:
    head = "".join(f"<th>{c}</th>" for c in ["", *columns, "predicted caption"])
    body = []
    for i, (label, caption) in enumerate(zip(labels, captions)):
        cells = "".join(f'<td><img src="{folder}/{i:04d}_{c}.png" width="160"></td>' for c in columns)
        body.append(f"<tr><td>{html.escape(label)}</td>{cells}<td>{html.escape(str(caption))}</td></tr>")
    return (f"<!doctype html>\n<html><head><meta charset='utf-8'><title>{html.escape(title)}</title></head><body>\n"
            f"<h1>{html.escape(title)}</h1>\n<p>Decoded from brain activity alone; no ground truth was scored. "
            f"{len(labels)} predictions. <a href='{grid}'>Grid</a>.</p>\n"
            f"<table>\n<tr>{head}</tr>\n" + "\n".join(body) + "\n</table>\n</body></html>\n")


def _png(path: Path, image) -> None:
    import torch
    from PIL import Image

    x = torch.as_tensor(image).float().clamp(0, 1).permute(1, 2, 0).numpy()
    Image.fromarray((x * 255).round().astype(np.uint8)).save(path)
