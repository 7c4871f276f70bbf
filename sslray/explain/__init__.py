"""``sslray explain``: where an encoder looks, as maps stitched over whole fields and slides.

ViT encoders show their last block's class-token attention per head (``attention``), CNN
encoders a Grad-CAM of a linear evaluation head's class logit (``gradcam``); ``stitch`` puts
the per-tile maps back on the image, ``run`` writes the pictures and raw maps. No Ray: a
handful of images is explained in one process (docs/protocols.md, "Explanations").
"""
