"""wsolkit: weakly-supervised object localization, from datasets to metrics.

Conventions shared by every module:

* Images are ``(3, H, W)`` float tensors in ``[0, 1]`` before normalisation, batches ``(N, 3, H, W)``.
* Boxes are ``[x1, y1, x2, y2]`` in pixel coordinates of the image they belong to, ``float32``
  arrays or tensors of shape ``(K, 4)``. ``x1, y1`` is the top-left corner, ``x2 = x1 + width``
  (CUB's ``x, y, w, h`` maps to ``[x, y, x + w, y + h]``; ILSVRC's XML corners are taken as given).
  The evaluation protocol (``wsolkit.boxes``) rescales them with ``int()`` and treats them as
  inclusive pixel boxes, exactly as the reference evaluation of Choe et al. (CVPR 2020) does.
* Masks are ``(H, W)`` ``uint8`` arrays or tensors, 1 on the object, 0 elsewhere.
* Score maps (CAMs and friends) are ``(N, H, W)`` float arrays; normalised ones lie in ``[0, 1]``.
* Models return ``(logits, features)`` where ``features`` is a dict of named feature maps; no
  forward hooks are needed anywhere.
"""

__version__ = "0.1.0"

import os as _os

# Before anything here imports PyTorch: OpenMP threads that wait passively, so that training
# keeps its speed when another process holds a core (see wsolkit.train.threads). It takes effect
# only where wsolkit is imported before torch; tools/book.py sets it for the notebooks' kernels.
_os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
