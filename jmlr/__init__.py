"""JMLR: perspective 3D face reconstruction (Guo et al., ECCV 2022 WCPA challenge winner).

Subpackages, in the order data flows through them:

- :mod:`jmlr.geometry`  cameras, conventions, the JMLR crop, PnP, rotations, metrics
- :mod:`jmlr.facemodel` the ICT-FaceKit morphable head and the ARKit-like face topology
- :mod:`jmlr.synth`     sampler, renderer and the challenge-layout writer/reader
- :mod:`jmlr.data`      datasets, alignment and augmentation for training
- :mod:`jmlr.models`    ResNet-D backbones, the JMLR network, baselines, registry
- :mod:`jmlr.train`     loss and training loop
- :mod:`jmlr.eval`      challenge evaluation
- :mod:`jmlr.store`     model store artifacts (manifest + safetensors + topology)
"""

__version__ = "0.1.0"
