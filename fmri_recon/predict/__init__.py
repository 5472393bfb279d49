"""``snakemake predict``: decode volumes that have no ground truth (a new session, another lab's
scans) with a trained or released model, and show the result. Nothing here is evaluated.

settings.py  the ``predict`` block, checked before any job
voxels.py    the new volumes -> z-scored voxels, grouped by image (rule predict_voxels)
prepared.py  the file of those voxels, written and read
page.py      the grid and the HTML page of the predictions (rule predict_page)
"""
