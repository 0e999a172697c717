"""The machine as the pytest process sees it: GPUs (NVML), CPUs, the system fingerprint, where each case runs, and
the per-GPU locks shared by every process of a host."""
