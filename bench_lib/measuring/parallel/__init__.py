"""Data-parallel cases on torch.distributed: a case on ``world`` worker processes.

* :mod:`.strategies`: the strategies (DDP with its flags, FSDP2, FSDP1 with and without
  ``use_orig_params``), one object each in a registry keyed by the names of
  :data:`bench_lib.vocab.PARALLEL`: how a rank's model is wrapped, which parameters its optimizer
  gets, and which slice of each gradient the rank holds;
* :mod:`.collectives`: the payload bytes a rank passes to gradient collectives, counted from
  the calls themselves (a DDP communication hook; the reduce-scatter and all-reduce calls FSDP
  makes);
* :mod:`.workload`: a rank's workload (the model built from the case, frozen, wrapped);
* :mod:`.check`: the validity check of a rank against a single-process reference on the global
  batch;
* :mod:`.worker`: what a worker process runs: it joins the process group and serves the
  coordinator's commands until told to stop;
* :mod:`.coordinator`: the coordinator's side, :class:`~.coordinator.TorchLauncher`, one of the
  launchers of :mod:`bench_lib.measuring.launcher`: it starts the workers with torch's own
  launcher (``torch.multiprocessing.start_processes``), drives each step of all ranks, and
  leaves no process and no port behind.
"""
