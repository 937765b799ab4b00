"""The data path, one module per job:

  layout.py        the on-disk layout of a dataset, and open_dataset that checks one
  build.py         writes a dataset in that layout, in parallel and resumably
  prepare.py       an ImageNet-style tree -> a dataset (twocol prepare)
  decode.py        a source image (a file, an archive member's bytes) -> the stored square
  ilsvrc.py        the ILSVRC archives as downloaded -> a dataset (twocol prepare), streamed
  tarstream.py     a tar archive read in one pass, nested tars in place, with its MD5
  devkit.py        the ILSVRC devkit: classes (meta.mat's leaf synsets) and ground truth
  synth.py         the built-in synthetic dataset (twocol synth)
  lighting.py      the PCA of the training pixels and the paper's lighting shift
  plan.py          what an epoch delivers: order and every augmentation parameter
  base.py          the loader interface; torch_loader.py and dali_loader.py implement it
  loader.py        make_loader: picks DALI or the torch fallback
  feed.py          each column's device fed by the pipeline itself (uint8 crops, bytes counted)
  normalise.py     the one normalisation, on each column's device: mean image, lighting, scale
  bad.py           bad images after prepare: found, skipped, recorded, a run stopped
"""
