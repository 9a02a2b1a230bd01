"""Study drivers (seventh floor: imports everything below it, never ``advpure.cli``): one module per study,
logic only. Each takes plain arguments, writes its files and returns its results; the command line
(:mod:`advpure.cli`) parses options and prints.

- :mod:`.demo`: ``advpure demo``, the main job on digits;
- :mod:`.eps`: ``advpure eps reference`` / ``observe``, EPS statistics and the observation behind SSNI;
- :mod:`.eps_ad`: ``advpure eps-ad``, EPS-AD detection against several attacks;
- :mod:`.dad_attacks`: ``advpure dad-attacks``, DAD under detector-aware adaptive attacks (and mixed batches);
- :mod:`.discrepancy`: ``advpure discrepancy``, MMD histograms of clean, adversarial and generated data;
- :mod:`.cmap_ablation`: ``advpure cmap-ablation``, CMAP's ablations and attacks;
- :mod:`.curves`: ``advpure curves``, accuracy against t* and against the budget;
- :mod:`.figures`: the figures these drivers draw.

Submodules are imported on use to keep ``import advpure`` light.
"""
