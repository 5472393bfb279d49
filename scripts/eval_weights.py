"""Rule eval_weights: pretrained weights of one image-metric network, from its publisher's URL."""
import sys

sys.path.insert(0, f"{snakemake.scriptdir}/..")  # this checkout's fmri_recon, installed or not
import torch
import torchvision.models as tvm

from fmri_recon import helpers, runlog

log = runlog.setup(snakemake.log[0])
URLS = {  # the weights MindEye2's evaluation uses (docs/upstream.md §5.3-5.5)
    "alexnet": tvm.AlexNet_Weights.IMAGENET1K_V1.url,
    "inception": tvm.Inception_V3_Weights.DEFAULT.url,
    "efficientnet": tvm.EfficientNet_B1_Weights.DEFAULT.url,
    "swav": "https://dl.fbaipublicfiles.com/deepcluster/swav_800ep_pretrain.pth.tar",
}
url = URLS[snakemake.wildcards.net]
log.info("downloading %s", url)
with helpers.atomic_output(snakemake.output[0]) as tmp:
    torch.hub.download_url_to_file(url, str(tmp), progress=True)
