"""What ncu_step.py and kernel_gaps.py share: a kernel's family name, and where the last denoising step lies in a
sequence of kernel launches."""
import re


def family(name, width=60):
    """a kernel's family: its name without arguments, template values or the library's tile suffixes"""
    n = re.sub(r"^void ", "", name).split("(")[0]
    n = re.sub(r"<.*", "", n)
    n = re.sub(r"^(nvjet_\w+?)_\d+x\d+.*", r"\1", n)
    return n[:width]


def last_step(names):
    """(p, tail): the last step is names[-tail - p:-tail or None]. For the fewest trailing launches after the last step
    (the benchmark's own comparison), the shortest p of at least 100 with names[-p:] == names[-2p:-p]. A step's blocks
    repeat within it, but its embedders and final layer do not, so no shorter run matches; and any number of whole
    steps does, hence the shortest. (0, 0): none found."""
    for t in range(0, 40):
        end = len(names) - t
        p = next((q for q in range(100, end // 2 + 1) if names[end - q:end] == names[end - 2 * q:end - q]), 0)
        if p:
            return p, t
    return 0, 0
