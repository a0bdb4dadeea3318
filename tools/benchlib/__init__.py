"""The parts of tools/bench.py (the entry point, `make bench`), one concern per module:

- common: constants (the repository, buckets, prefixes, the sides' addresses), the children's
  environments, process and CPU helpers, the binaries found
- servers: the S3 server of each side (SeaweedFS or moto) and their ports
- links: the htb shaping of the namespace's loopback and its byte counters
- scenarios: the datasets, seeding the source, listing and emptying buckets
- contenders: the tools measured (the suite, s5cmd, aws s3 sync, rclone)
- runner: class Bench, the measurement (servers, calibration, timed runs, rescan, idle)
- small: the small scenario's tmpfs volumes, peak RSS per process, ENOSPC lines, full listings
- scale: tools/scale_bench.py at 1M and 10M objects, and its targets
- report: medians, targets, machine information and the printed report

Imports run one way: common <- servers, links, scenarios <- contenders <- runner, report (contenders
names runner's Bench in its annotations only, under TYPE_CHECKING)."""
