"""Planning and running a build: the DAG and its keys, the executor, runners, cache, remote cache, cluster."""
