"""Services that keep the queue's tables in shape, each on the periodic-service base
(daemon/periodic.py): the lease rescuer, the pruner, the vacuumer, the queue-depth sampler and the
cron scheduler."""
