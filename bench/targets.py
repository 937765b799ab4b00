"""Every speed target the benchmarks are read against, in one place, by the name a results file's
`targets` and `met` give it. The paper's comparisons have their targets (the 95% half-widths they
should reach) in each protocol file (bench/protocols/)."""
from __future__ import annotations

# Training throughput (bench/throughput.py; ratios.py computes the ratios): the two-column net's
# step at most 5% slower than the same net as grouped convolutions on one device, at least as
# many images a second as torchvision's AlexNet, a bf16 step at most 0.75 of the fp32 one; the
# same with the steps captured as CUDA graphs. Upper bounds for step-time ratios, lower for rates.
THROUGHPUT = {"twocol_over_grouped": 1.05, "twocol_over_torchvision_images_per_s": 1.0, "bf16_over_fp32_step": 0.75,
              "twocol_over_grouped_graphed": 1.05, "twocol_over_torchvision_images_per_s_graphed": 1.0}
THROUGHPUT_UPPER = ("twocol_over_grouped", "bf16_over_fp32_step", "twocol_over_grouped_graphed")
# The fused ReLU+LRN kernels (bench/kernels.py): on the CPU, forward+backward at conv1, N = 128,
# float32, at least 10x torch; on a GPU, over the rows past the L2 with no host-bound call, each
# pass at least 5x torch and each kernel at least 80% of the copy's bandwidth.
KERNELS_CPU = {"forward_backward_speedup_at_least_10x": 10.0}
KERNELS_GPU = {"every_pass_at_least_5x_torch": 5.0, "kernels_at_least_80pct_of_copy_bandwidth_past_l2": 0.8}
# The data loaders on the CPU (bench/data.py): DALI at least 1.5x the torch + Pillow loader.
DATA_CPU = {"dali_over_torch": 1.5}
# End to end from JPEG files on a GPU (bench/e2e.py): DALI's GPU decode at least 90% of the rate
# of synthetic tensors already on the device (one GPU with both columns on it).
E2E_GPU = {"dali_gpu_over_synthetic": 0.90}
